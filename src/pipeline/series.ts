// The per-request series: each finished request's counters, duration histograms, upstream error
// code and access line. Metric children are resolved once per label tuple and kept, so a request
// pays map lookups, not prom-client's label hashing.
import { RESPONSE_CLASSES, responseClass, type Metrics, type ResponseClass } from '../metrics.js';
import type { AccessLog } from '../access-log.js';
import type { Log } from '../log.js';
import type { Exchange } from './exchange.js';
import { classifyUpstreamError, CodeBound } from '../upstream-errors.js';

export interface RequestSeries {
  /** The live in-flight count of an upstream ('none': unrouted). */
  inFlightFor(upstream: string): { n: number };
  /** Counts, times and logs one finished request. */
  record(ex: Exchange, upstream: string, status: number, outcome: string, seconds: number): void;
  /** Publishes the in-flight counts (at scrape time). */
  collect(): void;
}

export function requestSeries(metrics: Metrics, access: AccessLog, log: Log, accessLogOn: boolean): RequestSeries {
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
      o = {
        requests: metrics.requests.labels(upstream, route, method, String(status), outcome),
        response: responseSeries(upstream, responseClass(status)),
        line: access.segment(upstream, route, method, status, outcome),
      };
      byOutcome.set(outcome, o);
    }
    return o;
  };
  const overheadTimers = new Map<string, Observer>();
  const errorCodes = new CodeBound();
  const responseSeries = (upstream: string, c: ResponseClass): Counter => metrics.responses.labels(upstream, c);
  // "none" (unrouted requests) is seeded here; each upstream's classes in seedUpstreamSeries.
  for (const c of RESPONSE_CLASSES) responseSeries('none', c);

  function record(ex: Exchange, upstreamName: string, status: number, outcome: string, seconds: number): void {
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
  }

  return {
    inFlightFor,
    record,
    collect() {
      for (const [name, c] of inFlight) metrics.inFlight.labels(name).set(c.n);
    },
  };
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
