// Phone numbers used as limit or hold keys never show up whole in logs or metrics: log lines
// carry the last four digits only (`********5310`), metrics never carry them at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM, policyWith } from '../support/policy.js';
import { metricsText, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SENDER = '+15558675310';
const RECIPIENT = '+15551230042';
const HELD_SENDER = '+15559990077';
const MESSAGES = `/twilio/2010-04-01/Accounts/${accountSid('3')}/Messages.json`;

const masked = (n: string) => `${'*'.repeat(n.length - 4)}${n.slice(-4)}`;
/** Every way a number could leak: as sent, without the +, without the country code, form-encoded. */
const forms = (n: string) => [n, n.slice(1), n.slice(2), encodeURIComponent(n)];

describe('phone numbers are masked', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      const route = 'POST /2010-04-01/Accounts/*/Messages.json';
      pol.upstreams.twilio.rateLimits = [
        { name: 'per-recipient-trial', route, rate: 1, per: 3600, key: ['body:To'], shadow: true },
        { name: 'per-sender', route, rate: 2, per: 3600, key: ['body:From'] },
      ];
      pol.upstreams.twilio.holdOn429 = { key: ['body:From'] };
    });
    ({ twilio, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const send = (from: string, to: string) => request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ From: from, To: to, Body: 'code 1234' }) });

  it('logs a shadow limit on body:To with the masked number', async () => {
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await send(SENDER, RECIPIENT)).status);
    expect(statuses).toEqual([200, 200, 429]); // per-sender enforces; per-recipient only logs
    const shadow = p.logLines().filter((l) => l.limit === 'per-recipient-trial');
    expect(shadow.length).toBe(2);
    for (const l of shadow) expect(l.key).toBe(masked(RECIPIENT));
    expect(masked(RECIPIENT)).toMatch(/^\*+0042$/);
  });

  it('logs an upstream-429 hold on body:From with the masked number', async () => {
    twilio.mode = '429';
    twilio.retryAfter = '30';
    expect((await send(HELD_SENDER, '+15550000001')).status).toBe(429);
    twilio.mode = 'ok';
    const held = await send(HELD_SENDER, '+15550000002');
    expect(held.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    const holdLine = p.logLines().find((l) => /holding/.test(String(l.msg)));
    expect(holdLine?.key).toBe(masked(HELD_SENDER));
  });

  it('never writes a whole number to the logs or the metrics', async () => {
    const logs = p.logs.join('');
    const metrics = await metricsText(p.adminPort);
    expect(logs).toContain(masked(RECIPIENT));
    for (const n of [SENDER, RECIPIENT, HELD_SENDER]) {
      for (const f of forms(n)) {
        expect(logs).not.toContain(f);
        expect(metrics).not.toContain(f);
      }
    }
  });
});

describe('phone numbers in composite keys are masked too', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      const route = 'POST /2010-04-01/Accounts/*/Messages.json';
      pol.upstreams.twilio.rateLimits = [{ name: 'account-recipient-trial', route, rate: 1, per: 3600, key: ['account', 'body:To'], shadow: true }];
      pol.upstreams.twilio.holdOn429 = { key: ['account', 'body:From'] };
    });
    ({ twilio, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  it('keeps [account, body:…] keys out of the logs', async () => {
    const send = () => request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ From: SENDER, To: RECIPIENT, Body: 'x' }) });
    expect((await send()).status).toBe(200);
    twilio.mode = '429';
    expect((await send()).status).toBe(429); // shadow-logs the recipient key, and starts a hold on the sender key
    const logs = p.logs.join('');
    expect(p.logLines().some((l) => l.limit === 'account-recipient-trial')).toBe(true);
    expect(p.logLines().some((l) => /holding/.test(String(l.msg)))).toBe(true);
    for (const n of [SENDER, RECIPIENT]) for (const f of forms(n)) expect(logs).not.toContain(f);
  });
});

describe('account SIDs and phone-number client ids are masked in log lines', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  const SID = accountSid('7');
  beforeAll(async () => {
    ({ twilio, p } = harness = await withProxy());
  });
  afterAll(() => harness?.close());

  it('the default per-account 429 hold logs the SID as AC…<last four>, and an X-Client-Id phone number is masked', async () => {
    twilio.mode = '429';
    twilio.retryAfter = '30';
    const path = `/twilio/2010-04-01/Accounts/${SID}/Messages.json`;
    expect((await request(p.proxyPort, 'POST', path, { headers: { ...FORM, 'x-client-id': SENDER }, body: form({ To: RECIPIENT, Body: 'x' }) })).status).toBe(
      429,
    );
    twilio.mode = 'ok';
    const holdLine = p.logLines().find((l) => /holding/.test(String(l.msg)));
    expect(holdLine?.key).toBe(`AC…${SID.slice(-4)}`);
    const access = p.logLines().find((l) => l.msg === 'request');
    expect(access?.client).toBe(masked(SENDER));
    const logs = p.logs.join('');
    expect(logs).not.toContain(SID);
    for (const f of forms(SENDER)) expect(logs).not.toContain(f);
  });
});
