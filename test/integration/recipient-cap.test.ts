// Per-recipient cap: a limit keyed on the body's `To` refuses the third message to one number
// within the hour, while other numbers are unaffected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM, policyWith } from '../support/policy.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = `/twilio/2010-04-01/Accounts/${accountSid('2')}/Messages.json`;

describe('recipient cap on body:To', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [{ name: 'per-recipient', route: 'POST /2010-04-01/Accounts/*/Messages.json', rate: 2, per: 3600, key: ['body:To'] }];
    });
    ({ twilio, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const send = (to: string, client: string) =>
    request(p.proxyPort, 'POST', MESSAGES, { headers: { ...FORM, 'x-client-id': client }, body: form({ From: '+15550001234', To: to, Body: 'hi' }) });

  it('refuses the third message to the same number, whoever sends it', async () => {
    expect((await send('+15557654321', 'app-a')).status).toBe(200);
    expect((await send('+15557654321', 'app-b')).status).toBe(200);
    const third = await send('+15557654321', 'app-c');
    expect(third.status).toBe(429);
    expect(third.headers['x-breakwater-error']).toBe('rate_limited');
    expect(third.headers['ratelimit-policy']).toBe('"per-recipient";q=2;w=3600');
    // The app is told which limit, and that it counts the recipient, not the client.
    const message = String((third.json as { message: string }).message);
    expect(message).toMatch(/^Rate limit "per-recipient" \(2 per 3600 s\) exceeded for this recipient \(To\); retry in \d+ s\.$/);
    expect(message).not.toContain('client');
    // The next slot is half an hour away (2 per hour).
    expect(Number(third.headers['retry-after'])).toBeGreaterThan(1700);
    expect(Number(third.headers['retry-after'])).toBeLessThanOrEqual(1800);
    expect(twilio.seen.length).toBe(2);
  });

  it('lets another number through', async () => {
    const r = await send('+15557650000', 'app-c');
    expect(r.status).toBe(200);
    expect(twilio.seen.length).toBe(3);
  });

  it('reads the key from a JSON body too', async () => {
    const json = (to: string) =>
      request(p.proxyPort, 'POST', MESSAGES, { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ To: to, Body: 'x' }) });
    expect((await json('+15557659999')).status).toBe(200);
    expect((await json('+15557659999')).status).toBe(200);
    expect((await json('+15557659999')).status).toBe(429);
  });
});
