// `Twilio-Concurrent-Requests` fed back into the fleet-wide cap. Callers outside the fleet share
// the Twilio account: the fake Twilio counts OUTSIDE of them always in flight, allows N per
// account in all and answers 20429 beyond. The fleet is configured for N, which is too many. On
// the account whose answers carry the header, the fleet learns from a few calls that OUTSIDE
// slots are taken and keeps to N − OUTSIDE under a 10× burst: no 20429 at all, every request
// answered. On the account whose answers do not (the 429 lowering alone), 20429s get through.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, policyWith } from '../support/policy.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';
import { captureRedisClients, startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const N = 8;
const OUTSIDE = 3;
const REPORTING = accountSid('1');
const SILENT = accountSid('2');
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  p.store.replicas = 4;
  p.upstreams.twilio.bulkhead = { maxConcurrent: N, queue: 1000, queueTimeout: 20, fleet: true, leaseTimeout: 10 };
});

describe('Twilio-Concurrent-Requests feedback into the fleet cap', () => {
  let redis: RedisServer, up: FakeUpstream;
  const proxies: TestProxy[] = [];
  const inFlight = new Map<string, number>();
  const over = new Map<string, number>();
  beforeAll(async () => {
    redis = await startRedis();
    up = await fakeUpstream('twilio');
    up.handler = (req, res) => {
      const account = /Accounts\/(AC\w+)\//.exec(req.url ?? '')?.[1] ?? '';
      const reports = account === REPORTING;
      const now = inFlight.get(account) ?? 0;
      if (now + OUTSIDE >= N) {
        over.set(account, (over.get(account) ?? 0) + 1);
        const h: Record<string, string> = { 'content-type': 'application/json' };
        if (reports) h['twilio-concurrent-requests'] = String(now + OUTSIDE);
        res.writeHead(429, h).end(JSON.stringify({ code: 20429, message: 'Too Many Requests', status: 429 }));
        return;
      }
      inFlight.set(account, now + 1);
      setTimeout(() => {
        const h: Record<string, string> = { 'content-type': 'application/json' };
        // Counted as Twilio would when answering: this request is still in flight.
        if (reports) h['twilio-concurrent-requests'] = String((inFlight.get(account) ?? 0) + OUTSIDE);
        inFlight.set(account, (inFlight.get(account) ?? 1) - 1);
        res.writeHead(201, h).end('{"sid":"SM1"}');
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

  const send = (i: number, sid: string) =>
    request(proxies[i % 4]!.proxyPort, 'POST', `/twilio/2010-04-01/Accounts/${sid}/Messages.json`, {
      headers: { authorization: 'Basic ' + Buffer.from(`${sid}:x`).toString('base64'), 'content-type': 'application/x-www-form-urlencoded' },
      body: 'To=%2B15550100&From=%2B15550101&Body=hi',
      timeoutMs: 30_000,
    });

  /** A few calls one at a time (the fleet's normal trickle), then three bursts of 10 × N at once. */
  async function traffic(sid: string): Promise<number[]> {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await send(i, sid)).status);
    for (let wave = 0; wave < 3; wave++) {
      const answers = await Promise.all(Array.from({ length: 10 * N }, (_, i) => send(i, sid)));
      statuses.push(...answers.map((a) => a.status));
    }
    return statuses;
  }

  it('keeps to N − outside callers when the answers report them, and sends fewer 20429s than the 429 lowering alone', async () => {
    const silent = await traffic(SILENT);
    const reporting = await traffic(REPORTING);
    const r = new Redis(redis.url);
    const learned = await r.get(`bw:sem:twilio:{${REPORTING}}:cap`).finally(() => r.disconnect());
    const silentOver = over.get(SILENT) ?? 0;
    const reportingOver = over.get(REPORTING) ?? 0;
    console.log(
      `20429s with 3 outside callers, N=${N}, 4 replicas, ${reporting.length} requests: header fed back ${reportingOver} (cap held at ${learned}), 429 lowering alone ${silentOver}`,
    );
    expect(silentOver).toBeGreaterThan(0);
    expect(reportingOver).toBeLessThan(silentOver);
    expect(reportingOver).toBe(0);
    // Learned from the header exactly: the answers of a burst, counted against the fleet's recent
    // peak, never overcount the outside callers (which would waste the account's slots).
    expect(Number(learned)).toBe(N - OUTSIDE);
    expect(reporting.every((s) => s === 201)).toBe(true);
    expect(silent.length).toBe(reporting.length);
  }, 90_000);
});
