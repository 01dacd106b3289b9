// Two sidecars on one real Redis share one budget: a client gets exactly its per-minute figure
// across the fleet, sequentially or all at once (one atomic script per decision).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

// Redis answers in well under a millisecond here, but this file runs beside others on two
// cores: a 0.5 s bound keeps a scheduling stall from turning into a local decision.
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  // The remaining count is read off every allowed answer.
  for (const l of p.upstreams.vapi.rateLimits) l.headers = 'always';
});

describe('rate limits shared through Redis', () => {
  let redis: RedisServer, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startRedis();
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas({ VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '5', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url }, POLICY));
    expect(clients.size).toBeGreaterThanOrEqual(2);
    expect(await waitFor(() => [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await redis?.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });

  it('allows exactly the shared budget across two proxies, one request at a time', async () => {
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await get(i % 2 === 0 ? a : b, 'fleet-seq'));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    // One bucket: the remaining count falls across both proxies.
    expect(answers.slice(0, 5).map((r) => /r=(\d+)/.exec(String(r.headers.ratelimit))?.[1])).toEqual(['4', '3', '2', '1', '0']);
    expect(up.seen.length).toBe(5);
  });

  it('allows exactly the shared budget when both proxies are hit at once', async () => {
    const before = up.seen.length;
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => get(i % 2 === 0 ? a : b, 'fleet-burst')));
    expect(answers.filter((r) => r.status === 200).length).toBe(5);
    expect(answers.filter((r) => r.status === 429).length).toBe(15);
    expect(up.seen.length).toBe(before + 5);
  });

  it('keeps separate clients separate in the shared store', async () => {
    expect((await get(b, 'fleet-other')).status).toBe(200);
  });

  it('never fell back to local buckets', async () => {
    for (const p of [a, b]) {
      const text = await metricsText(p.adminPort);
      expect(metricValue(text, 'breakwater_store_fallback_active', { store: 'redis' })).toBe(0);
      expect(metricValue(text, 'breakwater_store_fallbacks_total', { store: 'redis' }) ?? 0).toBe(0);
    }
  });
});
