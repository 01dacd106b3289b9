// Redis dies mid-run: both sidecars keep serving on their local buckets (no request fails
// because of Redis), say so in metrics, and go back to the shared budget once Redis is
// restarted on the same port.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, sleep, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = policyWith((p) => {
  p.store.timeout = 0.5; // see rate-limit-redis-shared-budget.test.ts
});

describe('Redis outage: local fallback, then shared again', () => {
  let redis: RedisServer, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startRedis();
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas({ VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '5', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url }, POLICY));
    expect(await waitFor(() => clients.size >= 2 && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await redis?.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });
  const gauge = async (p: TestProxy, name: string) => metricValue(await metricsText(p.adminPort), name, { store: 'redis' });

  it('answers every request while Redis is killed mid-run', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) {
      if (i === 20) await redis.kill();
      // A distinct client each time: every request is within its limit, so anything but 200 is
      // a failure caused by the store.
      statuses.push((await get(i % 2 === 0 ? a : b, `run-${i}`)).status);
    }
    expect(redis.running).toBe(false);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    for (const p of [a, b]) {
      expect(await gauge(p, 'breakwater_store_fallback_active')).toBe(1);
      expect(await gauge(p, 'breakwater_store_fallbacks_total')).toBeGreaterThanOrEqual(1);
    }
    expect(a.logLines().some((l) => l.store === 'redis' && /unavailable/.test(String(l.msg)))).toBe(true);
  });

  it('limits on local buckets while Redis is down: each proxy its own budget', async () => {
    const onA = [];
    const onB = [];
    for (let i = 0; i < 7; i++) onA.push((await get(a, 'while-down')).status);
    for (let i = 0; i < 7; i++) onB.push((await get(b, 'while-down')).status);
    expect(onA).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(onB).toEqual([200, 200, 200, 200, 200, 429, 429]);
  });

  it('returns to the shared budget after Redis restarts on the same port', async () => {
    await redis.start();
    // Bounded wait: a fresh client uses its whole budget on A; once B refuses the sixth
    // request, B is reading the bucket A wrote, so both decide in Redis again.
    let shared = false;
    const deadline = Date.now() + 10_000;
    for (let n = 0; n < 50 && !shared && Date.now() < deadline; n++) {
      for (let i = 0; i < 5; i++) expect((await get(a, `resume-${n}`)).status).toBe(200);
      shared = (await get(b, `resume-${n}`)).status === 429;
      if (!shared) await sleep(200);
    }
    expect(shared).toBe(true);

    const statuses = [];
    for (let i = 0; i < 10; i++) statuses.push((await get(i % 2 === 0 ? a : b, 'after-restart')).status);
    expect(statuses.filter((s) => s === 200).length).toBe(5);
    for (const p of [a, b]) expect(await gauge(p, 'breakwater_store_fallback_active')).toBe(0);
    expect(a.logLines().some((l) => l.store === 'redis' && /back/.test(String(l.msg)))).toBe(true);
  });
});
