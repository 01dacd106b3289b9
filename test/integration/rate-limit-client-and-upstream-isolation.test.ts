// One noisy client exhausting its budget on one upstream leaves other clients, and its own
// budget on the other upstream, untouched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('rate limits are per client and per upstream', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '3' } }));
  });
  afterAll(() => harness?.close());

  const get = (path: string, client: string) => request(p.proxyPort, 'GET', path, { headers: { 'x-client-id': client } });

  it('limits the noisy client on twilio only', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await get('/twilio/2010-04-01/Accounts.json', 'noisy')).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(twilio.seen.length).toBe(3);
  });

  it('still serves another client on the same upstream', async () => {
    const before = twilio.seen.length;
    for (let i = 0; i < 3; i++) expect((await get('/twilio/2010-04-01/Accounts.json', 'quiet')).status).toBe(200);
    expect(twilio.seen.length).toBe(before + 3);
  });

  it('still serves the noisy client on the other upstream', async () => {
    const r = await get('/vapi/call', 'noisy');
    expect(r.status).toBe(200);
    // An allowed answer says what remains (RateLimit); RateLimit-Policy comes with the 429.
    expect(r.headers.ratelimit).toMatch(/^"default";r=2;t=\d+$/);
    expect(r.headers['ratelimit-policy']).toBeUndefined();
    expect(vapi.seen.length).toBe(1);
    // ...while twilio keeps refusing it.
    expect((await get('/twilio/2010-04-01/Accounts.json', 'noisy')).status).toBe(429);
  });

  it('does not forward the client id header upstream', () => {
    expect(twilio.seen.every((s) => s.headers['x-client-id'] === undefined)).toBe(true);
    expect(vapi.seen.every((s) => s.headers['x-client-id'] === undefined)).toBe(true);
  });
});
