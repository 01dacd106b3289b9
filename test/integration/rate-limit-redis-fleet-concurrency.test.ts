// The fleet-wide Twilio concurrency cap, end to end: four sidecars on one Redis in front of a
// fake Twilio that allows N concurrent requests per account and answers 20429 beyond it. Under
// a burst of 10 × N at once, repeated, the fleet keeps within N: no 20429 reaches the app, and
// every request is answered 200 (over-cap requests wait in the bounded queue instead).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';
import { captureRedisClients, startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const N = 5;
const SID = 'AC' + '0'.repeat(32);
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  p.store.replicas = 4;
  p.upstreams.twilio.bulkhead = { maxConcurrent: N, queue: 1000, queueTimeout: 20, fleet: true, leaseTimeout: 10 };
});

describe('fleet-wide Twilio concurrency cap', () => {
  let redis: RedisServer, up: FakeUpstream;
  const proxies: TestProxy[] = [];
  let inFlight = 0;
  let maxSeen = 0;
  let over = 0;
  beforeAll(async () => {
    redis = await startRedis();
    up = await fakeUpstream('twilio');
    up.handler = (_req, res) => {
      if (inFlight >= N) {
        over++;
        res.writeHead(429, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 20429, message: 'Too Many Requests', status: 429 }));
        return;
      }
      inFlight++;
      maxSeen = Math.max(maxSeen, inFlight);
      setTimeout(() => {
        inFlight--;
        res.writeHead(201, { 'content-type': 'application/json' }).end('{"sid":"SM1"}');
      }, 40);
    };
    const capture = captureRedisClients();
    try {
      for (let i = 0; i < 4; i++)
        proxies.push(await startProxy({ TWILIO_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '100000', RATE_LIMIT_STORE: 'redis', REDIS_URL: redis.url }, POLICY));
    } finally {
      capture.restore();
    }
    expect(await waitFor(() => [...capture.clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  }, 30_000);
  afterAll(async () => {
    for (const p of proxies) await p.close();
    await up?.close();
    await redis?.kill();
  });

  it('sends no request over the cap under 10 × N at once, and loses none', async () => {
    const statuses: number[] = [];
    for (let wave = 0; wave < 4; wave++) {
      const answers = await Promise.all(
        Array.from({ length: 10 * N }, (_, i) =>
          request(proxies[i % 4]!.proxyPort, 'POST', `/twilio/2010-04-01/Accounts/${SID}/Messages.json`, {
            headers: { authorization: 'Basic ' + Buffer.from(`${SID}:x`).toString('base64'), 'content-type': 'application/x-www-form-urlencoded' },
            body: 'To=%2B15550100&From=%2B15550101&Body=hi',
            timeoutMs: 30_000,
          }),
        ),
      );
      statuses.push(...answers.map((a) => a.status));
    }
    expect(statuses.length).toBe(40 * N);
    expect(over).toBe(0);
    expect(maxSeen).toBeLessThanOrEqual(N);
    expect(statuses.every((s) => s === 201)).toBe(true);
  }, 60_000);
});
