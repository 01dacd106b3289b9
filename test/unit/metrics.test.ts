// The label and naming rules of every series Breakwater declares (src/metrics.ts): labels come
// from one allow-list and never name a client, a phone number, an account or a raw path, and
// names carry their unit (Prometheus naming practice).
import { Counter, Gauge, Histogram, Summary } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ALLOWED_LABELS, createMetrics, dropBreakerSeries, seedBreakerSeries, seedUpstreamSeries } from '../../src/metrics.js';
import { HotCounter, HotHistogram } from '../../src/metric-types.js';

type Declared = Counter | Gauge | Histogram | Summary;

const metrics = createMetrics();
const json = await metrics.registry.getMetricsAsJSON();
/**
 * Breakwater's own series: every metric object createMetrics() returns, prom-client classes and
 * the hot-path HotCounter/HotHistogram alike (not the process defaults). Read from the registry
 * too, so a series registered some other way is not missed either.
 */
const isMetric = (v: unknown): v is Declared | HotCounter | HotHistogram =>
  v instanceof Counter || v instanceof Gauge || v instanceof Histogram || v instanceof Summary || v instanceof HotCounter || v instanceof HotHistogram;
const own = (Object.values(metrics) as unknown[]).filter(isMetric);
const ownNames = own.map((m) => (json.find((j) => metrics.registry.getSingleMetric(j.name) === m) ?? { name: '?' }).name);
const registered = json.map((j) => j.name).filter((n) => !/^(process|nodejs)_/.test(n));
const labelsOf = (name: string): string[] => [...((metrics.registry.getSingleMetric(name) as unknown as { labelNames?: readonly string[] }).labelNames ?? [])];
const typeOf = (name: string) => String(json.find((j) => j.name === name)!.type);

// `from`/`to` are breaker states here, never phone numbers.
const FORBIDDEN = /client|phone|account|path|url|key|^ip$|number|user|sid|_id$|^id$/i;
const UNIT = /_(seconds|bytes|ratio)$/;

/**
 * Gauges that count things have no base unit in Prometheus practice (`process_open_fds`,
 * `http_requests_in_flight`). Each is listed here by name, so a new unit-less series is a
 * deliberate decision rather than an accident.
 */
const UNITLESS_GAUGES = new Set([
  'breakwater_cache_entries',
  'breakwater_requests_in_flight',
  'breakwater_bulkhead_active',
  'breakwater_bulkhead_limit',
  'breakwater_bulkhead_queued',
  'breakwater_rate_limit_keys',
  'breakwater_store_fallback_active',
  'breakwater_upstream_holds_active',
  'breakwater_idempotency_entries',
  'breakwater_upstream_pool_connections',
  'breakwater_upstream_pool_size',
  'breakwater_policy_last_reload_successful',
  'breakwater_client_connections',
  'breakwater_draining',
]);

/**
 * Every series the registry exposes, with its label names in order. A label allowed somewhere is
 * not allowed everywhere: `to` is a breaker state on circuit_breaker_transitions_total and would
 * be a phone number on breakwater_requests_total, and only this table tells the two apart. A new
 * series or label is added here on purpose, or this test fails.
 */
const SERIES: Record<string, readonly string[]> = {
  breakwater_requests_total: ['upstream', 'route', 'method', 'status', 'outcome'],
  breakwater_request_duration_seconds: ['upstream', 'route', 'method', 'source'],
  breakwater_responses_total: ['upstream', 'class'],
  breakwater_upstream_errors_total: ['upstream', 'code'],
  breakwater_upstream_duration_seconds: ['upstream', 'route', 'method'],
  breakwater_overhead_seconds: ['upstream'],
  breakwater_requests_in_flight: ['upstream'],
  circuit_breaker_state: ['service', 'destination'],
  circuit_breaker_failures_total: ['service', 'destination'],
  circuit_breaker_opens_total: ['service', 'destination'],
  circuit_breaker_closes_total: ['service', 'destination'],
  circuit_breaker_transitions_total: ['service', 'destination', 'from', 'to'],
  circuit_breaker_open_seconds_total: ['service', 'destination'],
  circuit_breaker_rejections_total: ['service', 'destination'],
  breakwater_retries_total: ['upstream', 'reason'],
  breakwater_retries_skipped_total: ['upstream', 'reason'],
  breakwater_bulkhead_active: ['upstream'],
  breakwater_bulkhead_limit: ['upstream'],
  breakwater_bulkhead_queued: ['upstream'],
  breakwater_bulkhead_rejections_total: ['upstream'],
  breakwater_rate_limit_decisions_total: ['upstream', 'limit', 'outcome'],
  breakwater_rate_limit_keys: ['upstream', 'limit'],
  breakwater_store_errors_total: ['store', 'reason'],
  breakwater_store_fallback_active: ['store'],
  breakwater_store_fallbacks_total: ['store'],
  breakwater_upstream_holds_total: ['upstream'],
  breakwater_upstream_held_requests_total: ['upstream'],
  breakwater_upstream_holds_active: ['upstream'],
  breakwater_idempotency_total: ['upstream', 'outcome'],
  breakwater_open_proxy_refusals_total: ['kind'],
  breakwater_idempotency_store_resets_total: [],
  breakwater_idempotency_entries: [],
  breakwater_upstream_pool_connections: ['upstream', 'state'],
  breakwater_upstream_pool_size: ['upstream'],
  breakwater_policy_reloads_total: ['result'],
  breakwater_policy_last_reload_successful: [],
  breakwater_client_connections: [],
  breakwater_draining: [],
  breakwater_build_info: ['version', 'node'],
  breakwater_cache_requests_total: ['upstream', 'route', 'result'],
  breakwater_cache_bytes: ['upstream'],
  breakwater_cache_entries: ['upstream'],
  breakwater_cache_evictions_total: ['upstream', 'route'],
};

describe('metrics', () => {
  it('every declared metric is registered and found by name', () => {
    expect(own.length).toBeGreaterThan(20);
    expect(ownNames).not.toContain('?');
    expect(new Set(ownNames).size).toBe(ownNames.length);
    // Nothing in the registry escapes the rules below, and the busiest series are among them.
    expect([...registered].sort()).toEqual([...ownNames].sort());
    for (const hot of ['breakwater_requests_total', 'breakwater_request_duration_seconds']) expect(ownNames).toContain(hot);
  });

  it('every series the registry exposes has exactly the labels listed in SERIES', () => {
    expect(registered.length).toBeGreaterThan(40);
    for (const name of registered) {
      expect(SERIES, `${name} is exported but not listed in SERIES`).toHaveProperty([name]);
      expect(labelsOf(name), `${name} labels`).toEqual(SERIES[name]);
    }
    expect(Object.keys(SERIES).sort()).toEqual([...registered].sort());
  });

  it('includes the series SPEC fixes, labelled by service (plus a destination for host-routed breakers)', () => {
    for (const name of ['circuit_breaker_state', 'circuit_breaker_failures_total', 'circuit_breaker_opens_total', 'circuit_breaker_closes_total']) {
      expect(ownNames).toContain(name);
      expect(labelsOf(name)).toEqual(['service', 'destination']);
    }
  });

  it("the base URL's breaker is exported with service alone, a destination's beside it", async () => {
    const m = createMetrics();
    seedUpstreamSeries(m, 'twilio');
    seedBreakerSeries(m, { service: 'twilio', destination: 'verify.twilio.com' });
    const text = await m.registry.metrics();
    expect(text).toMatch(/^circuit_breaker_state\{service="twilio"\} 0$/m);
    expect(text).toMatch(/^circuit_breaker_state\{service="twilio",destination="verify\.twilio\.com"\} 0$/m);
    expect(text).toMatch(/^circuit_breaker_transitions_total\{service="twilio",destination="verify\.twilio\.com",from="half_open",to="closed"\} 0$/m);
    dropBreakerSeries(m, { service: 'twilio', destination: 'verify.twilio.com' });
    const after = await m.registry.metrics();
    expect(after).not.toContain('verify.twilio.com');
    expect(after).toMatch(/^circuit_breaker_state\{service="twilio"\} 0$/m);
  });

  it.each(registered)('%s uses only allowed labels', (name) => {
    for (const l of labelsOf(name)) expect(ALLOWED_LABELS, `${name} label ${l}`).toContain(l);
  });

  it.each(registered)('%s has no label naming a client, phone, account, path, url or key', (name) => {
    for (const l of labelsOf(name)) expect(l, `${name} label ${l}`).not.toMatch(FORBIDDEN);
  });

  it('the allow-list itself holds no personal or unbounded label', () => {
    for (const l of ALLOWED_LABELS) expect(l).not.toMatch(FORBIDDEN);
  });

  it.each(registered)('%s ends with a unit suffix, _total, _info or _state', (name) => {
    const type = typeOf(name);
    if (type === 'counter') expect(name).toMatch(/_total$/);
    else if (type === 'histogram' || type === 'summary') expect(name).toMatch(UNIT);
    else {
      const ok = UNIT.test(name) || /_(info|state)$/.test(name) || UNITLESS_GAUGES.has(name);
      expect(ok, `${name}: add a unit suffix, or list it in UNITLESS_GAUGES if it counts things`).toBe(true);
      // A gauge is never named like a counter.
      expect(name).not.toMatch(/_total$/);
    }
  });

  it('the unit-less gauge list has no stale entries', () => {
    for (const name of UNITLESS_GAUGES) {
      expect(ownNames).toContain(name);
      expect(typeOf(name)).toBe('gauge');
    }
  });

  it('observed label values also stay within the allow-list', async () => {
    metrics.requests.labels('twilio', 'messages.create', 'POST', '201', 'forwarded').inc();
    metrics.breakerState.labels({ service: 'twilio' }).set(2);
    const after = await metrics.registry.getMetricsAsJSON();
    for (const m of after.filter((j) => ownNames.includes(j.name))) {
      for (const v of m.values)
        for (const l of Object.keys(v.labels)) {
          // Histograms add `le` themselves.
          if (l !== 'le') expect(ALLOWED_LABELS, `${m.name} label ${l}`).toContain(l);
        }
    }
    expect(after.find((j) => j.name === 'circuit_breaker_state')!.values).toEqual([expect.objectContaining({ labels: { service: 'twilio' }, value: 2 })]);
  });

  it('two registries do not share series (each proxy instance has its own)', async () => {
    const other = createMetrics();
    other.breakerOpens.labels({ service: 'vapi' }).inc(5);
    const mine = (await metrics.registry.getSingleMetric('circuit_breaker_opens_total')!.get()).values;
    expect(mine.find((v) => v.labels['service'] === 'vapi')).toBeUndefined();
  });
});
