// The refusal an app sees: 429 rate_limited with the flat error body, Retry-After equal to the
// real wait for the next token, and the IETF RateLimit / RateLimit-Policy fields. Allowed
// responses carry RateLimit by default, and RateLimit-Policy too under `headers: always`. A
// refused request never reaches the upstream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { policyWith } from '../support/policy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('429 rate_limited: shape and headers', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // 2 per minute, burst 2: one token every 30 s.
    const policy = policyWith((pol) => {
      for (const l of pol.upstreams.twilio.rateLimits) l.headers = 'always';
    });
    ({ twilio: up, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '2' }, policy }));
  });
  afterAll(() => harness?.close());

  const send = (id: string) =>
    request(p.proxyPort, 'POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', {
      headers: { 'x-client-id': 'shape', 'x-request-id': id, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'To=%2B15550001111&Body=hi',
    });

  it('puts RateLimit and RateLimit-Policy on allowed responses', async () => {
    const a = await send('ok-1');
    expect(a.status).toBe(200);
    expect(a.headers['ratelimit-policy']).toBe('"default";q=2;w=60');
    const m = /^"default";r=(\d+);t=(\d+)$/.exec(String(a.headers.ratelimit));
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBe(1);
    // Reset: seconds until the bucket is full again (one token used = 30 s).
    expect(Number(m![2])).toBeGreaterThanOrEqual(29);
    expect(Number(m![2])).toBeLessThanOrEqual(30);
    const b = await send('ok-2');
    expect(b.status).toBe(200);
    expect(b.headers.ratelimit).toMatch(/^"default";r=0;t=\d+$/);
    expect(up.seen.length).toBe(2);
  });

  it('refuses the third with 429, the real wait in Retry-After and the flat JSON body', async () => {
    const r = await send('limited-1');
    expect(r.status).toBe(429);
    expect(r.headers['x-breakwater-error']).toBe('rate_limited');
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['x-request-id']).toBe('limited-1');
    const retryAfter = Number(r.headers['retry-after']);
    // The next token arrives 30 s after the first one was taken: never 0, never the whole minute.
    expect(retryAfter).toBeGreaterThanOrEqual(29);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(r.headers.ratelimit).toBe(`"default";r=0;t=${retryAfter}`);
    expect(r.headers['ratelimit-policy']).toBe('"default";q=2;w=60');
    expect(r.json).toEqual({ code: 'rate_limited', message: expect.any(String), status: 429, upstream: 'twilio', requestId: 'limited-1' });
    expect(r.json.message.length).toBeGreaterThan(0);
  });

  it('never forwards a refused request', async () => {
    for (let i = 0; i < 3; i++) expect((await send(`limited-${i + 2}`)).status).toBe(429);
    expect(up.seen.length).toBe(2);
    expect(up.started).toBe(2);
  });

  it('counts the decisions', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'default', outcome: 'allowed' })).toBe(2);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'default', outcome: 'limited' })).toBe(4);
  });
});
