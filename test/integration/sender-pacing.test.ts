// Sender pacing: a limit keyed on the body's `From` with maxDelay queues a burst from one sender
// and releases it at the configured rate instead of refusing it (nginx `limit_req … delay`).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM, policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SENDER = '+15558675310';
const MESSAGES = `/twilio/2010-04-01/Accounts/${accountSid('1')}/Messages.json`;

describe('sender pacing on body:From', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [
        { name: 'sender-pacing', route: 'POST /2010-04-01/Accounts/*/Messages.json', rate: 2, per: 1, burst: 1, key: ['body:From'], maxDelay: 5 },
      ];
    });
    ({ twilio, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const send = (from: string, to: string) => request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ From: from, To: to, Body: 'hello' }) });

  it('delivers a burst of 4 from one sender, spread at 2 per second, none refused', async () => {
    const answers = await Promise.all([1, 2, 3, 4].map((i) => send(SENDER, `+1555000000${i}`)));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    const arrivals = twilio.seen
      .filter((s) => s.body.toString().includes(encodeURIComponent(SENDER)))
      .map((s) => s.at)
      .sort((x, y) => x - y);
    expect(arrivals.length).toBe(4);
    // 2 per second is one every 500 ms; the small allowance is for timer granularity only.
    for (let i = 1; i < arrivals.length; i++) expect(arrivals[i]! - arrivals[i - 1]!).toBeGreaterThanOrEqual(400);

    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'sender-pacing', outcome: 'delayed' })).toBe(3);
    expect(metricValue(text, 'breakwater_rate_limit_decisions_total', { upstream: 'twilio', limit: 'sender-pacing', outcome: 'limited' }) ?? 0).toBe(0);
  });

  it('does not make another sender wait behind the first', async () => {
    const before = twilio.seen.length;
    const delayed = async () =>
      metricValue(await metricsText(p.adminPort), 'breakwater_rate_limit_decisions_total', {
        upstream: 'twilio',
        limit: 'sender-pacing',
        outcome: 'delayed',
      }) ?? 0;
    const delayedBefore = await delayed();
    const [slow, other] = await Promise.all([Promise.all([1, 2, 3].map((i) => send('+15550009999', `+1555111000${i}`))), send('+15550008888', '+15552220001')]);
    expect(slow.map((a) => a.status)).toEqual([200, 200, 200]);
    expect(other.status).toBe(200);
    // Only the first sender's second and third were queued; the other sender has its own bucket.
    expect((await delayed()) - delayedBefore).toBe(2);
    expect(twilio.seen.length).toBe(before + 4);
  });

  it('does not apply to requests without the field or off the route', async () => {
    const noFrom = await request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ To: '+15550000009', MessagingServiceSid: 'MG1' }) });
    expect(noFrom.status).toBe(200);
    expect(noFrom.headers.ratelimit).toBeUndefined();
  });
});
