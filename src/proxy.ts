// One policy build: the upstreams' stacks, the router and the per-request series, joined into
// the request handler (the order itself is written in pipeline/stack.ts). A reload builds a new
// one and swaps it atomically, while requests already inside finish on the one they started with.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sanitisedHost } from './metrics.js';
import { accessLog } from './access-log.js';
import type { Policy } from './policy/schema.js';
import type { Exchange } from './pipeline/exchange.js';
import type { UpstreamRuntime } from './pipeline/upstream.js';
import { buildUpstream, requestPath, type StackDeps } from './pipeline/stack.js';
import { createRouter } from './pipeline/router.js';
import { requestSeries } from './pipeline/series.js';
import { oneByte } from './http/headers.js';

export { foreignHost } from './pipeline/router.js';

export interface Proxy {
  readonly policy: Policy;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Reads live state into gauges just before a scrape, instead of on every request. */
  collect(): void;
}

export function buildProxy(policy: Policy, deps: StackDeps): Proxy {
  const { metrics, log } = deps;
  const upstreams = new Map<string, UpstreamRuntime>();
  for (const [name, u] of Object.entries(policy.upstreams)) upstreams.set(name, buildUpstream(name, u, policy, deps));
  const upstreamNames = new Map<string, string>();
  const routeNames = new Map<string, string>();
  for (const [name, u] of Object.entries(policy.upstreams)) {
    upstreamNames.set(name, oneByte(name));
    for (const r of u.routes) routeNames.set(r.name, oneByte(r.name));
  }
  const series = requestSeries(metrics, accessLog(log), log, policy.logging.accessLog);
  const route = createRouter(upstreams, policy, (ex, kind, host) => {
    metrics.openProxyRefusals.labels(kind).inc();
    ex.probeHost = sanitisedHost(host);
  });
  const handle = requestPath({ log, route, series, upstreamNames, routeNames, keyed, onSettled: deps.onSettled });

  /** Whether the idempotency stage took this request in (it then words an ambiguous answer itself). */
  function keyed(ex: Exchange): boolean {
    const idem = ex.upstream === undefined ? undefined : upstreams.get(ex.upstream.name)?.policy.idempotency;
    return (
      idem !== undefined && idem.enabled && (idem.methods as readonly string[]).includes(ex.method) && ex.req.headers[idem.header.toLowerCase()] !== undefined
    );
  }

  function collect(): void {
    series.collect();
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
