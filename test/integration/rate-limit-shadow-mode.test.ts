// A shadow limit is a dry run: would-be rejections are counted as shadow_limited and logged, and
// the requests still go through.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('shadow rate limit', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [{ name: 'trial', rate: 1, per: 60, key: ['client'], shadow: true }];
    });
    ({ twilio: up, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  it('lets every request through while counting and logging the would-be rejections', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts.json', { headers: { 'x-client-id': 'trier', 'x-request-id': `s${i}` } });
      statuses.push(r.status);
      expect(r.headers['x-breakwater-error']).toBeUndefined();
    }
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(up.seen.length).toBe(4);

    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'trial', outcome: 'shadow_limited' })).toBe(3);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'trial', outcome: 'limited' }) ?? 0).toBe(0);

    const shadowLines = p.logLines().filter((l) => l.limit === 'trial' && /shadow/.test(String(l.msg)));
    expect(shadowLines.map((l) => l.reqId)).toEqual(['s1', 's2', 's3']);
    expect(shadowLines[0]).toMatchObject({ upstream: 'twilio', key: 'trier' });
  });
});
