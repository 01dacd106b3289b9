// Breakers per destination: a failing host-routed Twilio host (Verify, a regional host, a typo'd
// name) opens its own breaker and never refuses a request to another destination — least of all
// the base URL behind /twilio, which the SPEC's metric series describe.
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, request, startProxy, type TestProxy } from '../support/proxy.js';

async function deadPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('one breaker per destination', () => {
  let tw: FakeUpstream, va: FakeUpstream, p: TestProxy;
  beforeAll(async () => {
    tw = await fakeUpstream('twilio');
    va = await fakeUpstream('vapi');
    // Every host-routed Twilio request goes to a closed port; the base URL is healthy.
    p = await startProxy({ TWILIO_BASE_URL: tw.url, VAPI_BASE_URL: va.url, TWILIO_HOST_TARGET: `http://127.0.0.1:${await deadPort()}`, CIRCUIT_BREAKER_THRESHOLD: '1' });
  });
  afterAll(async () => {
    await p?.close();
    await tw?.close();
    await va?.close();
  });

  it('an unreachable host opens only its own breaker', async () => {
    const verify = { headers: { host: 'verify.twilio.com' } };
    expect((await request(p.proxyPort, 'GET', '/v2/Services', verify)).headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect((await request(p.proxyPort, 'GET', '/v2/Services', verify)).headers['x-breakwater-error']).toBe('circuit_open');
    // Another host-routed destination has a breaker of its own: tried, not refused.
    const dublin = await request(p.proxyPort, 'GET', '/2010-04-01/Accounts/AC1/Messages.json', { headers: { host: 'api.dublin.ie1.twilio.com' } });
    expect(dublin.headers['x-breakwater-error']).toBe('upstream_unavailable');
    // The base URL is served throughout.
    const base = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json');
    expect(base.status).toBe(200);

    const list = (await request(p.adminPort, 'GET', '/breakers')).json as { breakers: { name: string; scope: string; state: string }[] };
    const twilio = list.breakers.filter((b) => b.name === 'twilio');
    expect(twilio).toEqual(expect.arrayContaining([
      expect.objectContaining({ scope: 'base', state: 'closed' }),
      expect.objectContaining({ scope: 'verify.twilio.com', state: 'open' }),
      expect.objectContaining({ scope: 'api.dublin.ie1.twilio.com', state: 'open' }),
    ]));
    // The SPEC's series describe the base URL's breaker: still closed, no failures.
    const text = await metricsText(p.adminPort);
    expect(text).toMatch(/circuit_breaker_state\{service="twilio"\} 0/);
    expect(text).toMatch(/circuit_breaker_failures_total\{service="twilio"\} 0/);
    // The status page and its JSON show each destination's breaker beside the base one.
    const status = (await request(p.adminPort, 'GET', '/status.json')).json as { destinations: { upstream: string; scope: string; state: string }[] };
    expect(status.destinations).toEqual(expect.arrayContaining([
      expect.objectContaining({ upstream: 'twilio', scope: 'verify.twilio.com', state: 'open' }),
      expect.objectContaining({ upstream: 'twilio', scope: 'api.dublin.ie1.twilio.com', state: 'open' }),
    ]));
    const page = (await request(p.adminPort, 'GET', '/')).text;
    expect(page).toMatch(/<td>twilio<\/td><td>verify\.twilio\.com<\/td><td>Open<\/td>/);
  });
});
