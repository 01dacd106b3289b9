// Redis going away and coming back, again and again, must not leak: the store's ioredis client
// keeps the same listeners, the process the same listeners, and Redis sees one connection per
// client (no connection left behind per reconnect).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { captureRedisClients, connectedClients, startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const POLICY = policyWith((p) => {
  p.store.timeout = 0.5; // see rate-limit-redis-shared-budget.test.ts
});
const CYCLES = 5;

function listenerCounts(emitter: NodeJS.EventEmitter | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (!emitter) return out;
  for (const name of emitter.eventNames()) out[String(name)] = emitter.listenerCount(name);
  return out;
}

describe('Redis down/up cycles', () => {
  let redis: RedisServer, p: TestProxy, harness: ProxyHarness | undefined;
  let clients: Redis[];
  beforeAll(async () => {
    redis = await startRedis();
    const capture = captureRedisClients();
    try {
      ({ p } = harness = await withProxy({ env: { RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url }, policy: POLICY }));
    } finally {
      capture.restore();
    }
    clients = [...capture.clients];
    expect(clients.length).toBeGreaterThanOrEqual(1);
    expect(await waitFor(() => clients.every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    await harness?.close();
    await redis?.kill();
  });

  let n = 0;
  const get = () => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': `c${n++}` } });
  const fallbackActive = async () => metricValue(await metricsText(p.adminPort), 'breakwater_store_fallback_active', { store: 'redis' });

  async function cycle(): Promise<void> {
    await redis.kill();
    for (let i = 0; i < 3; i++) expect((await get()).status).toBe(200);
    expect(await fallbackActive()).toBe(1);
    await redis.start();
    expect(await waitFor(() => clients.every((c) => c.status === 'ready'), { timeoutMs: 8000 })).toBe(true);
    // Back on Redis once a decision has been made there.
    expect(await waitFor(async () => (await get()).status === 200 && (await fallbackActive()) === 0, { timeoutMs: 5000, everyMs: 100 })).toBe(true);
  }

  function snapshot() {
    return {
      client: clients.map((c) => listenerCounts(c)),
      stream: clients.map((c) => listenerCounts((c as unknown as { stream?: NodeJS.EventEmitter }).stream)),
      process: listenerCounts(process),
      connections: 0,
    };
  }

  it(`keeps listener and connection counts flat over ${CYCLES} cycles`, { timeout: 45_000 }, async () => {
    await cycle();
    const first = { ...snapshot(), connections: await connectedClients(redis.port) };
    expect(first.connections).toBe(clients.length);
    for (let i = 1; i < CYCLES; i++) await cycle();
    const last = { ...snapshot(), connections: await connectedClients(redis.port) };
    expect(last).toEqual(first);
    // Sanity: the snapshot sees the store's own listeners (its 'error' handler at least).
    expect(first.client[0]!.error).toBeGreaterThanOrEqual(1);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_store_fallbacks_total', { store: 'redis' })).toBe(CYCLES);
  });
});
