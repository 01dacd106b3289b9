// An upstream 429 is back-pressure (Twilio's 20429: the account's concurrency limit; the request
// was not processed), not an outage: however many arrive, the breaker neither counts them as
// failures nor opens. A 429 answering a half-open probe leaves the circuit half-open. Each test
// of the first suite has its own proxy, so they hold in any order.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, startProxy, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

async function twilioBreaker(p: TestProxy) {
  const text = await metricsText(p.adminPort);
  return {
    state: metricValue(text, 'circuit_breaker_state', { service: 'twilio' }),
    failures: metricValue(text, 'circuit_breaker_failures_total', { service: 'twilio' }),
    opens: metricValue(text, 'circuit_breaker_opens_total', { service: 'twilio' }),
  };
}

describe('upstream 429s never open the breaker', () => {
  let twilio: FakeUpstream, p: TestProxy, h: ProxyHarness | undefined;
  beforeEach(async () => {
    // Holds would answer repeats locally after the first 429; switch them off so every request
    // really reaches the upstream and gets its 429.
    const policy = DEFAULT_POLICY.replace('    holdOn429:\n      key: [account]', '    holdOn429:\n      enabled: false\n      key: [account]');
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ twilio, p } = h = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '1', RATE_LIMIT_PER_MINUTE: '100000' },
      policy,
    }));
  });
  afterEach(() => h?.close());

  it('passes ten 429s (with and without Retry-After) through and stays closed with no failures', async () => {
    twilio.mode = '429';
    for (let i = 0; i < 10; i++) {
      twilio.retryAfter = i % 2 === 0 ? undefined : '1';
      const r = i % 2 === 0 ? await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' }) : await request(p.proxyPort, 'GET', SEND);
      expect(r.status).toBe(429);
      expect(r.json).toMatchObject({ code: 20429 });
      expect(r.headers['x-breakwater-error']).toBeUndefined();
    }
    expect(twilio.started).toBe(10); // a 429 is not retried either
    expect(await twilioBreaker(p)).toEqual({ state: 0, failures: 0, opens: 0 });
    twilio.mode = 'ok';
    expect((await request(p.proxyPort, 'GET', SEND)).status).toBe(200);
  });

  it('a 429 answering a half-open probe leaves it half-open; the next success closes it', async () => {
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
    expect(await twilioBreaker(p)).toMatchObject({ state: 2, opens: 1 });
    const half = await waitFor(async () => (await twilioBreaker(p)).state === 1, { timeoutMs: 5000, everyMs: 50 });
    expect(half).toBe(true);
    twilio.mode = '429';
    const probe = await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
    expect(probe.status).toBe(429);
    expect(await twilioBreaker(p)).toMatchObject({ state: 1, opens: 1, failures: 3 });
    twilio.mode = 'ok';
    expect((await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' })).status).toBe(200);
    expect(await twilioBreaker(p)).toMatchObject({ state: 0, opens: 1 });
  });
});

describe('with the shipped hold-on-429 policy', () => {
  it('holds the account locally (429 upstream_rate_limited) and still never opens the breaker', async () => {
    const twilio = await fakeUpstream('twilio');
    const p = await startProxy({ TWILIO_BASE_URL: twilio.url, CIRCUIT_BREAKER_THRESHOLD: '3', RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      twilio.mode = '429';
      twilio.retryAfter = '30';
      const statuses: number[] = [];
      const codes: (string | undefined)[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
        statuses.push(r.status);
        codes.push(r.headers['x-breakwater-error'] as string | undefined);
      }
      expect(statuses).toEqual([429, 429, 429, 429, 429, 429]);
      expect(codes[0]).toBeUndefined(); // the upstream's own 429
      expect(codes.slice(1)).toEqual(Array(5).fill('upstream_rate_limited'));
      expect(twilio.started).toBe(1);
      expect(await twilioBreaker(p)).toEqual({ state: 0, failures: 0, opens: 0 });
    } finally {
      await p.close();
      await twilio.close();
    }
  });
});
