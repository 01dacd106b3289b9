// A per-route limit and the upstream-wide one both apply to a matching request; each must allow
// it. Whichever refuses is named in the RateLimit field.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { FORM, policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const CALLS = '/twilio/2010-04-01/Accounts/AC1/Calls.json';

describe('several limits on one request', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [
        { name: 'messages', route: 'POST /2010-04-01/Accounts/*/Messages.json', rate: 1, per: 60, key: ['client'], headers: 'always' },
        { name: 'default', rate: 2, per: 60, key: ['client'], headers: 'always' },
      ];
    });
    ({ twilio: up, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const post = (client: string) => request(p.proxyPort, 'POST', MESSAGES, { headers: { 'x-client-id': client, ...FORM }, body: 'Body=hi' });
  const get = (client: string) => request(p.proxyPort, 'GET', CALLS, { headers: { 'x-client-id': client } });

  it('the route limit refuses while the upstream-wide limit still has room', async () => {
    const first = await post('c');
    expect(first.status).toBe(200);
    // The tighter of the two is reported.
    expect(first.headers.ratelimit).toMatch(/^"messages";r=0;t=\d+$/);
    const second = await post('c');
    expect(second.status).toBe(429);
    expect(second.headers.ratelimit).toMatch(/^"messages";r=0;t=\d+$/);
    expect(second.headers['ratelimit-policy']).toBe('"messages";q=1;w=60');
    // Other routes are only under the upstream-wide limit, which has one token left.
    const other = await get('c');
    expect(other.status).toBe(200);
    expect(other.headers.ratelimit).toMatch(/^"default";r=0;t=\d+$/);
    expect(up.seen.length).toBe(2);
  });

  it('the upstream-wide limit refuses while the route limit still has room', async () => {
    const before = up.seen.length;
    expect((await get('d')).status).toBe(200);
    expect((await get('d')).status).toBe(200);
    const r = await post('d');
    expect(r.status).toBe(429);
    expect(r.headers['x-breakwater-error']).toBe('rate_limited');
    expect(r.headers.ratelimit).toMatch(/^"default";r=0;t=\d+$/);
    expect(r.headers['ratelimit-policy']).toBe('"default";q=2;w=60');
    expect(up.seen.length).toBe(before + 2);
    expect(up.seen.filter((s) => s.method === 'POST').length).toBe(1);
  });

  it('counts each limit separately', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'messages', outcome: 'limited' })).toBe(1);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'default', outcome: 'limited' })).toBe(1);
  });
});
