// A slow Redis is not "no record". Replica A stores a create's answer; Redis then stalls
// (DEBUG SLEEP) while the app's retry reaches replica B. A stall inside the idempotency store's
// own wait (store.idempotencyTimeout, here the 1.5 s default, far above the limiter's 50 ms)
// delays the retry and replays; a longer one leaves B unable to know, so B sends nothing and
// answers 503 idempotency_unavailable with Retry-After. Either way the upstream sees one create.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

// The limiter keeps its 50 ms default: the idempotency wait must not be bound to it.
const POLICY = policyWith(() => {});

describe('idempotency while Redis stalls', () => {
  let redis: RedisServer, vapi: FakeUpstream, a: TestProxy, b: TestProxy, admin: Redis, probe: Redis;
  let clients: Set<Redis>;
  let delayMs = 0;
  beforeAll(async () => {
    redis = await startRedis(undefined, ['--enable-debug-command', 'local']);
    admin = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    probe = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    expect([await admin.ping(), await probe.ping()]).toEqual(['PONG', 'PONG']);
    vapi = await fakeUpstream('vapi');
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: randomUUID(), status: 'queued' }));
      }, delayMs);
    };
    ({ a, b, clients } = await startReplicas(
      { VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '1000', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url },
      POLICY,
    ));
    expect(await waitFor(() => clients.size >= 2 && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    admin?.disconnect();
    probe?.disconnect();
    await a?.close();
    await b?.close();
    await vapi?.close();
    await redis?.kill();
  });

  const create = (p: TestProxy, key: string, number: string) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-client-id': 'stall-app' },
      body: JSON.stringify({ assistantId: 'a1', customer: { number } }),
      timeoutMs: 10_000,
    });
  const createsFor = (number: string) => vapi.seen.filter((s) => s.method === 'POST' && s.body.toString().includes(number)).length;
  /** Stalls Redis for `seconds`; resolves once it has begun, with a promise of its end. */
  const stall = async (seconds: number) => {
    const over = admin.call('DEBUG', 'SLEEP', String(seconds));
    // The stall has begun once a PING on another connection goes unanswered for 40 ms.
    const stalled = await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(true), 40);
          void probe.ping().then(() => {
            clearTimeout(t);
            resolve(false);
          });
        }),
      { timeoutMs: 1000, everyMs: 1 },
    );
    expect(stalled).toBe(true);
    return { over };
  };
  const healthy = () =>
    waitFor(async () => (await admin.ping().catch(() => '')) === 'PONG' && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 10_000 });

  for (const seconds of [0.06, 0.5]) {
    it(`replays on B after a ${seconds} s stall, within the store's own wait`, async () => {
      const number = `+1555000${Math.round(seconds * 1000)}1`;
      const key = `stall-${seconds}`;
      const first = await create(a, key, number);
      expect(first.status).toBe(201);
      const { over } = await stall(seconds);
      const retry = await create(b, key, number);
      await over;
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.text).toBe(first.text);
      expect(createsFor(number)).toBe(1);
      expect(await healthy()).toBe(true);
    });
  }

  it('answers 503 idempotency_unavailable on B during a 2 s stall, then replays once Redis answers', async () => {
    const number = '+15550002001';
    const first = await create(a, 'stall-2', number);
    expect(first.status).toBe(201);
    const { over } = await stall(2);
    const during = await create(b, 'stall-2', number);
    expect(during.status).toBe(503);
    expect(during.headers['x-breakwater-error']).toBe('idempotency_unavailable');
    expect(during.headers['retry-after']).toBe('1');
    await over;
    expect(await healthy()).toBe(true);
    const after = await create(b, 'stall-2', number);
    expect(after.status).toBe(201);
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(after.text).toBe(first.text);
    expect(createsFor(number)).toBe(1);
  });

  it('sends one create when Redis stalls 2 s mid-request, with duplicates on both replicas', async () => {
    const number = '+15550002002';
    delayMs = 300;
    try {
      const original = create(a, 'stall-mid', number);
      expect(await waitFor(() => createsFor(number) === 1, { timeoutMs: 5000 })).toBe(true);
      const { over } = await stall(2);
      const during = await Promise.all([create(b, 'stall-mid', number), create(b, 'stall-mid', number)]);
      const first = await original;
      expect(first.status).toBe(201);
      for (const r of during) expect(['idempotency_unavailable', undefined]).toContain(r.headers['x-breakwater-error']);
      await over;
      expect(await healthy()).toBe(true);
      // A's answer write was queued behind the stall; it lands, and B replays it.
      expect(await waitFor(async () => (await create(b, 'stall-mid', number)).headers['idempotent-replayed'] === 'true', { timeoutMs: 5000 })).toBe(true);
      expect(createsFor(number)).toBe(1);
    } finally {
      delayMs = 0;
    }
  });
});
