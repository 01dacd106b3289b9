// Losing Redis must not multiply the quota by the fleet's size: with `store.replicas: 2`, each
// of two sidecars falling back to local buckets allows half of a client's limit, so the fleet
// still allows the limit once (Kong's redis policy and Envoy's fail-open both allow it per node).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  p.store.replicas = 2;
});

describe('fallback while Redis is lost enforces each replica’s share', () => {
  let redis: RedisServer, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startRedis();
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas({ VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '10', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url }, POLICY));
    expect(await waitFor(() => [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await redis?.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });

  it('allows the whole limit through Redis, and half of it per replica once Redis is gone', async () => {
    const shared = [];
    for (let i = 0; i < 12; i++) shared.push((await get(i % 2 === 0 ? a : b, 'share-up')).status);
    expect(shared.filter((st) => st === 200).length).toBe(10);

    await redis.kill();
    expect(await waitFor(() => [...clients].every((c) => c.status !== 'ready'), { timeoutMs: 5000 })).toBe(true);
    const local = { a: [] as number[], b: [] as number[] };
    for (let i = 0; i < 8; i++) {
      local.a.push((await get(a, 'share-down')).status);
      local.b.push((await get(b, 'share-down')).status);
    }
    expect(local.a).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(local.b).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    // 5 + 5: the fleet allowed the limit once, not once per replica; both decided locally.
    for (const p of [a, b]) expect(metricValue(await metricsText(p.adminPort), 'breakwater_store_fallback_active', { store: 'redis' })).toBe(1);
  });
});
