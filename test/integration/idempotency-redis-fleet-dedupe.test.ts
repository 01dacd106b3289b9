// With RATE_LIMIT_STORE=redis, idempotency keys are shared by the fleet: a duplicate that lands
// on another sidecar is replayed, not sent again. If Redis is lost, a keyed create that no local
// record answers cannot be checked: it gets 503 idempotency_unavailable and nothing is sent.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = policyWith((p) => {
  p.store.timeout = 0.5; // see rate-limit-redis-shared-budget.test.ts
});

describe('idempotency across a fleet on one Redis', () => {
  let redis: RedisServer, vapi: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startRedis();
    vapi = await fakeUpstream('vapi');
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: randomUUID(), status: 'queued' }));
      }, 200);
    };
    ({ a, b, clients } = await startReplicas(
      { VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '1000', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url },
      POLICY,
    ));
    expect(await waitFor(() => clients.size >= 2 && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await vapi?.close();
    await redis?.kill();
  });

  const create = (p: TestProxy, key: string, number: string) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-client-id': 'fleet-app' },
      body: JSON.stringify({ assistantId: 'a1', customer: { number } }),
    });
  const createsFor = (number: string) => vapi.seen.filter((s) => s.method === 'POST' && s.body.toString().includes(number)).length;

  it('replays on proxy B a create first sent through proxy A', async () => {
    const first = await create(a, 'fleet-k1', '+15550004001');
    expect(first.status).toBe(201);
    const second = await create(b, 'fleet-k1', '+15550004001');
    expect(second.status).toBe(201);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.text).toBe(first.text);
    expect(createsFor('+15550004001')).toBe(1);
  });

  it('sends concurrent duplicates spread over both proxies upstream once', async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => create(i % 2 === 0 ? a : b, 'fleet-k2', '+15550004002')));
    expect(createsFor('+15550004002')).toBe(1);
    const ok = answers.filter((r) => r.status === 201);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    for (const r of ok) expect(r.text).toBe(ok[0]!.text);
    // A duplicate on the other proxy may wait for the original or be told it is still in flight.
    for (const r of answers) if (r.status !== 201) expect(r.headers['x-breakwater-error']).toBe('idempotency_in_flight');
  });

  it('refuses a keyed create it cannot check while Redis is lost, sends nothing, and lets unkeyed calls through', async () => {
    await redis.kill();
    const before = createsFor('+15550004003');
    const first = await create(a, 'fleet-k3', '+15550004003');
    expect(first.status).toBe(503);
    expect(first.headers['x-breakwater-error']).toBe('idempotency_unavailable');
    expect(first.headers['retry-after']).toBe('1');
    expect(createsFor('+15550004003')).toBe(before);
    // Without a key there is nothing to check: the limiter falls back and the call goes through.
    const unkeyed = await request(b.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'x-client-id': 'fleet-app' },
      body: JSON.stringify({ assistantId: 'a1', customer: { number: '+15550004004' } }),
    });
    expect(unkeyed.status).toBe(201);
    // Redis back: the same key goes through once, and is replayed on the other replica.
    await redis.start();
    expect(await waitFor(() => [...clients].every((c) => c.status === 'ready'), { timeoutMs: 10000 })).toBe(true);
    // It came back empty (no persistence here): each replica reports the lost records.
    for (const p of [a, b])
      expect(
        await waitFor(async () => metricValue(await metricsText(p.adminPort), 'breakwater_idempotency_store_resets_total') === 1, { timeoutMs: 5000 }),
      ).toBe(true);
    const retried = await create(a, 'fleet-k3', '+15550004003');
    expect(retried.status).toBe(201);
    const again = await create(b, 'fleet-k3', '+15550004003');
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.text).toBe(retried.text);
    expect(createsFor('+15550004003')).toBe(1);
    for (const s of vapi.seen) expect(s.headers['idempotency-key']).toBeUndefined();
  });
});
