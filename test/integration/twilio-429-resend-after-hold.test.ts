// Twilio documents 429 (error 20429) as "not processed": nothing was created, so even a message
// create may be sent again. With the shipped policy (`holdOn429.retryWithin: 2`) the hold a 429
// starts is waited out and the request sent once more, whatever its method, when that hold is
// short and the retry budget allows (Envoy's rate_limited_retry_back_off); a longer Retry-After,
// or a second 429, reaches the app as Twilio's own answer. Never a breaker failure.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM } from '../support/policy.js';
import { metricsText, metricValue, request, sleep, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const TOO_MANY = JSON.stringify({ code: 20429, message: 'Too Many Requests', status: 429 });

describe('a Twilio 429 is sent once more after a short hold', () => {
  let tw: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  let script: { status: number; retryAfter?: string }[] = [];
  beforeAll(async () => {
    ({ twilio: tw, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' } }));
  });
  beforeEach(() => {
    tw.seen.length = 0;
    // Answers in order from `script`, then 201s.
    tw.handler = (_req, res) => {
      const next = script.shift() ?? { status: 201 };
      if (next.status === 429) {
        res.writeHead(429, { 'content-type': 'application/json', ...(next.retryAfter ? { 'retry-after': next.retryAfter } : {}) });
        return res.end(TOO_MANY);
      }
      res.writeHead(next.status, { 'content-type': 'application/json' });
      res.end('{"sid":"SM1","status":"queued"}');
    };
  });
  afterAll(() => harness?.close());

  const create = (account: string, headers: Record<string, string> = {}) =>
    request(p.proxyPort, 'POST', `/twilio/2010-04-01/Accounts/${account}/Messages.json`, {
      headers: { ...FORM, ...headers },
      body: form({ To: '+15550000001', Body: 'x' }),
    });
  const posts = () => tw.seen.filter((s) => s.method === 'POST').length;

  it('waits out the default one-second hold and sends the create again: the app sees it created', async () => {
    script = [{ status: 429 }];
    const t0 = performance.now();
    const r = await create(accountSid('r1'));
    const waited = performance.now() - t0;
    expect(r.status).toBe(201);
    expect(posts()).toBe(2);
    expect(waited).toBeGreaterThanOrEqual(950);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_retries_total', { upstream: 'twilio', reason: 'upstream_429' })).toBe(1);
    expect(metricValue(text, 'circuit_breaker_failures_total', { service: 'twilio' })).toBe(0);
    await sleep(100);
    const line = p
      .logLines()
      .filter((l) => l.msg === 'request' && l.status === 201)
      .at(-1)!;
    expect(line.retries).toBe(1);
    // The 201 ended the account's hold: the next create goes straight through.
    expect((await create(accountSid('r1'))).status).toBe(201);
    expect(posts()).toBe(3);
  });

  it('relays a 429 whose Retry-After is longer than retryWithin, and holds the account', async () => {
    script = [{ status: 429, retryAfter: '7' }];
    const r = await create(accountSid('r2'));
    expect(r.status).toBe(429);
    expect(r.headers['x-breakwater-error']).toBeUndefined();
    expect(r.json).toMatchObject({ code: 20429 });
    expect(posts()).toBe(1);
    const held = await create(accountSid('r2'));
    expect(held.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    expect(posts()).toBe(1);
  });

  it("sends at most once more: a 429 that persists reaches the app as Twilio's own", async () => {
    script = [{ status: 429 }, { status: 429 }, { status: 429 }];
    const r = await create(accountSid('r3'));
    expect(r.status).toBe(429);
    expect(r.json).toMatchObject({ code: 20429 });
    expect(posts()).toBe(2);
    // Two strikes: the account is held for longer now.
    const held = await create(accountSid('r3'));
    expect(held.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    expect(Number(held.headers['retry-after'])).toBeGreaterThanOrEqual(2);
    expect(posts()).toBe(2);
    script = [];
  });

  it('a keyed create that met a 429 is still created once, and its repeat replayed', async () => {
    script = [{ status: 429 }];
    const key = { 'idempotency-key': 'resend-after-hold-1' };
    const first = await create(accountSid('r4'), key);
    expect(first.status).toBe(201);
    const again = await create(accountSid('r4'), key);
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    // Two POSTs reached Twilio, and the first of them was not processed (its 429).
    expect(posts()).toBe(2);
  });

  it("a keyed create whose 429 persists keeps its key usable: the app's retry is sent, not a replayed 429", async () => {
    script = [{ status: 429 }, { status: 429 }];
    const key = { 'idempotency-key': 'resend-after-hold-2' };
    const first = await create(accountSid('r5'), key);
    expect(first.status).toBe(429);
    expect(posts()).toBe(2);
    await sleep(2300); // the two-strike hold (2 s, jittered) passes
    const retry = await create(accountSid('r5'), key);
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(posts()).toBe(3);
  });
});
