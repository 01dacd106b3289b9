// The whole per-upstream stack, written once, in order, with the reason each stage sits where it
// does (linkerd's route stack). Routing, correlation and the access log wrap it in proxy.ts.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { proxyError, type ProxyError } from '../errors.js';
import { tracing } from '../tracing.js';
import { requestId } from '../stages/correlation.js';
import { CLIENT_CLOSED, writeReply, type Outcome } from '../http/respond.js';
import type { RequestSeries } from './series.js';
import type { Policy, UpstreamPolicy } from '../policy/schema.js';
import { dropBreakerSeries, seedBreakerSeries, seedUpstreamSeries, type Metrics } from '../metrics.js';
import type { Log } from '../log.js';
import { BreakerScopes, CircuitBreaker, type BreakerStateName } from '../resilience/circuit-breaker.js';
import { Semaphore } from '../resilience/semaphore.js';
import { RetryBudget } from '../resilience/retry-budget.js';
import type { Clock } from '../resilience/clock.js';
import type { LimiterStore } from '../store/store.js';
import type { IdempotencyStore } from '../store/idempotency-store.js';
import { clientIdentity, trustedProxies } from '../stages/client-identity.js';
import { credentials } from '../stages/credentials.js';
import { requestBody } from '../stages/request-body.js';
import { rateLimit } from '../stages/rate-limit.js';
import { hold } from '../stages/hold.js';
import { HoldTable } from '../resilience/hold-table.js';
import { idempotency } from '../stages/idempotency.js';
import { retry } from '../stages/retry.js';
import { breaker, breakerOptions } from '../stages/breaker.js';
import { bulkhead } from '../stages/bulkhead.js';
import { fleetBulkhead } from '../stages/fleet-bulkhead.js';
import type { FleetSemaphore } from '../store/redis-semaphore.js';
import { forward } from '../stages/forward.js';
import { stub } from '../stages/stub.js';
import { cache } from '../stages/cache.js';
import { MemoryCacheStore, type CacheStore } from '../cache/memory-store.js';
import { Coalescer } from '../cache/coalesce.js';
import { bodyKeyGuard, isPhoneKey, maskKey, maskPhone } from './keys.js';
import { compose } from './compose.js';
import { clientGone, newExchange, type Exchange, type Reply, type Stage } from './exchange.js';
import { createDispatcher, routeTable, splitBaseUrl, type UpstreamRuntime } from './upstream.js';

export interface StackDeps {
  metrics: Metrics;
  log: Log;
  clock: Clock;
  store: LimiterStore;
  memory: LimiterStore;
  idempotency: IdempotencyStore;
  state: SharedState;
  /** Called once per request after it is answered (the status page's rolling stats). */
  onSettled?: (ex: Exchange, upstream: string, status: number, outcome: string, seconds: number) => void;
  /** With the Redis store: makes a fleet-wide semaphore (bulkhead.fleet). */
  fleetSemaphore?: (cap: number, leaseMs: number, maxQueue: number, prefix: string) => FleetSemaphore;
  /** With the Redis store: the fleet's cache store for one upstream, in front of its memory store. */
  cacheStore?: (upstream: string, local: MemoryCacheStore, maxBodyBytes: number) => CacheStore & { readonly secret: Buffer };
}

/**
 * Resilience state that outlives a reload. Each entry is keyed by the settings it was built
 * from: an upstream whose settings did not change gets its old breaker, budget, bulkhead,
 * holds and pool back; a changed one starts fresh.
 */
export class SharedState {
  private readonly items = new Map<string, { key: string; value: unknown }>();
  private used = new Set<string>();

  get<T>(slot: string, settings: unknown, make: () => T): T {
    const key = JSON.stringify(settings);
    this.used.add(slot);
    const hit = this.items.get(slot);
    if (hit && hit.key === key) return hit.value as T;
    const value = make();
    this.items.set(slot, { key, value });
    return value;
  }

  /** Ends a build: returns state that the new policy no longer uses (old pools to close). */
  sweep(): unknown[] {
    const gone: unknown[] = [];
    for (const [slot, v] of this.items) {
      if (!this.used.has(slot)) {
        gone.push(v.value);
        this.items.delete(slot);
      }
    }
    this.used = new Set();
    return gone;
  }
}

const BREAKER_STATE = { closed: 0, half_open: 1, open: 2 } as const;

/** Destinations per upstream with a breaker of their own; the rest share one. */
const MAX_BREAKER_SCOPES = 64;

/** Accumulates seconds spent open: on leaving open, and at each scrape while still open. */
function openTimer(clock: Clock, counter: { inc(n: number): void }) {
  let since: number | undefined;
  const settle = (now: number) => {
    if (since !== undefined) counter.inc((now - since) / 1000);
  };
  return {
    transition(from: string, to: string) {
      const now = clock();
      if (from === 'open') settle(now);
      since = to === 'open' ? now : undefined;
    },
    flush(open: boolean) {
      if (!open || since === undefined) return;
      const now = clock();
      settle(now);
      since = now;
    },
  };
}

/** A destination breaker's metric children and its open timer. */
interface DestinationSeries {
  readonly failures: { inc(): void };
  readonly rejections: { inc(): void };
  transition(from: BreakerStateName, to: BreakerStateName): void;
  /** At scrape time: the state as it is now (open turns half-open without a call) and time open so far. */
  refresh(state: BreakerStateName): void;
}

function destinationBreakerSeries(metrics: Metrics, clock: Clock, service: string, destination: string): DestinationSeries {
  const labels = { service, destination };
  seedBreakerSeries(metrics, labels);
  const state = metrics.breakerState.labels(labels);
  const openTime = openTimer(clock, metrics.breakerOpenSeconds.labels(labels));
  return {
    failures: metrics.breakerFailures.labels(labels),
    rejections: metrics.breakerRejections.labels(labels),
    transition(from, to) {
      openTime.transition(from, to);
      state.set(BREAKER_STATE[to]);
      metrics.breakerTransitions.labels({ ...labels, from, to }).inc();
      if (to === 'open') metrics.breakerOpens.labels(labels).inc();
      if (to === 'closed') metrics.breakerCloses.labels(labels).inc();
    },
    refresh(now) {
      state.set(BREAKER_STATE[now]);
      openTime.flush(now === 'open');
    },
  };
}

/** What the front of the request path is built from (proxy.ts builds it once per policy). */
export interface FrontParts {
  log: Log;
  route(ex: Exchange): ProxyError | UpstreamRuntime;
  series: RequestSeries;
  /** Upstream and route names as one-byte strings (see oneByte): every access line has them. */
  upstreamNames: ReadonlyMap<string, string>;
  routeNames: ReadonlyMap<string, string>;
  /** Whether the idempotency stage took this request in (it then words an ambiguous answer itself). */
  keyed(ex: Exchange): boolean;
  onSettled?: StackDeps['onSettled'];
}

/** Methods whose repetition creates nothing (RFC 9110 §9.2.2, PUT and DELETE included). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * The request path, outermost first. Its first positions are here and the rest is
 * `buildUpstream`'s stage list below: this file is the one place the order is written (ADR 0001).
 */
export function requestPath(p: FrontParts): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { log, series, upstreamNames, routeNames } = p;
  return async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // 1. Correlation: the request id (the app's, when valid) and the SERVER span come first, so
    //    everything below, a refusal included, can name the request.
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const ex = newExchange(
      req,
      res,
      performance.now(),
      requestId(req.headers['x-request-id']),
      req.method ?? 'GET',
      q < 0 ? url : url.slice(0, q),
      q < 0 ? '' : url.slice(q),
    );
    const tr = tracing;
    tr?.startServer(ex);
    // 2. Routing: the upstream and route (every label) are known before anything is counted; a
    //    refusal is a reply like any other and goes through the positions below.
    const routed = p.route(ex);
    const upstreamName = ex.upstream ? (upstreamNames.get(ex.upstream.name) ?? ex.upstream.name) : 'none';
    // 3. Access log and metrics: around everything that follows, so every outcome is seen once.
    const inFlightNow = series.inFlightFor(upstreamName);
    inFlightNow.n++;
    let reply: Reply;
    try {
      if ('code' in routed) reply = routed;
      else {
        const m = ex.upstream!.routes.match(ex.method, ex.routePath);
        ex.route = m ? (routeNames.get(m.value) ?? m.value) : 'other';
        // 4. The upstream's stack (buildUpstream) produces the reply as a value.
        reply = await routed.pipeline(ex);
      }
    } catch (err) {
      // A bug must cost one request, never the process, and is never billed to the upstream.
      log.error({ reqId: ex.requestId, upstream: upstreamName, err }, 'unhandled error in pipeline');
      reply = proxyError('internal_error');
    }
    // 5. The one writer sends it; the request counts as in flight until its body is over.
    let outcome: Outcome;
    try {
      outcome = await settle(ex, reply);
    } catch (err) {
      log.error({ reqId: ex.requestId, upstream: upstreamName, err }, 'unhandled error writing the reply');
      if (reply.kind === 'answer') reply.body.discard();
      ex.res.destroy();
      outcome = { status: 500, outcome: 'internal_error' };
    }
    inFlightNow.n--;
    const seconds = (performance.now() - ex.start) / 1000;
    series.record(ex, upstreamName, outcome.status, outcome.outcome, seconds);
    p.onSettled?.(ex, upstreamName, outcome.status, outcome.outcome, seconds);
    tr?.endServer(ex, outcome.status, outcome.outcome);
  };

  /** Turns a transport failure into its error, then has the one writer send the reply. */
  function settle(ex: Exchange, reply: Reply): Outcome | Promise<Outcome> {
    if (reply.kind !== 'failed') return writeReply(ex, reply);
    ex.cause = reply.error.detail;
    // The app hung up before any answer began: see writeReply.
    if (reply.cause === 'client' || (!ex.res.headersSent && clientGone(ex))) return CLIENT_CLOSED;
    // A create sent without a key that got no complete answer may have happened: the app must
    // not simply send it again. (A keyed one says so from the idempotency stage.)
    const error =
      reply.mayHaveReachedUpstream && !SAFE_METHODS.has(ex.method) && !p.keyed(ex)
        ? proxyError(reply.error.code, {
            headers: reply.error.headers,
            detail: reply.error.detail,
            message: `${reply.error.message} The request was sent and may have taken effect: send it again only with an Idempotency-Key, the same one each time, which makes the retry safe; without one it may be created twice.`,
          })
        : reply.error;
    return writeReply(ex, error);
  }
}

/**
 * The longest an original request can stay in flight on this upstream: a rate-limit wait, the
 * bulkhead queue, every attempt with its back-off, plus a margin. A shared idempotency claim must
 * outlive it, or another replica would forward the duplicate.
 */
function originalLifetimeMs(u: UpstreamPolicy): number {
  const shaping = Math.max(0, ...u.rateLimits.map((l) => l.maxDelay));
  const attempts = u.retry.attempts + 1;
  return shaping + u.bulkhead.queueTimeout + attempts * (u.timeout + u.connectTimeout) + u.retry.attempts * u.retry.backoffMax + 10_000;
}

export function buildUpstream(name: string, u: UpstreamPolicy, policy: Policy, deps: StackDeps): UpstreamRuntime {
  const { metrics, log, clock, state } = deps;
  const stubbed = policy.stubMode || u.stub;
  const b = u.breaker;

  // Exact time open, per upstream, kept across reloads with the breaker it measures.
  const openTime = state.get(`${name}/open-time`, b, () => openTimer(clock, metrics.breakerOpenSeconds.labels({ service: name })));
  const breakerOpts = breakerOptions(b);
  const breakerSm = state.get(`${name}/breaker`, b, () => {
    const cb = new CircuitBreaker(name, breakerOpts, clock, (from, to, cause) => {
      openTime.transition(from, to);
      metrics.breakerState.labels({ service: name }).set(BREAKER_STATE[to]);
      metrics.breakerTransitions.labels({ service: name, from, to }).inc();
      if (to === 'open') metrics.breakerOpens.labels({ service: name }).inc();
      if (to === 'closed') metrics.breakerCloses.labels({ service: name }).inc();
      log.warn({ upstream: name, from, to, cause, enforcing: b.enabled }, `circuit breaker ${from} -> ${to}`);
    });
    // Export every series from the start, so dashboards and alerts see 0 rather than nothing.
    seedUpstreamSeries(metrics, name);
    return cb;
  });
  // Host-routed destinations (Verify, regional hosts) get their own breakers, built on first use
  // and bounded. The SPEC's series without a destination label describe the base; each
  // destination's breaker exports the same series with `destination` (bounded as the breakers
  // are), from zero when it is built. A reload that drops the breakers drops their series too,
  // or a gauge would go on saying "open" for a breaker that no longer exists.
  const destinationSeries = state.get(`${name}/breaker-destination-series`, null, () => new Map<string, DestinationSeries>());
  const seriesOf = state.get(`${name}/breaker-series-of`, null, () => new WeakMap<CircuitBreaker, DestinationSeries>());
  const breakerScopes = state.get(`${name}/breaker-scopes`, [b, u.baseUrl], () => {
    for (const destination of destinationSeries.keys()) dropBreakerSeries(metrics, { service: name, destination });
    destinationSeries.clear();
    return new BreakerScopes(
      breakerSm,
      (scope) => {
        const series = destinationBreakerSeries(metrics, clock, name, scope);
        destinationSeries.set(scope, series);
        const cb = new CircuitBreaker(`${name} ${scope}`, breakerOpts, clock, (from, to, cause) => {
          series.transition(from, to);
          log.warn({ upstream: name, destination: scope, from, to, cause, enforcing: b.enabled }, `circuit breaker ${from} -> ${to}`);
        });
        seriesOf.set(cb, series);
        return cb;
      },
      MAX_BREAKER_SCOPES,
    );
  });
  const semaphore = state.get(`${name}/bulkhead`, u.bulkhead, () => new Semaphore(u.bulkhead.maxConcurrent, u.bulkhead.queue, u.bulkhead.queueTimeout));
  const budget = state.get(`${name}/budget`, u.retry, () => new RetryBudget(u.retry.budgetRatio, u.retry.minRetriesPerSecond, clock));
  const holds = state.get(`${name}/holds`, u.holdOn429.key, () => new HoldTable(policy.clientId.maxClients));
  const dispatcher = state.get(`${name}/pool`, [u.baseUrl, u.hostTarget, u.timeout, u.connectTimeout, u.connections], () => createDispatcher(u));
  const { origin, host, basePath } = splitBaseUrl(u.baseUrl);

  const dropHeaders = new Set([policy.clientId.header.toLowerCase(), ...(u.idempotency.enabled ? [u.idempotency.header.toLowerCase()] : [])]);

  const failures = metrics.breakerFailures.labels({ service: name });
  const rejections = metrics.breakerRejections.labels({ service: name });
  const bulkheadRejections = metrics.bulkheadRejections.labels(name);
  const heldRequests = metrics.heldRequests.labels(name);
  const holdsStarted = metrics.holds.labels(name);
  metrics.bulkheadLimit.labels(name).set(u.bulkhead.maxConcurrent);
  metrics.poolSize.labels(name).set(u.connections);

  const collectors: (() => void)[] = [];
  const stages: (Stage | undefined)[] = [
    // Who is calling: every later key (limits, holds, idempotency scope) is derived from it.
    clientIdentity(policy.clientId.header, trustedProxies(policy.server.trustedProxies)),
    // Credentials before anything keys on Authorization (a Vapi hold is per API key).
    credentials(u.credentials),
    // Small bodies are read whole here: limits keyed on body fields, idempotency hashing and
    // retries all need them. Oversized bodies are refused before any upstream work.
    // A body field a key reads must appear once, or the proxy and the upstream could read different
    // copies: checked here, before idempotency claims a key or anything is forwarded.
    requestBody({
      maxBodyBytes: policy.server.maxBodyBytes,
      bufferBodyBytes: policy.server.bufferBodyBytes,
      guard: bodyKeyGuard([...u.rateLimits, ...(u.holdOn429.enabled ? [{ route: null, key: u.holdOn429.key }] : [])]),
    }),
    // Duplicates are answered before any limit: a replay or a joined wait costs the upstream
    // nothing, so it must not spend the client's tokens (an SDK retrying a create would otherwise
    // be refused 429 instead of getting its answer). An original still passes every stage below.
    u.idempotency.enabled
      ? idempotency(name, u.idempotency, deps.idempotency, {
          counter: (outcome) => metrics.idempotency.labels(name, outcome),
          clock,
          claimMs: originalLifetimeMs(u),
        })
      : undefined,
    // A cached answer, like a replay, costs the upstream nothing: it is served before any limit.
    // It wraps the retry and breaker stages so an open breaker or a failed upstream can be
    // answered with a stale copy (stale-if-error).
    u.cache.routes.length > 0 ? cacheStage(name, u, deps, collectors) : undefined,
    // Local limits before anything upstream-facing: the cheapest refusal, and a refused request
    // never costs upstream quota.
    rateLimit(name, u.rateLimits, {
      store: deps.store,
      memory: deps.memory,
      counter: (limit, outcome) => metrics.rateLimitDecisions.labels(name, limit, outcome),
      log: (fields, msg) => log.info(fields, msg),
      collect: (read) => collectors.push(read),
      keys: (limit) => metrics.rateLimitKeys.labels(name, limit),
    }),
    // After an upstream 429, hold that account locally instead of spending more calls.
    hold(u.holdOn429, holds, {
      clock,
      onHold: (key, ms, reqId) => {
        holdsStarted.inc();
        log.warn(
          { reqId, upstream: name, key: isPhoneKey(u.holdOn429.key) ? maskPhone(key) : maskKey(key), holdMs: Math.round(ms) },
          'upstream 429: holding requests for this key',
        );
      },
      onHeld: () => heldRequests.inc(),
      tryResend: () => budget.tryRetry(),
      onResend: () => metrics.retries.labels(name, 'upstream_429').inc(),
    }),
    // Retries wrap the breaker so each attempt is admitted (and counted) by it.
    retry(u.retry, budget, {
      onRetry: (reason) => metrics.retries.labels(name, reason).inc(),
      onSkipped: (reason) => metrics.retriesSkipped.labels(name, reason).inc(),
    }),
    breaker(
      breakerScopes,
      b,
      {
        onFailure: (cb) => (cb === breakerSm ? failures : seriesOf.get(cb)?.failures)?.inc(),
        onRejected: (cb) => (cb === breakerSm ? rejections : seriesOf.get(cb)?.rejections)?.inc(),
      },
      { origin, host },
    ),
    // The bulkhead holds a slot only while an attempt is really in flight.
    u.bulkhead.fleet && deps.fleetSemaphore
      ? fleetBulkhead(
          state.get(`${name}/fleet-bulkhead`, u.bulkhead, () =>
            deps.fleetSemaphore!(u.bulkhead.maxConcurrent, u.bulkhead.leaseTimeout, u.bulkhead.queue, `bw:sem:${name}:`),
          ),
          name,
          u.bulkhead.queueTimeout,
          () => bulkheadRejections.inc(),
          u.holdOn429.also,
        )
      : bulkhead(semaphore, () => bulkheadRejections.inc()),
  ];

  const terminal = stubbed ? stub(u.stubs) : forward(dispatcher, u.timeout, { sendTimeoutMs: u.sendTimeout, deadlineMs: u.exchangeTimeout, dropHeaders });
  const routes = routeTable(u);
  return {
    name,
    policy: u,
    dispatcher,
    origin,
    host,
    basePath,
    routes,
    ref: { name, routes },
    breaker: breakerSm,
    breakerScopes,
    semaphore,
    budget,
    holds,
    stubbed,
    pipeline: compose(
      stages.filter((s): s is Stage => s !== undefined),
      terminal,
    ),
    collect: () => {
      openTime.flush(breakerSm.stateName === 'open');
      for (const [scope, cb] of breakerScopes.entries()) destinationSeries.get(scope)?.refresh(cb.stateName);
      for (const read of collectors) read();
    },
  };
}

/** The cache stage with its store and coalescer, both kept across reloads while their bounds hold. */
function cacheStage(name: string, u: UpstreamPolicy, deps: StackDeps, collectors: (() => void)[]): Stage | undefined {
  const { metrics, state, log } = deps;
  const c = u.cache;
  const local = state.get(
    `${name}/cache`,
    [c.maxEntries, c.maxBytes, u.baseUrl, u.hostTarget],
    () => new MemoryCacheStore({ maxEntries: c.maxEntries, maxBytes: c.maxBytes, onEvict: (route) => metrics.cacheEvictions.labels(name, route).inc() }),
  );
  // The fleet's store when there is one (the policy validated `redis` against it); the memory store answers while Redis cannot.
  const maxBody = Math.max(...c.routes.map((r) => r.maxEntryBytes));
  const shared =
    c.store !== 'memory' && deps.cacheStore !== undefined
      ? state.get(`${name}/cache-redis`, [c.maxEntries, c.maxBytes, u.baseUrl, u.hostTarget, maxBody], () => deps.cacheStore!(name, local, maxBody))
      : undefined;
  const store: CacheStore = shared ?? local;
  const coalescer = state.get(`${name}/cache-coalescer`, c.maxWaiters, () => new Coalescer(c.maxWaiters));
  // Keys hash the credential with a per-process secret (with the Redis store, the fleet's, kept
  // in Redis and read per request): a key never reveals or confirms a token.
  const own = state.get('cache-secret', null, () => randomBytes(32));
  // From zero, so the first eviction of each route is seen by increase().
  for (const r of c.routes) metrics.cacheEvictions.labels(name, r.route).inc(0);
  collectors.push(() => {
    metrics.cacheBytes.labels(name).set(store.bytes);
    metrics.cacheEntries.labels(name).set(store.size);
  });
  return cache(name, c, {
    clock: deps.clock,
    store,
    coalescer,
    get secret() {
      return shared?.secret ?? own;
    },
    counter: (route, result) => metrics.cacheRequests.labels(name, route, result),
    onStale: (fields) => log.warn(fields, 'served a stale cached answer: the upstream failed'),
  });
}
