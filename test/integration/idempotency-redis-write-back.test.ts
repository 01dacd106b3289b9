// A record that Redis would not take is not forgotten. Redis full (maxmemory + noeviction) or
// down when the original's answer is stored: the replica keeps it and re-publishes it until Redis
// takes it, so the app's retry on the other replica is replayed, not created again. With AOF
// persistence a Redis restart keeps the fleet's records.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { startRedis, startReplicas, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = policyWith((p) => {
  p.store.retryAfter = 0.2; // re-publish soon after Redis recovers
});

describe('idempotency records Redis could not take', () => {
  let redis: RedisServer, vapi: FakeUpstream, a: TestProxy, b: TestProxy, admin: Redis;
  let clients: Set<Redis>;
  let dir: string;
  let release: (() => void) | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'bw-aof-'));
    redis = await startRedis(undefined, ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, '--maxmemory-policy', 'noeviction']);
    admin = new Redis(redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => 50 });
    admin.on('error', () => {});
    vapi = await fakeUpstream('vapi');
    // Each create is held until the test has put Redis in the state it wants.
    vapi.handler = (_req, res) => {
      const answer = () => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: randomUUID() }));
      };
      if (release === undefined) answer();
      else release = answer;
    };
    ({ a, b, clients } = await startReplicas(
      { VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '1000', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url },
      POLICY,
    ));
    expect(await waitFor(() => clients.size >= 2 && [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  });
  afterAll(async () => {
    admin?.disconnect();
    await a?.close();
    await b?.close();
    await vapi?.close();
    await redis?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const create = (p: TestProxy, key: string, number: string) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-client-id': 'wb-app' },
      body: JSON.stringify({ assistantId: 'a1', customer: { number } }),
      timeoutMs: 20_000,
    });
  const createsFor = (number: string) => vapi.seen.filter((s) => s.method === 'POST' && s.body.toString().includes(number)).length;
  /** Starts a create on A and resolves once the upstream holds it (claimed in Redis). */
  const heldCreate = async (key: string, number: string) => {
    release = () => {};
    const original = create(a, key, number);
    expect(await waitFor(() => createsFor(number) === 1, { timeoutMs: 5000 })).toBe(true);
    return {
      original,
      answer: () => {
        const r = release!;
        release = undefined;
        r();
      },
    };
  };
  const ready = () => waitFor(() => [...clients].every((c) => c.status === 'ready'), { timeoutMs: 10_000 });

  it('re-publishes an answer that a full Redis refused, and the retry on B is replayed', async () => {
    const number = '+15550008001';
    const held = await heldCreate('wb-full', number);
    await admin.config('SET', 'maxmemory', '1'); // every write now fails with OOM
    held.answer();
    const first = await held.original;
    expect(first.status).toBe(201);
    // B's retry waits on A's claim (still in Redis) while the answer cannot be written.
    const retry = create(b, 'wb-full', number);
    await admin.config('SET', 'maxmemory', '0');
    const replayed = await retry;
    expect(replayed.status).toBe(201);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.text).toBe(first.text);
    expect(createsFor(number)).toBe(1);
  });

  it('re-publishes an answer stored while Redis was down, once it is back', async () => {
    const number = '+15550008002';
    const held = await heldCreate('wb-down', number);
    await redis.kill();
    held.answer();
    const first = await held.original;
    expect(first.status).toBe(201);
    await redis.start(); // AOF: A's claim survives the restart, so B waits for the answer
    expect(await ready()).toBe(true);
    const replayed = await create(b, 'wb-down', number);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.text).toBe(first.text);
    expect(createsFor(number)).toBe(1);
  });

  it('keeps stored answers across a Redis restart with AOF on', async () => {
    const number = '+15550008003';
    const first = await create(a, 'wb-aof', number);
    expect(first.status).toBe(201);
    expect(await waitFor(async () => (await admin.dbsize().catch(() => 0)) > 0, { timeoutMs: 5000 })).toBe(true);
    await redis.kill();
    await redis.start();
    expect(await ready()).toBe(true);
    const replayed = await create(b, 'wb-aof', number);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.text).toBe(first.text);
    expect(createsFor(number)).toBe(1);
    // Its data came back with it: no replica reports lost records.
    for (const p of [a, b]) expect(metricValue(await metricsText(p.adminPort), 'breakwater_idempotency_store_resets_total')).toBe(0);
  });
});
