// Routing: which upstream a request goes to, or why it is refused. A /prefix path goes to that
// upstream's base URL; otherwise an allow-listed Host (an SDK pointed at the sidecar by host)
// picks the upstream and the destination. Anything that looks like use as a forward proxy is
// refused and counted (absolute-form targets, foreign Host headers).
import { proxyError, type ProxyError } from '../errors.js';
import { isIP } from 'node:net';
import type { Policy } from '../policy/schema.js';
import type { Exchange } from './exchange.js';
import type { UpstreamRuntime } from './upstream.js';
import { requestProblem } from '../http/headers.js';
import type { OpenProxyKind } from '../metrics.js';

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

/**
 * The router of one policy build. `onProbe` is told of each forward-proxy attempt, with the
 * host it named, for the metric and the access line.
 */
export function createRouter(
  upstreams: ReadonlyMap<string, UpstreamRuntime>,
  policy: Policy,
  onProbe: (ex: Exchange, kind: OpenProxyKind, host: string) => void,
): (ex: Exchange) => ProxyError | UpstreamRuntime {
  const byPrefix = new Map<string, UpstreamRuntime>();
  const hostRules: HostRule[] = [];
  for (const [name, rt] of upstreams) {
    const u = policy.upstreams[name]!;
    if (u.prefix) byPrefix.set(u.prefix.slice(1), rt);
    for (const h of u.hosts) {
      hostRules.push(h.startsWith('*.') ? { suffix: h.slice(1), exact: undefined, upstream: rt } : { suffix: undefined, exact: h, upstream: rt });
    }
  }
  const probe = onProbe;

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
    if ((path.includes('/.') || path.includes('%') || path.includes('\\')) && TRAVERSAL.test(path))
      return proxyError('bad_request', { message: 'Dot-segments and encoded slashes are not accepted in paths.' });
    // Rewrite headers some servers honour (IIS, Symfony) would let a client pick another path
    // behind us: refuse rather than strip, so a probing client learns nothing passes.
    const h = ex.req.headers;
    if (h['x-original-url'] !== undefined || h['x-rewrite-url'] !== undefined)
      return proxyError('bad_request', { message: 'Routing headers (X-Original-URL, X-Rewrite-URL) are not accepted.' });
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
        ex.upstream = u.ref;
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
    ex.upstream = u.ref;
    ex.host = u.host;
    ex.origin = u.origin;
    ex.routePath = rest;
    ex.upstreamPath = u.basePath + rest + ex.query;
    return u;
  }

  return route;
}

function hostLines(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') n++;
  return n;
}
