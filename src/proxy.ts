// The request entry point: correlation, routing and the access log/metrics wrap the
// per-upstream stack (pipeline/stack.ts). Built once per policy; a reload builds a new one and
// swaps it atomically, while requests already inside finish on the one they started with.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { proxyError, type ProxyError } from './errors.js';
import { isIP } from 'node:net';
import { RESPONSE_CLASSES, responseClass, sanitisedHost, type Metrics, type OpenProxyKind, type ResponseClass } from './metrics.js';
import { accessLog } from './access-log.js';
import type { Policy } from './policy/schema.js';
import { clientGone, newExchange, type Exchange, type Reply } from './pipeline/exchange.js';
import type { UpstreamRuntime } from './pipeline/upstream.js';
import { buildUpstream, type StackDeps } from './pipeline/stack.js';
import { requestId } from './stages/correlation.js';
import { sendBuffered, sendError } from './http/respond.js';
import { oneByte, requestProblem } from './http/headers.js';
import { classifyUpstreamError, CodeBound } from './upstream-errors.js';
import { tracing } from './tracing.js';

export interface Proxy {
  readonly policy: Policy;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Reads live state into gauges just before a scrape, instead of on every request. */
  collect(): void;
}

interface HostMatch {
  upstream: UpstreamRuntime;
  /** Lower-cased, without the port. */
  host: string;
  origin: string;
}

interface HostRule {
  suffix: string | undefined;
  exact: string | undefined;
  upstream: UpstreamRuntime;
}

const TRAVERSAL = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)|%2f|%5c|\\/i;

/** Methods whose repetition creates nothing (RFC 9110 §9.2.2, PUT and DELETE included). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** A request target that names a server (`http://victim/…`): what a forward proxy is sent. */
const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/;

/**
 * Whether an unrouted request's Host names another server rather than this listener: a port other
 * than ours, or a dotted DNS name (an IP literal, `localhost` or a compose service name is how an
 * app reaches a sidecar, and its unrouted request is a mistake, not a probe).
 */
export function foreignHost(host: string, ownPort: number): boolean {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
  if (m === null) return true;
  const port = m[2];
  if (port !== undefined && ownPort > 0 && Number(port) !== ownPort) return true;
  const name = m[1]!;
  return name.includes('.') && isIP(name) === 0;
}

export function buildProxy(policy: Policy, deps: StackDeps): Proxy {
  const { metrics, log } = deps;
  const upstreams = new Map<string, UpstreamRuntime>();
  const byPrefix = new Map<string, UpstreamRuntime>();
  const hostRules: HostRule[] = [];
  for (const [name, u] of Object.entries(policy.upstreams)) {
    const rt = buildUpstream(name, u, policy, deps);
    upstreams.set(name, rt);
    if (u.prefix) byPrefix.set(u.prefix.slice(1), rt);
    for (const h of u.hosts) {
      hostRules.push(h.startsWith('*.') ? { suffix: h.slice(1), exact: undefined, upstream: rt } : { suffix: undefined, exact: h, upstream: rt });
    }
  }
  const accessLogOn = policy.logging.accessLog;
  // Upstream and route names as one-byte strings (see oneByte): every access line has them.
  const upstreamNames = new Map<string, string>();
  const routeNames = new Map<string, string>();
  for (const [name, u] of Object.entries(policy.upstreams)) {
    upstreamNames.set(name, oneByte(name));
    for (const r of u.routes) routeNames.set(r.name, oneByte(r.name));
  }
  const access = accessLog(log);
  const inFlight = inFlightCounts(metrics);
  const inFlightFor = (name: string) => {
    let c = inFlight.get(name);
    if (!c) inFlight.set(name, (c = { n: 0 }));
    return c;
  };
  // Metric children are resolved once per label tuple (prom-client's labels() hashes on every
  // call), through nested maps keyed by the strings the request already holds, so no key string
  // is built per request.
  const series = new Map<string, Map<string, Map<string, RouteSeries>>>();
  const seriesFor = (upstream: string, route: string, method: string): RouteSeries => {
    let byRoute = series.get(upstream);
    if (!byRoute) series.set(upstream, (byRoute = new Map()));
    let byMethod = byRoute.get(route);
    if (!byMethod) byRoute.set(route, (byMethod = new Map()));
    let s = byMethod.get(method);
    if (!s) {
      s = {
        labels: [upstream, route, method],
        duration: metrics.requestDuration.labels(upstream, route, method, 'upstream'),
        localDuration: metrics.requestDuration.labels(upstream, route, method, 'local'),
        upstream: metrics.upstreamDuration.labels(upstream, route, method),
        outcomes: new Map(),
      };
      byMethod.set(method, s);
    }
    return s;
  };
  const outcomeSeries = (s: RouteSeries, status: number, outcome: string): OutcomeSeries => {
    let byOutcome = s.outcomes.get(status);
    if (!byOutcome) s.outcomes.set(status, (byOutcome = new Map()));
    let o = byOutcome.get(outcome);
    if (!o) {
      const [upstream, route, method] = s.labels;
      o = { requests: metrics.requests.labels(upstream, route, method, String(status), outcome), response: responseSeries(upstream, responseClass(status)), line: access.segment(upstream, route, method, status, outcome) };
      byOutcome.set(outcome, o);
    }
    return o;
  };
  const overheadTimers = new Map<string, Observer>();
  const errorCodes = new CodeBound();
  const responseSeries = (upstream: string, c: ResponseClass): Counter => metrics.responses.labels(upstream, c);
  // "none" (unrouted requests) is seeded here; each upstream's classes in seedUpstreamSeries.
  for (const c of RESPONSE_CLASSES) responseSeries('none', c);

  // Nearly every request from one app carries the same Host: the last answer is remembered.
  let lastHostHeader: string | undefined;
  let lastHostRule: HostMatch | undefined;

  /** The allow-listed rule a Host header matches, if any. */
  function hostRule(hostHeader: string): HostMatch | undefined {
    const host = hostHeader.toLowerCase().replace(/:\d+$/, '');
    let found: HostMatch | undefined;
    for (const r of hostRules) {
      if (r.exact === host || (r.suffix !== undefined && host.endsWith(r.suffix) && /^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(host))) {
        found = { upstream: r.upstream, host, origin: r.upstream.policy.hostTarget ?? `https://${host}` };
        break;
      }
    }
    lastHostHeader = hostHeader;
    lastHostRule = found;
    return found;
  }

  /** Counts a forward-proxy attempt and keeps its (sanitised) destination for the access line. */
  function probe(ex: Exchange, kind: OpenProxyKind, host: string): void {
    metrics.openProxyRefusals.labels(kind).inc();
    ex.probeHost = sanitisedHost(host);
  }

  /** Chooses the upstream (or refuses the request): the only writer of ex.upstream, host, origin, paths and probeHost. */
  function route(ex: Exchange): ProxyError | UpstreamRuntime {
    const url = ex.req.url!;
    const problem = requestProblem(ex.req, policy.server.maxHeaders);
    if (problem !== undefined) return problem;
    if (url.charCodeAt(0) !== 47 /* '/' */) {
      const absolute = ABSOLUTE_FORM.exec(url);
      if (absolute !== null) probe(ex, 'absolute_form', absolute[1]!);
      return proxyError('bad_request', { message: 'Only origin-form request targets are accepted (no absolute-form, no proxying).' });
    }
    // Every dot-segment or encoded slash needs a "/.", a "%" or a "\\": most paths have none.
    const path = ex.path;
    if ((path.includes('/.') || path.includes('%') || path.includes('\\')) && TRAVERSAL.test(path)) return proxyError('bad_request', { message: 'Dot-segments and encoded slashes are not accepted in paths.' });
    // Rewrite headers some servers honour (IIS, Symfony) would let a client pick another path
    // behind us: refuse rather than strip, so a probing client learns nothing passes.
    const h = ex.req.headers;
    if (h['x-original-url'] !== undefined || h['x-rewrite-url'] !== undefined) return proxyError('bad_request', { message: 'Routing headers (X-Original-URL, X-Rewrite-URL) are not accepted.' });
    const hostHeader = ex.req.headers.host;
    // RFC 9112 §3.2: more than one Host line is a 400. Node keeps the first; a server behind us
    // might believe another, so neither is trusted for routing.
    if (hostHeader !== undefined && hostLines(ex.req.rawHeaders) > 1) return proxyError('bad_request', { message: 'More than one Host header.' });
    const slash = ex.path.indexOf('/', 1);
    const first = slash < 0 ? ex.path.slice(1) : ex.path.slice(1, slash);
    const prefixed = byPrefix.get(first);
    // A /prefix path always goes to the base URL, whatever its Host says: an SDK's httpClient
    // rewrite keeps `Host: api.twilio.com`, which must not dial the real host past a mock base URL.
    if (prefixed === undefined && hostHeader !== undefined && hostRules.length > 0) {
      const rule = hostHeader === lastHostHeader ? lastHostRule : hostRule(hostHeader);
      if (rule !== undefined) {
        const u = rule.upstream;
        ex.upstream = u;
        ex.host = rule.host;
        ex.origin = rule.origin;
        ex.routePath = ex.path;
        ex.upstreamPath = ex.path + ex.query;
        return u;
      }
    }
    const u = prefixed;
    if (u === undefined) {
      if (hostHeader !== undefined && foreignHost(hostHeader, ex.req.socket.localPort ?? 0)) probe(ex, 'foreign_host', hostHeader);
      return proxyError('no_route');
    }
    const rest = slash < 0 ? '/' : ex.path.slice(slash);
    ex.upstream = u;
    ex.host = u.host;
    ex.origin = u.origin;
    ex.routePath = rest;
    ex.upstreamPath = u.basePath + rest + ex.query;
    return u;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const ex = newExchange(req, res, performance.now(), requestId(req.headers['x-request-id']), req.method ?? 'GET', q < 0 ? url : url.slice(0, q), q < 0 ? '' : url.slice(q));
    let reply: Reply;
    const tr = tracing;
    tr?.startServer(ex);
    const routed = route(ex);
    const upstreamName = ex.upstream ? upstreamNames.get(ex.upstream.name) ?? ex.upstream.name : 'none';
    const inFlightNow = inFlightFor(upstreamName);
    inFlightNow.n++;
    try {
      if ('code' in routed) reply = routed;
      else {
        const m = ex.upstream!.routes.match(ex.method, ex.routePath);
        if (m) ex.route = routeNames.get(m.value) ?? m.value;
        else ex.route = 'other';
        reply = await routed.pipeline(ex);
      }
    } catch (err) {
      // A bug must cost one request, never the process.
      log.error({ reqId: ex.requestId, upstream: upstreamName, err }, 'unhandled error in pipeline');
      reply = proxyError('internal_error');
    }
    inFlightNow.n--;
    const { status, outcome } = settle(ex, reply);
    const seconds = (performance.now() - ex.start) / 1000;
    if (ex.errorHead !== undefined) {
      // Only non-2xx bodies of at most 2 KiB get here: the success path pays one check.
      const code = classifyUpstreamError(ex.errorHead);
      if (code !== undefined) {
        ex.upstreamErrorCode = code;
        metrics.upstreamErrors.labels(upstreamName, errorCodes.bound(upstreamName, code)).inc();
      }
    }
    const s = seriesFor(upstreamName, ex.route, ex.method);
    const o = outcomeSeries(s, status, outcome);
    o.requests.inc();
    o.response.inc();
    if (ex.upstreamSeconds > 0 && ex.upstream) {
      s.duration.observe(seconds);
      s.upstream.observe(ex.upstreamSeconds);
      let ot = overheadTimers.get(upstreamName);
      if (!ot) overheadTimers.set(upstreamName, (ot = metrics.overhead.labels(upstreamName)));
      ot.observe(Math.max(0, seconds - ex.upstreamSeconds));
    } else s.localDuration.observe(seconds);
    if (accessLogOn && log.isLevelEnabled('info')) access.write(ex, o.line, seconds);
    deps.onSettled?.(ex, upstreamName, status, outcome, seconds);
    tr?.endServer(ex, status, outcome);
  }

  /** Whether the idempotency stage took this request in (it then words an ambiguous answer itself). */
  function keyed(ex: Exchange): boolean {
    const idem = ex.upstream === undefined ? undefined : upstreams.get(ex.upstream.name)?.policy.idempotency;
    return idem !== undefined && idem.enabled && (idem.methods as readonly string[]).includes(ex.method) && ex.req.headers[idem.header.toLowerCase()] !== undefined;
  }

  /** Writes whatever the pipeline left unwritten and names the outcome for metrics and logs. */
  function settle(ex: Exchange, reply: Reply): { status: number; outcome: string } {
    if (clientClosed(ex, reply)) {
      // The app hung up before any answer began (its own timeout, a cancelled call): nothing can
      // be sent, and the outcome is the app's, not the upstream's. nginx logs 499 and Envoy a
      // downstream disconnect for this; as a 502 it would charge the upstream's error budget and
      // wake the 5xx alerts for every app-side timeout. What the proxy would have answered stays
      // in the access line's cause.
      ex.cause = reply.kind === 'failed' ? reply.error.detail : reply.kind === 'error' ? (reply.detail ?? reply.code) : `client closed; the upstream answered ${reply.status}`;
      return CLIENT_CLOSED;
    }
    switch (reply.kind) {
      case 'sent':
        // A body the upstream cut (a reset, the exchange deadline) must not pass as forwarded.
        return { status: reply.status, outcome: reply.broken === 'upstream' ? 'truncated' : reply.outcome };
      case 'held':
        sendBuffered(ex, reply.status, reply.headers, reply.body);
        return { status: reply.status, outcome: 'forwarded' };
      case 'failed': {
        ex.cause = reply.error.detail;
        // A create sent without a key that got no complete answer may have happened: the app must
        // not simply send it again. (A keyed one says so from the idempotency stage.)
        const error = reply.mayHaveReachedUpstream && reply.cause !== 'client' && !SAFE_METHODS.has(ex.method) && !keyed(ex)
          ? proxyError(reply.error.code, { headers: reply.error.headers, detail: reply.error.detail, message: `${reply.error.message} The request was sent and may have taken effect: send it again only with an Idempotency-Key, the same one each time, which makes the retry safe; without one it may be created twice.` })
          : reply.error;
        sendError(ex, error);
        return { status: error.status, outcome: error.code };
      }
      default:
        if (reply.detail) ex.cause = reply.detail;
        sendError(ex, reply);
        if (reply.status === 413) lingerAndClose(ex);
        return { status: reply.status, outcome: reply.code };
    }
  }

  function collect(): void {
    for (const [name, c] of inFlight) metrics.inFlight.labels(name).set(c.n);
    for (const [name, u] of upstreams) {
      metrics.breakerState.labels({ service: name }).set({ closed: 0, half_open: 1, open: 2 }[u.breaker.stateName]);
      metrics.bulkheadActive.labels(name).set(u.semaphore.active);
      metrics.bulkheadQueued.labels(name).set(u.semaphore.queued);
      metrics.holdsActive.labels(name).set(u.holds.active(deps.clock()));
      const stats = (u.dispatcher as unknown as { stats?: Record<string, Record<string, number>> }).stats;
      const totals = { connected: 0, free: 0, pending: 0, running: 0, queued: 0 };
      if (stats) {
        for (const s of Object.values(stats)) for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += s[k] ?? 0;
      }
      for (const [k, v] of Object.entries(totals)) metrics.poolConnections.labels(name, k).set(v);
    }
    metrics.idempotencyEntries.set(deps.idempotency.size());
    for (const u of upstreams.values()) u.collect();
  }

  return { policy, upstreams, handle, collect };
}

/** Status and outcome of a request whose client left before its answer began (nginx's 499). */
const CLIENT_CLOSED = { status: 499, outcome: 'client_closed' } as const;

function clientClosed(ex: Exchange, reply: Reply): boolean {
  if (reply.kind === 'failed' && reply.cause === 'client') return true;
  if (reply.kind === 'sent') return reply.unread === true && !ex.res.headersSent;
  return !ex.res.headersSent && clientGone(ex);
}

interface Counter {
  inc(): void;
}
interface Observer {
  observe(v: number): void;
}
/** The children of one (upstream, route, method): duration timers and requests by status and outcome. */
interface RouteSeries {
  readonly labels: readonly [string, string, string];
  /** Requests with at least one attempt sent; localDuration: answered by Breakwater alone. */
  readonly duration: Observer;
  readonly localDuration: Observer;
  readonly upstream: Observer;
  readonly outcomes: Map<number, Map<string, OutcomeSeries>>;
}
/** One (status, outcome) of a RouteSeries: its request counter and its access lines' fixed middle. */
interface OutcomeSeries {
  readonly requests: Counter;
  readonly response: Counter;
  readonly line: Buffer;
}

/**
 * Requests in flight per upstream, counted in plain numbers and published by collect() just
 * before a scrape: a gauge child's inc()/dec() hashes its labels on every call. The counts belong
 * to the server's metrics, not to one proxy, so requests still finishing on a proxy that a
 * reload replaced are counted too.
 */
const inFlightByMetrics = new WeakMap<Metrics, Map<string, { n: number }>>();
function inFlightCounts(metrics: Metrics): Map<string, { n: number }> {
  let m = inFlightByMetrics.get(metrics);
  if (!m) inFlightByMetrics.set(metrics, (m = new Map()));
  return m;
}

function hostLines(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') n++;
  return n;
}

/**
 * After a 413 the client may still be sending: keep reading and discarding for a bounded time
 * before closing (nginx's lingering close), so it reads our answer instead of an EPIPE.
 */
function lingerAndClose(ex: Exchange): void {
  const req = ex.req;
  const socket = req.socket;
  if (req.complete) return;
  // Node ends a `Connection: close` answer with socket.destroySoon(): a full close as soon as
  // the answer is flushed. Bytes the client is still sending then meet a closed socket, the
  // kernel answers with a RST, and the client gets EPIPE/ECONNRESET, often before it has read
  // the 413. Half-close instead: FIN after the answer, then keep reading (and discarding) until
  // the client stops, or 64 MiB, or 5 s.
  socket.destroySoon = function lingeringClose() {
    socket.end();
  };
  const limit = 64 * 1024 * 1024;
  const from = socket.bytesRead;
  const deadline = Date.now() + 5000;
  // Counted on the socket: once the answer is done, Node drops the request's 'data' listeners.
  const timer = setInterval(() => {
    if (Date.now() >= deadline || socket.bytesRead - from > limit) socket.destroy();
  }, 100);
  timer.unref();
  socket.once('close', () => clearInterval(timer));
  req.on('error', () => {});
  // A chunked body read through an async iterator left a 'readable' listener behind, which
  // keeps the stream paused whatever resume() says.
  req.removeAllListeners('readable');
  req.resume();
}
