// The fleet-wide cap on Vapi: Vapi limits concurrency per org and refuses beyond it with HTTP
// 400 `{"error":"Over Concurrency Limit"}`. With `bulkhead.fleet` on the vapi upstream, three
// sidecars on one Redis keep a fake Vapi allowing L concurrent call creations within L under a
// burst of 10 × L at once: no refusal, every call created. The cap is keyed by a hash of the API
// key (an org), never the key itself; a refusal lowers it for a while, as a 429 does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';
import { captureRedisClients, startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const L = 4;
const REPLICAS = 3;
const API_KEY = 'vapi-org-key-0123456789';
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  p.store.replicas = REPLICAS;
  p.upstreams.vapi.bulkhead = { maxConcurrent: L, queue: 1000, queueTimeout: 20, fleet: true, leaseTimeout: 10 };
});

describe('fleet-wide Vapi concurrency cap', () => {
  let redis: RedisServer, vapi: FakeUpstream, twilio: FakeUpstream;
  const proxies: TestProxy[] = [];
  let inFlight = 0;
  let maxSeen = 0;
  let refused = 0;
  let leasesKey: string | undefined;
  beforeAll(async () => {
    redis = await startRedis();
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
    vapi.handler = (_req, res) => {
      if (inFlight >= L) {
        refused++;
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"Over Concurrency Limit"}');
        return;
      }
      inFlight++;
      maxSeen = Math.max(maxSeen, inFlight);
      setTimeout(() => {
        inFlight--;
        res.writeHead(201, { 'content-type': 'application/json' }).end('{"id":"call-1","status":"queued"}');
      }, 40);
    };
    const capture = captureRedisClients();
    try {
      for (let i = 0; i < REPLICAS; i++) {
        proxies.push(
          await startProxy(
            {
              TWILIO_BASE_URL: twilio.url,
              VAPI_BASE_URL: vapi.url,
              VAPI_API_KEY: API_KEY,
              RATE_LIMIT_PER_MINUTE: '100000',
              RATE_LIMIT_STORE: 'redis',
              REDIS_URL: redis.url,
            },
            POLICY,
          ),
        );
      }
    } finally {
      capture.restore();
    }
    expect(await waitFor(() => [...capture.clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  }, 30_000);
  afterAll(async () => {
    for (const p of proxies) await p.close();
    await vapi?.close();
    await twilio?.close();
    await redis?.kill();
  });

  it('keeps call creations across the fleet within the limit and creates every call', async () => {
    const statuses: number[] = [];
    // The leases set exists only while slots are held (Redis drops an empty set): watch it during the burst.
    const r = new Redis(redis.url);
    const seen = new Set<string>();
    let watching = true;
    const watch = (async () => {
      for (let i = 0; i < 2000 && watching; i++) {
        for (const k of await r.keys('bw:sem:vapi:*')) seen.add(k);
        await new Promise((done) => setTimeout(done, 10));
      }
    })();
    for (let wave = 0; wave < 3; wave++) {
      const answers = await Promise.all(
        Array.from({ length: 10 * L }, (_, i) =>
          request(proxies[i % REPLICAS]!.proxyPort, 'POST', '/vapi/call', {
            headers: { 'content-type': 'application/json' },
            body: '{"assistantId":"a1"}',
            timeoutMs: 30_000,
          }),
        ),
      );
      statuses.push(...answers.map((a) => a.status));
    }
    expect(statuses.length).toBe(30 * L);
    expect(refused).toBe(0);
    expect(maxSeen).toBeLessThanOrEqual(L);
    expect(statuses.every((s) => s === 201)).toBe(true);
    watching = false;
    await watch;
    // One semaphore for the API key's org, named by the key's hash.
    try {
      const keys = [...seen];
      expect(keys.every((k) => /^bw:sem:vapi:\{vapi:[A-Za-z0-9_-]{16}\}:(leases|peak)$/.test(k))).toBe(true);
      expect(keys.some((k) => k.includes(API_KEY))).toBe(false);
      const leases = keys.filter((k) => k.endsWith(':leases'));
      expect(leases.length).toBe(1);
      leasesKey = leases[0]!;
    } finally {
      r.disconnect();
    }
  }, 60_000);

  it('lowers the fleet cap on an "Over Concurrency Limit" refusal, as on a 429', async () => {
    expect(leasesKey).toBeDefined();
    const capKey = leasesKey!.replace(/:leases$/, ':cap');
    const r = new Redis(redis.url);
    try {
      expect(await r.get(capKey)).toBeNull();
      // Another org's calls hold the rest of the limit now.
      vapi.handler = (_req, res) => {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"Over Concurrency Limit"}');
      };
      const a = await request(proxies[0]!.proxyPort, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{"assistantId":"a1"}' });
      expect(a.headers['x-breakwater-error']).toBe('upstream_rate_limited');
      expect(await waitFor(async () => (await r.get(capKey)) !== null, { timeoutMs: 2000 })).toBe(true);
      const cap = Number(await r.get(capKey));
      expect(cap).toBeGreaterThanOrEqual(1);
      expect(cap).toBeLessThan(L);
    } finally {
      r.disconnect();
    }
  });
});
