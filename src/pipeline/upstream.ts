// Everything built once per upstream from its slice of the policy: the connection pool, the
// resilience state, the route table and the composed stage chain. State objects (breaker,
// budget, bulkhead, holds, buckets) come from SharedState so a reload that leaves an upstream's
// settings unchanged keeps its state.
// The Agent alone: undici's index also loads fetch, WebSocket, the cache and the mocks, resident
// memory the proxy never uses (README, design notes). test/unit/pipeline/upstream.test.ts guards it.
import Agent, { type PoolAgent } from 'undici/lib/dispatcher/agent.js';
import type { UpstreamPolicy } from '../policy/schema.js';
import type { BreakerScopes, CircuitBreaker } from '../resilience/circuit-breaker.js';
import type { Semaphore } from '../resilience/semaphore.js';
import type { RetryBudget } from '../resilience/retry-budget.js';
import { RouteTable } from '../routing/route-table.js';
import type { HoldTable } from '../resilience/hold-table.js';
import type { Next, UpstreamRef } from './exchange.js';

export interface UpstreamRuntime {
  readonly name: string;
  readonly policy: UpstreamPolicy;
  readonly dispatcher: PoolAgent;
  readonly origin: string;
  readonly host: string;
  /** Base path of baseUrl without the trailing slash ('' for most). */
  readonly basePath: string;
  readonly routes: RouteTable<string>;
  /** What a request may know of this upstream (ex.upstream): its name and route table. */
  readonly ref: UpstreamRef;
  readonly breaker: CircuitBreaker;
  /** Breakers of host-routed destinations, built on first use. */
  readonly breakerScopes?: BreakerScopes;
  readonly semaphore: Semaphore;
  readonly budget: RetryBudget;
  readonly holds: HoldTable;
  /** True when this upstream answers from stubs (stub mode). */
  readonly stubbed: boolean;
  pipeline: Next;
  /** Reads this upstream's stage state into gauges (called at scrape time). */
  collect(): void;
}

export function createDispatcher(u: UpstreamPolicy): UpstreamRuntime['dispatcher'] {
  const ms = u.timeout;
  return new Agent({
    connections: u.connections,
    connectTimeout: u.connectTimeout,
    // UPSTREAM_TIMEOUT bounds the wait for response headers; a stalled body gets the same bound
    // between chunks.
    headersTimeout: ms,
    bodyTimeout: ms,
    keepAliveTimeout: 4000,
    keepAliveTimeoutThreshold: 1000,
    pipelining: 1,
    // Host routing opens a pool per allowed host (`*.twilio.com` has many): cap them. Twilio's
    // regional and product hosts number in the tens.
    maxOrigins: 64,
    // Upstream TLS is verified against the system CAs; there is deliberately no switch to turn it off.
    connect: { rejectUnauthorized: true },
  });
}

export function routeTable(u: UpstreamPolicy): RouteTable<string> {
  const t = new RouteTable<string>();
  for (const r of u.routes) t.add(r.match, r.name);
  return t;
}

export function splitBaseUrl(baseUrl: string): { origin: string; host: string; basePath: string } {
  const url = new URL(baseUrl);
  return { origin: url.origin, host: url.host, basePath: url.pathname.replace(/\/+$/, '') };
}
