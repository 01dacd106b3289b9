import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('routing by prefix and by allow-listed Host', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = (await import('../support/proxy.js')).DEFAULT_POLICY;
    // Host-routed requests go to the fake through the default policy's TWILIO_HOST_TARGET.
    ({ twilio, vapi, p } = harness = await withProxy({ env: (up) => ({ TWILIO_HOST_TARGET: up.twilio.url, VAPI_HOST_TARGET: up.vapi.url }), policy }));
  });
  afterAll(() => harness?.close());

  it('strips the prefix, keeps the query and sets the upstream Host', async () => {
    const r = await request(p.proxyPort, 'GET', '/vapi/call?limit=2&x=%20y');
    expect(r.status).toBe(200);
    expect(vapi.seen.at(-1)?.url).toBe('/call?limit=2&x=%20y');
    expect(vapi.seen.at(-1)?.headers.host).toBe(`127.0.0.1:${vapi.port}`);
  });

  it('routes a Twilio host name to that host under the twilio policy', async () => {
    const n = twilio.seen.length;
    const r = await request(p.proxyPort, 'GET', '/v2/Services', { headers: { host: 'verify.twilio.com' } });
    expect(r.status).toBe(200);
    expect(twilio.seen.length).toBe(n + 1);
    expect(twilio.seen.at(-1)?.headers.host).toBe('verify.twilio.com');
    expect(twilio.seen.at(-1)?.url).toBe('/v2/Services');
  });

  it('a /twilio path goes to the base URL even with Host: api.twilio.com', async () => {
    const n = twilio.seen.length;
    const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json', { headers: { host: 'api.twilio.com' } });
    expect(r.status).toBe(200);
    expect(twilio.seen.length).toBe(n + 1);
    // The prefix was stripped (a host-routed request would keep it) and the base URL's Host sent.
    expect(twilio.seen.at(-1)?.url).toBe('/2010-04-01/Accounts/AC1/Messages.json');
    expect(twilio.seen.at(-1)?.headers.host).toBe(`127.0.0.1:${twilio.port}`);
  });

  it('sends host-routed Vapi requests to VAPI_HOST_TARGET, Host kept', async () => {
    const n = vapi.seen.length;
    const r = await request(p.proxyPort, 'GET', '/call', { headers: { host: 'api.vapi.ai' } });
    expect(r.status).toBe(200);
    expect(vapi.seen.length).toBe(n + 1);
    expect(vapi.seen.at(-1)?.headers.host).toBe('api.vapi.ai');
  });

  it.each(['api.twilio.com.evil.test', 'evil-twilio.com', 'twilio.com.', 'x.twilio.com:99999/../'])('does not treat Host %s as Twilio', async (host) => {
    const n = twilio.seen.length;
    const r = await request(p.proxyPort, 'GET', '/v2/Services', { headers: { host } });
    expect(r.status).toBe(404);
    expect(r.headers['x-breakwater-error']).toBe('no_route');
    expect(twilio.seen.length).toBe(n);
  });

  it('answers an unknown prefix with 404 no_route and the flat error body', async () => {
    const r = await request(p.proxyPort, 'GET', '/stripe/v1/charges', { headers: { 'x-request-id': 'req-1' } });
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ code: 'no_route', message: expect.any(String), status: 404, upstream: null, requestId: 'req-1' });
  });

  it('refuses dot-segment traversal out of a prefix', async () => {
    const r = await request(p.proxyPort, 'GET', '/twilio/../admin');
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
  });
});
