// A body field a limit key reads must appear once. With `To` twice the proxy keyed on one copy
// (URLSearchParams.get takes the first form value, JSON.parse the last duplicate key) while the
// upstream may send to the other: the per-recipient cap was bypassed one message at a time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, FORM, JSON_TYPE, policyWith } from '../support/policy.js';
import { metricsText, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const ACCOUNT = accountSid('19');
const MESSAGES = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
const CALLS = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Calls.json`;

describe('repeated key fields in a body', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [{ name: 'per-recipient', route: 'POST /2010-04-01/Accounts/*/Messages.json', rate: 2, per: 3600, key: ['body:To'] }];
      pol.upstreams.vapi.rateLimits = [{ name: 'per-customer', rate: 100, per: 60, key: ['body:customer.number'] }];
    });
    ({ twilio, vapi, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const post = (path: string, body: string, headers: Record<string, string> = FORM) => request(p.proxyPort, 'POST', path, { headers, body });
  const badRequests = async () => {
    let sum = 0;
    for (const line of (await metricsText(p.adminPort)).split('\n')) {
      if (line.startsWith('breakwater_requests_total{') && line.includes('upstream="twilio"') && line.includes('outcome="bad_request"'))
        sum += Number(line.split(' ').at(-1));
    }
    return sum;
  };

  function expectRefused(r: Awaited<ReturnType<typeof post>>, field: string) {
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
    expect((r.json as { message: string }).message).toContain(`"${field}"`);
  }

  it('refuses a form with To twice, in any spelling a parser reads as To, and forwards none of them', async () => {
    const before = twilio.seen.length;
    const counted = await badRequests();
    const bodies = [
      'From=%2B15550001234&To=%2B15551110000&To=%2B15552220000&Body=hi',
      // `%54o` is `To` to every form parser.
      'From=%2B15550001234&To=%2B15551110000&%54o=%2B15552220000&Body=hi',
      // PHP/Rails-style and case variants: some parsers fold them into To.
      'From=%2B15550001234&To=%2B15551110000&To%5B%5D=%2B15552220000&Body=hi',
      'From=%2B15550001234&To=%2B15551110000&to=%2B15552220000&Body=hi',
    ];
    for (const b of bodies) expectRefused(await post(MESSAGES, b), 'To');
    expect(twilio.seen.length).toBe(before);
    expect(await badRequests()).toBe(counted + bodies.length);
    expect(p.logLines().filter((l) => l.upstream === 'twilio' && l.status === 400 && l.outcome === 'bad_request').length).toBeGreaterThanOrEqual(bodies.length);
  });

  it('keys a percent-encoded field name on its decoded name: the cap still counts it', async () => {
    const to = '%2B15553330000';
    expect((await post(MESSAGES, `To=${to}&Body=a`)).status).toBe(200);
    expect((await post(MESSAGES, `%54o=${to}&Body=b`)).status).toBe(200);
    const third = await post(MESSAGES, `%54%6F=${to}&Body=c`);
    expect(third.status).toBe(429);
    expect(third.headers['x-breakwater-error']).toBe('rate_limited');
  });

  it('lets repeated fields no key reads through (MediaUrl), and To twice where no key reads it', async () => {
    const media = await post(MESSAGES, 'To=%2B15554440000&MediaUrl=https%3A%2F%2Fa.example%2F1&MediaUrl=https%3A%2F%2Fa.example%2F2');
    expect(media.status).toBe(200);
    const before = twilio.seen.length;
    expect((await post(CALLS, 'To=%2B15551110000&To=%2B15552220000&Url=https%3A%2F%2Fa.example%2Ftwiml')).status).toBe(200);
    expect(twilio.seen.length).toBe(before + 1);
  });

  it('refuses a JSON body with a duplicate key on the key path, escaped spellings included', async () => {
    const before = vapi.seen.length;
    const bodies = [
      '{"assistantId":"a","customer":{"number":"+15551110000","number":"+15552220000"}}',
      '{"assistantId":"a","customer":{"number":"+15551110000","n\\u0075mber":"+15552220000"}}',
      // The parent twice: JSON.parse keeps the second customer, an upstream may read the first.
      '{"customer":{"number":"+15551110000"},"assistantId":"a","customer":{"number":"+15552220000"}}',
    ];
    for (const b of bodies) expectRefused(await post('/vapi/call', b, JSON_TYPE), 'customer.number');
    expect(vapi.seen.length).toBe(before);
  });

  it('forwards JSON whose duplicate keys lie off the key path', async () => {
    const before = vapi.seen.length;
    const body = '{"assistantId":"a","metadata":{"x":1,"x":2},"customer":{"number":"+15551110000","name":"n"},"items":[{"number":1},{"number":2}]}';
    expect((await post('/vapi/call', body, JSON_TYPE)).status).toBe(200);
    expect(vapi.seen.length).toBe(before + 1);
  });
});
