// 100 concurrent duplicates of one keyed create spread over 4 replicas on one Redis: the upstream
// sees one create, and every duplicate that got a 201 got that create's answer.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';
import { captureRedisClients, startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

describe('idempotency with 4 replicas and 100 concurrent duplicates', () => {
  let redis: RedisServer, vapi: FakeUpstream;
  const replicas: TestProxy[] = [];
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startRedis();
    vapi = await fakeUpstream('vapi');
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: randomUUID() }));
      }, 300);
    };
    const capture = captureRedisClients();
    try {
      for (let i = 0; i < 4; i++)
        replicas.push(
          await startProxy(
            { VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '100000', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url },
            policyWith(() => {}),
          ),
        );
    } finally {
      capture.restore();
    }
    clients = capture.clients;
    expect(await waitFor(() => clients.size >= 4 && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    for (const p of replicas) await p.close();
    await vapi?.close();
    await redis?.kill();
  });

  it('sends one create upstream', async () => {
    const body = JSON.stringify({ assistantId: 'a1', customer: { number: '+15550009001' } });
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        request(replicas[i % 4]!.proxyPort, 'POST', '/vapi/call', {
          headers: { 'content-type': 'application/json', 'idempotency-key': 'hundred', 'x-client-id': 'crowd' },
          body,
          timeoutMs: 20_000,
        }),
      ),
    );
    expect(vapi.seen.filter((s) => s.method === 'POST').length).toBe(1);
    const ok = answers.filter((r) => r.status === 201);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    for (const r of ok) expect(r.text).toBe(ok[0]!.text);
    // Nothing else is allowed: a wait that ran out (409) or a Redis too slow under the load (503).
    for (const r of answers) if (r.status !== 201) expect(['idempotency_in_flight', 'idempotency_unavailable']).toContain(r.headers['x-breakwater-error']);
  });
});
