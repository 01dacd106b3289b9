// Every metric Breakwater exports, declared in one place (Envoy's "one stats list per filter").
// Label rules: upstream and route are names from the policy, never raw paths; no label ever
// carries a client id, a phone number or an account SID (unbounded cardinality, personal data).
// docs/observability.md documents each series; test/unit/metrics.test.ts enforces the label rules.
// Series updated on every request use HotCounter/HotHistogram (metric-types.ts): same exposition,
// without prom-client's per-call label hashing.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { HotCounter, HotHistogram } from './metric-types.js';

// API calls: 5 ms to 30 s, so both a 40 ms Twilio send and a 20 s timeout land in a real bucket.
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 15, 20, 30];
// Sidecar overhead is sub-millisecond when healthy; these buckets resolve it.
const OVERHEAD_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

export const ALLOWED_LABELS = new Set([
  'upstream',
  'service',
  'route',
  'method',
  'status',
  'outcome',
  'code',
  'limit',
  'reason',
  'from',
  'to',
  'state',
  'store',
  'result',
  'version',
  'node',
  'source',
  'class',
  'kind',
  'destination',
]);

/**
 * Where an answer came from. `local`: Breakwater answered without contacting the upstream (open
 * circuit, rate limit, hold, replay, stub, bad request), usually in well under a millisecond;
 * `upstream`: at least one attempt was sent. Kept apart in the latency histogram, as Envoy keeps
 * `upstream_rq_time` apart from its local replies, or an outage's fast refusals pull the p50 down.
 */
export const SOURCES = ['local', 'upstream'] as const;
/**
 * The answer classes an SLO counts (breakwater_responses_total). `5xx` is every 5xx the app got,
 * forwarded or made by Breakwater (circuit_open, upstream_timeout, ...): both are failures to the
 * app. `client_closed` (499) is the app's own hang-up, in neither the numerator nor the budget.
 */
export const RESPONSE_CLASSES = ['2xx', '3xx', '4xx', '5xx', 'client_closed'] as const;
export type ResponseClass = (typeof RESPONSE_CLASSES)[number];
export function responseClass(status: number): ResponseClass {
  if (status === 499) return 'client_closed';
  if (status >= 500) return '5xx';
  if (status >= 400) return '4xx';
  if (status >= 300) return '3xx';
  return '2xx';
}
/** Every transition the breaker makes (forced ones included), each series exported from zero. */
export const BREAKER_TRANSITIONS = [
  ['closed', 'open'],
  ['open', 'half_open'],
  ['half_open', 'closed'],
  ['half_open', 'open'],
  ['open', 'closed'],
] as const;

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const m = {
    registry,
    requests: new HotCounter({
      name: 'breakwater_requests_total',
      help: 'Requests answered, by upstream, route pattern, method, status and outcome (forwarded, stub, replayed, the proxy-made error code, or client_closed with status 499).',
      labelNames: ['upstream', 'route', 'method', 'status', 'outcome'] as const,
      registers: [registry],
    }),
    requestDuration: new HotHistogram({
      name: 'breakwater_request_duration_seconds',
      help: 'Time from request arrival to the end of the response, as the app sees it; source is upstream when an attempt was sent, local when Breakwater answered by itself.',
      labelNames: ['upstream', 'route', 'method', 'source'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    responses: new HotCounter({
      name: 'breakwater_responses_total',
      help: 'Answers by upstream and class (2xx, 3xx, 4xx, 5xx, client_closed), every class exported from zero: the SLO and failure-rate series, forwarded and Breakwater-made answers alike.',
      labelNames: ['upstream', 'class'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'breakwater_upstream_errors_total',
      help: "Non-2xx upstream answers by the provider's own error code: Twilio's numeric code, Vapi's error class (bad_request, validation, ...); at most 50 codes per upstream, then other.",
      labelNames: ['upstream', 'code'] as const,
      registers: [registry],
    }),
    upstreamDuration: new HotHistogram({
      name: 'breakwater_upstream_duration_seconds',
      help: 'Time from dispatch to the upstream until its response ended (all attempts).',
      labelNames: ['upstream', 'route', 'method'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    overhead: new HotHistogram({
      name: 'breakwater_overhead_seconds',
      help: 'Time the sidecar itself added to forwarded requests (total minus upstream time).',
      labelNames: ['upstream'] as const,
      buckets: OVERHEAD_BUCKETS,
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'breakwater_requests_in_flight',
      help: 'Requests being handled, by upstream ("none" before routing).',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    breakerState: new Gauge({
      name: 'circuit_breaker_state',
      help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open. Without a destination label, the breaker of the upstream base URL; with one, a host-routed destination (or (other), the overflow).',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    breakerFailures: new Counter({
      name: 'circuit_breaker_failures_total',
      help: 'Calls the breaker counted as failures.',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    breakerOpens: new Counter({
      name: 'circuit_breaker_opens_total',
      help: 'Transitions to open (from closed or half-open).',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    breakerCloses: new Counter({
      name: 'circuit_breaker_closes_total',
      help: 'Transitions from half-open (or forced) to closed: recoveries.',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    breakerTransitions: new Counter({
      name: 'circuit_breaker_transitions_total',
      help: 'Every state transition, by from and to state.',
      labelNames: ['service', 'destination', 'from', 'to'] as const,
      registers: [registry],
    }),
    breakerOpenSeconds: new Counter({
      name: 'circuit_breaker_open_seconds_total',
      help: 'Seconds the breaker has spent open: counted to the moment it leaves open (noticed at the next request or scrape), and brought up to date at each scrape.',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    breakerRejections: new Counter({
      name: 'circuit_breaker_rejections_total',
      help: 'Requests answered 503 circuit_open without contacting the upstream.',
      labelNames: ['service', 'destination'] as const,
      registers: [registry],
    }),
    retries: new Counter({
      name: 'breakwater_retries_total',
      help: 'Retry attempts sent, by upstream and the reason of the failed attempt.',
      labelNames: ['upstream', 'reason'] as const,
      registers: [registry],
    }),
    retriesSkipped: new Counter({
      name: 'breakwater_retries_skipped_total',
      help: 'Retries not made, by reason (budget, unsafe, breaker).',
      labelNames: ['upstream', 'reason'] as const,
      registers: [registry],
    }),
    bulkheadActive: new Gauge({
      name: 'breakwater_bulkhead_active',
      help: 'Slots of the upstream concurrency cap in use.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    bulkheadLimit: new Gauge({
      name: 'breakwater_bulkhead_limit',
      help: 'The upstream concurrency cap.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    bulkheadQueued: new Gauge({
      name: 'breakwater_bulkhead_queued',
      help: 'Requests waiting for a slot.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    bulkheadRejections: new Counter({
      name: 'breakwater_bulkhead_rejections_total',
      help: 'Requests answered 503 bulkhead_full.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    rateLimitDecisions: new HotCounter({
      name: 'breakwater_rate_limit_decisions_total',
      help: 'Rate-limit decisions by upstream, limit and outcome (allowed, limited, shadow_limited, delayed).',
      labelNames: ['upstream', 'limit', 'outcome'] as const,
      registers: [registry],
    }),
    rateLimitKeys: new Gauge({
      name: 'breakwater_rate_limit_keys',
      help: 'Buckets held in local memory, by upstream and limit (bounded by clientId.maxClients).',
      labelNames: ['upstream', 'limit'] as const,
      registers: [registry],
    }),
    storeErrors: new Counter({
      name: 'breakwater_store_errors_total',
      help: 'Shared-store (Redis) calls that failed or timed out.',
      labelNames: ['store', 'reason'] as const,
      registers: [registry],
    }),
    storeFallback: new Gauge({
      name: 'breakwater_store_fallback_active',
      help: '1 while decisions are made on local state because the shared store is unavailable.',
      labelNames: ['store'] as const,
      registers: [registry],
    }),
    storeFallbacks: new Counter({
      name: 'breakwater_store_fallbacks_total',
      help: 'Switches from the shared store to local state.',
      labelNames: ['store'] as const,
      registers: [registry],
    }),
    holds: new Counter({
      name: 'breakwater_upstream_holds_total',
      help: 'Holds started after an upstream 429.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    heldRequests: new Counter({
      name: 'breakwater_upstream_held_requests_total',
      help: 'Requests answered 429 upstream_rate_limited locally during a hold.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    holdsActive: new Gauge({
      name: 'breakwater_upstream_holds_active',
      help: 'Keys currently held after an upstream 429.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    idempotency: new HotCounter({
      name: 'breakwater_idempotency_total',
      help: 'Idempotency-key outcomes: forwarded, replayed, joined (waited for the original), in_flight (409), mismatch (422), not_stored, unavailable (503: the shared store could not say), orphaned (the replica of the original died; not re-sent).',
      labelNames: ['upstream', 'outcome'] as const,
      registers: [registry],
    }),
    openProxyRefusals: new Counter({
      name: 'breakwater_open_proxy_refusals_total',
      help: 'Requests refused for trying to use Breakwater as a forward proxy: absolute_form (a full URL as the target), connect (CONNECT), foreign_host (no route, and the Host names another server). Each kind exported from zero.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    idempotencyStoreResets: new Counter({
      name: 'breakwater_idempotency_store_resets_total',
      help: 'Times the shared idempotency store (Redis) came back without its records (restarted empty): keys used before may be forwarded again.',
      registers: [registry],
    }),
    idempotencyEntries: new Gauge({
      name: 'breakwater_idempotency_entries',
      help: 'Stored idempotent answers held in local memory (all upstreams).',
      registers: [registry],
    }),
    poolConnections: new Gauge({
      name: 'breakwater_upstream_pool_connections',
      help: 'Upstream connection pool figures (undici Pool.stats): connected, free, pending, running, queued.',
      labelNames: ['upstream', 'state'] as const,
      registers: [registry],
    }),
    poolSize: new Gauge({
      name: 'breakwater_upstream_pool_size',
      help: 'Configured connections per upstream origin.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    reloads: new Counter({
      name: 'breakwater_policy_reloads_total',
      help: 'Policy reloads by result (success, failure).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    reloadSuccess: new Gauge({
      name: 'breakwater_policy_last_reload_successful',
      help: '1 when the last reload succeeded (or none was tried), 0 when it was refused.',
      registers: [registry],
    }),
    clientConnections: new Gauge({
      name: 'breakwater_client_connections',
      help: 'Open client connections on the proxy listener.',
      registers: [registry],
    }),
    draining: new Gauge({
      name: 'breakwater_draining',
      help: '1 while the proxy drains before exit.',
      registers: [registry],
    }),
    buildInfo: new Gauge({
      name: 'breakwater_build_info',
      help: 'Always 1; labels carry the version and Node.js runtime.',
      labelNames: ['version', 'node'] as const,
      registers: [registry],
    }),
    // Response cache (src/stages/cache.ts). result: hit, miss, stale (served on error), coalesced
    // (answered from another request's miss), revalidated (a 304 refreshed a copy), bypass (not
    // cacheable as asked).
    cacheRequests: new HotCounter({
      name: 'breakwater_cache_requests_total',
      help: 'Cacheable requests by upstream, route and result (hit, miss, stale, coalesced, revalidated, bypass).',
      labelNames: ['upstream', 'route', 'result'] as const,
      registers: [registry],
    }),
    cacheBytes: new Gauge({
      name: 'breakwater_cache_bytes',
      help: 'Bytes held by the memory cache store, per upstream.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    cacheEntries: new Gauge({
      name: 'breakwater_cache_entries',
      help: 'Entries held by the memory cache store, per upstream.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    cacheEvictions: new Counter({
      name: 'breakwater_cache_evictions_total',
      help: "Entries evicted (least recently used) to keep the cache within its bounds, by the evicted entry's route.",
      labelNames: ['upstream', 'route'] as const,
      registers: [registry],
    }),
  };
  m.reloadSuccess.set(1);
  m.draining.set(0);
  for (const kind of OPEN_PROXY_KINDS) m.openProxyRefusals.labels(kind).inc(0);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

/** The ways a client tries to use Breakwater as a forward proxy (see openProxyRefusals). */
export const OPEN_PROXY_KINDS = ['absolute_form', 'connect', 'foreign_host'] as const;
export type OpenProxyKind = (typeof OPEN_PROXY_KINDS)[number];

/**
 * A Host (or CONNECT authority) as logs may carry it: lower-case, at most 100 characters of the
 * ones a host name, an IP literal or a port can hold; anything else becomes `?`. A probe's Host is
 * attacker text, and a log line must not become its channel.
 */
export function sanitisedHost(v: string): string {
  return v
    .slice(0, 100)
    .toLowerCase()
    .replace(/[^a-z0-9.:[\]-]/g, '?');
}

/**
 * Exports an upstream's counters at zero before anything happens. A series born at 1 loses its
 * first event to increase() and rate() (there is no earlier sample to difference against), so
 * the first open, the first recovery or the first 5xx would never show on a dashboard or alert.
 */
export function seedUpstreamSeries(m: Metrics, name: string): void {
  seedBreakerSeries(m, { service: name });
  for (const c of RESPONSE_CLASSES) m.responses.labels(name, c).inc(0);
}

/**
 * The labels of one breaker's series. The base URL's breaker is `{service}` alone, the series SPEC
 * names; a host-routed destination's breaker adds `destination` (its host, or `(other)` for the
 * overflow breaker), bounded like the breakers themselves: at most 65 values per upstream.
 * `destination=""` in PromQL selects the base series.
 */
export type BreakerLabels = { service: string; destination?: string };

/** Exports one breaker's series at zero when the breaker is built (see seedUpstreamSeries). */
export function seedBreakerSeries(m: Metrics, labels: BreakerLabels): void {
  m.breakerState.labels(labels).set(0);
  m.breakerFailures.labels(labels).inc(0);
  m.breakerOpens.labels(labels).inc(0);
  m.breakerCloses.labels(labels).inc(0);
  m.breakerRejections.labels(labels).inc(0);
  m.breakerOpenSeconds.labels(labels).inc(0);
  for (const [from, to] of BREAKER_TRANSITIONS) m.breakerTransitions.labels({ ...labels, from, to }).inc(0);
}

/** Stops exporting a destination breaker's series (its breaker was dropped by a reload). */
export function dropBreakerSeries(m: Metrics, labels: Required<BreakerLabels>): void {
  m.breakerState.remove(labels);
  m.breakerFailures.remove(labels);
  m.breakerOpens.remove(labels);
  m.breakerCloses.remove(labels);
  m.breakerRejections.remove(labels);
  m.breakerOpenSeconds.remove(labels);
  for (const [from, to] of BREAKER_TRANSITIONS) m.breakerTransitions.remove({ ...labels, from, to });
}
