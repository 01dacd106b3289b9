// Rolling last-minute statistics for the status page, computed in process so a person can see
// rates and latency without Prometheus. A ring of 60 one-second buckets per upstream/route, each
// holding counts and a fixed log-scale latency histogram: recording is a few array writes, and
// the page's reads (once a second, only while someone looks) do the summing.
import type { Clock } from '../resilience/clock.js';

const SECONDS = 60;
// Latency bins: 0.25 ms growing by 25% per bin up to ~2 min, enough resolution for p50/p99
// within a bin's width (HAProxy and Envoy's admin figures are no finer).
const BASE_MS = 0.25;
const GROWTH = 1.25;
const BINS = 60;
const LOG_GROWTH = Math.log(GROWTH);

function binOf(ms: number): number {
  if (ms <= BASE_MS) return 0;
  const b = Math.floor(Math.log(ms / BASE_MS) / LOG_GROWTH) + 1;
  return b >= BINS ? BINS - 1 : b;
}

/** Upper edge of a bin, in ms: the figure reported for a quantile landing in it. */
function edgeOf(bin: number): number {
  return BASE_MS * GROWTH ** bin;
}

export interface WindowStats {
  upstream: string;
  route: string;
  requests: number;
  perSecond: number;
  errors: number;
  errorPct: number;
  rateLimited: number;
  replays: number;
  /** Answers served from the response cache (fresh or stale). */
  cacheHits: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

class Series {
  readonly stamp = new Float64Array(SECONDS).fill(-1);
  readonly requests = new Uint32Array(SECONDS);
  readonly errors = new Uint32Array(SECONDS);
  readonly limited = new Uint32Array(SECONDS);
  readonly replays = new Uint32Array(SECONDS);
  readonly cached = new Uint32Array(SECONDS);
  readonly latency = new Uint32Array(SECONDS * BINS);
  constructor(
    readonly upstream: string,
    readonly route: string,
  ) {}

  slot(sec: number): number {
    const i = sec % SECONDS;
    if (this.stamp[i] !== sec) {
      this.stamp[i] = sec;
      this.requests[i] = 0;
      this.errors[i] = 0;
      this.limited[i] = 0;
      this.replays[i] = 0;
      this.cached[i] = 0;
      this.latency.fill(0, i * BINS, i * BINS + BINS);
    }
    return i;
  }
}

export interface Outcome {
  status: number;
  /** The outcome label the metrics use: 'forwarded', an error code, 'replayed', ... */
  outcome: string;
  seconds: number;
}

export class RollingStats {
  // Nested by upstream then route: no key string is built per request.
  private readonly byUpstream = new Map<string, Map<string, Series>>();
  private readonly series: Series[] = [];
  // Bounded: routes come from the policy, but 'other' and reloads could add names.
  private static readonly MAX_SERIES = 512;
  constructor(private readonly clock: Clock) {}

  record(upstream: string, route: string, o: Outcome): void {
    let byRoute = this.byUpstream.get(upstream);
    if (!byRoute) this.byUpstream.set(upstream, (byRoute = new Map()));
    let s = byRoute.get(route);
    if (!s) {
      if (this.series.length >= RollingStats.MAX_SERIES) return;
      byRoute.set(route, (s = new Series(upstream, route)));
      this.series.push(s);
    }
    const i = s.slot(Math.floor(this.clock() / 1000));
    s.requests[i]!++;
    if (o.status >= 500) s.errors[i]!++;
    if (o.outcome === 'rate_limited') s.limited[i]!++;
    if (o.outcome === 'replayed') s.replays[i]!++;
    if (o.outcome === 'cached') s.cached[i]!++;
    s.latency[i * BINS + binOf(o.seconds * 1000)]!++;
  }

  /** The last full minute (the current second included), per upstream/route. */
  window(): WindowStats[] {
    const now = Math.floor(this.clock() / 1000);
    const out: WindowStats[] = [];
    const hist = new Float64Array(BINS);
    for (const s of this.series) {
      let requests = 0,
        errors = 0,
        limited = 0,
        replays = 0,
        cacheHits = 0;
      hist.fill(0);
      for (let i = 0; i < SECONDS; i++) {
        const st = s.stamp[i]!;
        if (st < 0 || now - st >= SECONDS) continue;
        requests += s.requests[i]!;
        errors += s.errors[i]!;
        limited += s.limited[i]!;
        replays += s.replays[i]!;
        cacheHits += s.cached[i]!;
        for (let b = 0; b < BINS; b++) hist[b]! += s.latency[i * BINS + b]!;
      }
      if (requests === 0) continue;
      out.push({
        upstream: s.upstream,
        route: s.route,
        requests,
        perSecond: Math.round((requests / SECONDS) * 100) / 100,
        errors,
        errorPct: Math.round((errors / requests) * 1000) / 10,
        rateLimited: limited,
        replays,
        cacheHits,
        p50Ms: quantile(hist, requests, 0.5),
        p99Ms: quantile(hist, requests, 0.99),
      });
    }
    return out.sort((a, b) => a.upstream.localeCompare(b.upstream) || a.route.localeCompare(b.route));
  }
}

function quantile(hist: Float64Array, total: number, q: number): number | null {
  if (total === 0) return null;
  const want = Math.ceil(total * q);
  let seen = 0;
  for (let b = 0; b < BINS; b++) {
    seen += hist[b]!;
    if (seen >= want) return Math.round(edgeOf(b) * 100) / 100;
  }
  return Math.round(edgeOf(BINS - 1) * 100) / 100;
}

export interface RecentError {
  at: string;
  requestId: string;
  upstream: string;
  route: string;
  method: string;
  status: number;
  code: string;
  cause: string;
}

// Anything that looks like a phone number (E.164 or a long digit run) keeps its last four digits.
const PHONE = /\+?\d[\d ().-]{5,}\d/g;
const mask = (s: string) => s.replace(PHONE, (m) => `${'*'.repeat(Math.max(0, m.length - 4))}${m.slice(-4)}`);

/** The last N proxy-made errors, oldest overwritten first. */
export class RecentErrors {
  private readonly ring: (RecentError | undefined)[];
  private next = 0;
  constructor(private readonly size = 50) {
    this.ring = new Array<RecentError | undefined>(size);
  }

  push(e: RecentError): void {
    this.ring[this.next] = { ...e, cause: mask(e.cause).slice(0, 300) };
    this.next = (this.next + 1) % this.size;
  }

  /** Newest first. */
  list(): RecentError[] {
    const out: RecentError[] = [];
    for (let k = 1; k <= this.size; k++) {
      const e = this.ring[(this.next - k + this.size) % this.size];
      if (e) out.push(e);
    }
    return out;
  }
}
