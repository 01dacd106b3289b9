// After Twilio answers 429 for an account, Breakwater holds that account locally until the
// upstream's Retry-After (delta-seconds or HTTP-date) or a default back-off: further requests get
// 429 upstream_rate_limited with Retry-After and never reach Twilio. Other accounts go on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM } from '../support/policy.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, sleep, type Answer, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('hold after an upstream 429', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // The hold itself: no second send after it (twilio-429-resend-after-hold.test.ts has that).
    const policy = DEFAULT_POLICY.replace('retryWithin: 2 ', 'retryWithin: 0 ');
    expect(policy).toContain('retryWithin: 0 ');
    ({ twilio, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' }, policy }));
  });
  afterAll(() => harness?.close());

  const send = (account: string) =>
    request(p.proxyPort, 'POST', `/twilio/2010-04-01/Accounts/${account}/Messages.json`, { headers: FORM, body: form({ To: '+15550000001', Body: 'x' }) });
  const callsTo = (account: string) => twilio.seen.filter((s) => s.url.includes(account)).length;

  /** Makes the upstream answer one 429 for `account` with the given Retry-After, then go back to ok. */
  async function upstream429(account: string, retryAfter: string | undefined): Promise<Answer> {
    twilio.mode = '429';
    twilio.retryAfter = retryAfter;
    const r = await send(account);
    twilio.mode = 'ok';
    twilio.retryAfter = undefined;
    return r;
  }

  function expectHeld(r: Answer, maxRetryAfter: number): number {
    expect(r.status).toBe(429);
    expect(r.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    expect(r.json).toMatchObject({ code: 'upstream_rate_limited', status: 429, upstream: 'twilio' });
    const ra = Number(r.headers['retry-after']);
    expect(ra).toBeGreaterThanOrEqual(1);
    expect(ra).toBeLessThanOrEqual(maxRetryAfter);
    return ra;
  }

  it('holds the account for Retry-After seconds, then lets it through', async () => {
    const acct = accountSid('a1');
    const first = await upstream429(acct, '2');
    // The upstream's own 429 is passed through as it is.
    expect(first.status).toBe(429);
    expect(first.headers['x-breakwater-error']).toBeUndefined();
    expect(first.json).toMatchObject({ code: 20429 });
    expect(callsTo(acct)).toBe(1);

    const held = await send(acct);
    // 2 s plus at most 10 % jitter, rounded up.
    const ra = expectHeld(held, 3);
    expect(callsTo(acct)).toBe(1);

    // Another account is not held.
    const other = accountSid('b1');
    expect((await send(other)).status).toBe(200);
    expect(callsTo(other)).toBe(1);

    // The hold ends: bounded wait, guided by the Retry-After we were given.
    await sleep(ra * 1000 - 800);
    let after: Answer | undefined;
    for (let i = 0; i < 20; i++) {
      after = await send(acct);
      if (after.status === 200) break;
      expectHeld(after, 3);
      await sleep(100);
    }
    expect(after?.status).toBe(200);
    expect(callsTo(acct)).toBe(2);
  });

  it('honours an HTTP-date Retry-After', async () => {
    const acct = accountSid('a2');
    const at = new Date(Date.now() + 5000).toUTCString();
    expect((await upstream429(acct, at)).status).toBe(429);
    const held = await send(acct);
    // HTTP-dates have whole seconds: 4–5 s from now, plus jitter; well above the 1 s default.
    const ra = expectHeld(held, 6);
    expect(ra).toBeGreaterThanOrEqual(3);
    expect(callsTo(acct)).toBe(1);
  });

  it('applies a default back-off when the upstream gives no Retry-After', async () => {
    const acct = accountSid('a3');
    expect((await upstream429(acct, undefined)).status).toBe(429);
    const held = await send(acct);
    expectHeld(held, 2); // defaultHold 1 s plus jitter
    expect(callsTo(acct)).toBe(1);
    let after: Answer | undefined;
    for (let i = 0; i < 30; i++) {
      await sleep(100);
      after = await send(acct);
      if (after.status === 200) break;
    }
    expect(after?.status).toBe(200);
    expect(callsTo(acct)).toBe(2);
  });

  it('exports holds and held requests as metrics', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_upstream_holds_total', { upstream: 'twilio' })).toBe(3);
    expect(metricValue(text, 'breakwater_upstream_held_requests_total', { upstream: 'twilio' })).toBeGreaterThanOrEqual(3);
    // The a2 hold (4–5 s) is still active; the others have ended.
    expect(metricValue(text, 'breakwater_upstream_holds_active', { upstream: 'twilio' })).toBe(1);
    // A 429 is back-pressure, not an outage: the breaker never counted it.
    expect(metricValue(text, 'circuit_breaker_failures_total', { service: 'twilio' })).toBe(0);
  });
});
