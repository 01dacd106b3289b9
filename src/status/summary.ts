// One summary of live state, shared by the status page's JSON, the page's first render and
// `breakwater status`.
import type { Proxy } from '../proxy.js';
import type { StatusRecorder } from './record.js';
import type { RecentError, WindowStats } from './stats.js';
import { createHash } from 'node:crypto';
import { VERSION } from '../version.js';

// The policy's version is a digest of its effective settings: two replicas showing the same
// one run the same policy. Computed once per built proxy (a reload builds a new one).
const digests = new WeakMap<object, string>();
function policyVersion(proxy: Proxy): string {
  let d = digests.get(proxy.policy);
  if (!d) digests.set(proxy.policy, (d = createHash('sha256').update(JSON.stringify(proxy.policy)).digest('hex').slice(0, 12)));
  return d;
}

export interface BreakerView {
  upstream: string;
  state: 'closed' | 'open' | 'half_open';
  forced: boolean;
  enforcing: boolean;
  consecutiveFailures: number | null;
  failures: number;
  rejections: number;
  trips: number;
  /** Until the half-open probe; null when closed, half-open or forced. */
  openForMs: number | null;
  holdsActive: number;
  /** Longest time left on an active 429 hold; null when none. */
  holdLeftMs: number | null;
  inFlight: number;
}

/** A host-routed destination's own breaker (Verify, a regional host): state and counts. */
export interface DestinationView {
  upstream: string;
  /** The host the breaker guards. */
  scope: string;
  state: 'closed' | 'open' | 'half_open';
  forced: boolean;
  consecutiveFailures: number | null;
  failures: number;
  trips: number;
  openForMs: number | null;
}

export interface Summary {
  version: string;
  store: string;
  /** True while the shared store is unreachable and decisions fall back to local buckets. */
  storeFallback: boolean;
  policyVersion: string;
  lastReload: { at: string; ok: boolean; detail: string } | null;
  ready: boolean;
  stubMode: boolean;
  generatedAt: string;
  breakers: BreakerView[];
  destinations: DestinationView[];
  traffic: WindowStats[];
  recentErrors: RecentError[];
}

export function summarize(proxy: Proxy, rec: StatusRecorder, extra: { store: string; storeFallback: boolean; ready: boolean; now: number }): Summary {
  const breakers: BreakerView[] = [];
  const destinations: DestinationView[] = [];
  for (const u of proxy.upstreams.values()) {
    for (const [scope, cb] of u.breakerScopes?.entries() ?? []) {
      const d = cb.snapshot();
      destinations.push({
        upstream: u.name,
        scope,
        state: d.state,
        forced: d.forced,
        consecutiveFailures: d.consecutiveFailures,
        failures: d.failures,
        trips: d.trips,
        openForMs: d.openForMs,
      });
    }
    const s = u.breaker.snapshot();
    let holdLeft = 0;
    for (const e of u.holds.values()) if (e.until - extra.now > holdLeft) holdLeft = e.until - extra.now;
    breakers.push({
      upstream: u.name,
      state: s.state,
      forced: s.forced,
      enforcing: s.enforcing,
      consecutiveFailures: s.consecutiveFailures,
      failures: s.failures,
      rejections: s.rejections,
      trips: s.trips,
      openForMs: s.openForMs,
      holdsActive: u.holds.active(extra.now),
      holdLeftMs: holdLeft > 0 ? Math.round(holdLeft) : null,
      inFlight: u.semaphore.active,
    });
  }
  return {
    version: VERSION,
    store: extra.store,
    storeFallback: extra.storeFallback,
    policyVersion: policyVersion(proxy),
    lastReload: rec.lastReload ?? null,
    ready: extra.ready,
    stubMode: proxy.policy.stubMode,
    generatedAt: new Date().toISOString(),
    breakers,
    destinations,
    traffic: rec.stats.window(),
    recentErrors: rec.recent.list(),
  };
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const ms = (v: number | null) => (v === null ? '-' : v >= 1000 ? `${(v / 1000).toFixed(1)}s` : `${v}ms`);

/** The terminal view (`breakwater status`). */
export function renderText(s: Summary): string {
  const out: string[] = [];
  out.push(
    `breakwater ${s.version}  store=${s.store}${s.storeFallback ? ' (FALLBACK: local buckets)' : ''}  ${s.ready ? 'ready' : 'DRAINING'}${s.stubMode ? '  STUB MODE' : ''}  at ${s.generatedAt}`,
  );
  out.push(
    `policy ${s.policyVersion}${s.lastReload ? `  last reload ${s.lastReload.ok ? 'ok' : 'REFUSED'} at ${s.lastReload.at}${s.lastReload.ok ? '' : `: ${s.lastReload.detail}`}` : ''}`,
  );
  out.push('', 'BREAKERS');
  out.push(`  ${pad('upstream', 12)}${pad('state', 18)}${pad('half-open in', 14)}${pad('failures', 10)}${pad('trips', 7)}${pad('rejected', 10)}holds`);
  for (const b of s.breakers) {
    const state = b.state.toUpperCase().replace('_', '-') + (b.forced ? ' (forced)' : '') + (b.enforcing ? '' : ' (shadow)');
    const wait = b.openForMs === null ? '-' : `${Math.ceil(b.openForMs / 1000)}s`;
    out.push(
      `  ${pad(b.upstream, 12)}${pad(state, 18)}${pad(wait, 14)}${pad(String(b.consecutiveFailures ?? b.failures), 10)}${pad(String(b.trips), 7)}${pad(String(b.rejections), 10)}${b.holdsActive}${b.holdLeftMs === null ? '' : ` (${Math.ceil(b.holdLeftMs / 1000)}s left)`}`,
    );
  }
  for (const d of s.destinations) {
    const state = d.state.toUpperCase().replace('_', '-') + (d.forced ? ' (forced)' : '');
    const wait = d.openForMs === null ? '-' : `${Math.ceil(d.openForMs / 1000)}s`;
    out.push(`  ${pad(`${d.upstream} @ ${d.scope}`, 12)}${pad(state, 18)}${pad(wait, 14)}${pad(String(d.consecutiveFailures ?? d.failures), 10)}${d.trips}`);
  }

  out.push('', 'LAST MINUTE');
  if (s.traffic.length === 0) out.push('  no requests');
  else {
    out.push(`  ${pad('upstream/route', 32)}${pad('req/s', 8)}${pad('err%', 7)}${pad('p50', 9)}${pad('p99', 9)}${pad('429s', 6)}${pad('replays', 9)}cache`);
    for (const t of s.traffic)
      out.push(
        `  ${pad(`${t.upstream}/${t.route}`, 32)}${pad(String(t.perSecond), 8)}${pad(String(t.errorPct), 7)}${pad(ms(t.p50Ms), 9)}${pad(ms(t.p99Ms), 9)}${pad(String(t.rateLimited), 6)}${pad(String(t.replays), 9)}${t.cacheHits}`,
      );
  }
  out.push('', `RECENT PROXY-MADE ERRORS (${s.recentErrors.length})`);
  for (const e of s.recentErrors.slice(0, 10))
    out.push(`  ${e.at}  ${pad(e.code, 22)}${pad(String(e.status), 5)}${pad(`${e.upstream}/${e.route}`, 28)}${e.requestId}${e.cause ? `  ${e.cause}` : ''}`);
  return out.join('\n') + '\n';
}
