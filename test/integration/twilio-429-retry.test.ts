// Twilio documents 429 (error 20429) as "not processed": the request did nothing, so even a
// message create may be sent again. The sidecar retries it (back-off, retry budget) instead of
// leaving that to SDK retries; a 429 that persists reaches the app as Twilio's own answer and
// starts the account's hold. Never a breaker failure. Opt-in: `retry.unprocessed: [429]`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'To=%2B15558675310&From=%2B15017122661&Body=hi' };
const TOO_MANY = JSON.stringify({ code: 20429, message: 'Too Many Requests', status: 429 });

describe('Twilio 429 (20429) on a create', () => {
  let tw: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // Opt-in (the default policy has the line commented): the hold tests expect a 429 untouched.
    // The retry stage's immediate retries alone: the hold's own second send is off here.
    const policy = DEFAULT_POLICY.replace('# unprocessed: [429]', 'unprocessed: [429]').replace('retryWithin: 2 ', 'retryWithin: 0 ');
    expect(policy).toContain('\n      unprocessed: [429]');
    ({ twilio: tw, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  it('is retried for POST: the app sees the create succeed, Twilio saw two POSTs', async () => {
    let n = 0;
    tw.handler = (_req, res) => {
      n++;
      if (n === 1) {
        res.writeHead(429, { 'content-type': 'application/json' });
        res.end(TOO_MANY);
      } else {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end('{"sid":"SM1","status":"queued"}');
      }
    };
    const r = await request(p.proxyPort, 'POST', MESSAGES, form);
    expect(r.status).toBe(201);
    expect(JSON.parse(r.text)).toMatchObject({ sid: 'SM1' });
    expect(r.headers['x-breakwater-retries']).toBe('1');
    expect(n).toBe(2);
  });

  it("a 429 that persists reaches the app as Twilio's own 20429, then the account is held; the breaker never counts it", async () => {
    tw.handler = (_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json' });
      res.end(TOO_MANY);
    };
    const r = await request(p.proxyPort, 'POST', '/twilio/2010-04-01/Accounts/AC2/Messages.json', form);
    expect(r.status).toBe(429);
    expect(r.headers['x-breakwater-error']).toBeUndefined();
    expect(JSON.parse(r.text)).toMatchObject({ code: 20429 });
    const held = await request(p.proxyPort, 'POST', '/twilio/2010-04-01/Accounts/AC2/Messages.json', form);
    expect(held.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    const text = await metricsText(p.adminPort);
    expect(text).toMatch(/circuit_breaker_failures_total\{service="twilio"\} 0/);
  });
});
