// The retry budget keeps retries from multiplying an outage: during a long run of failures the
// retries an upstream sees are capped at budgetRatio × requests plus a small floor, however
// many attempts each request would be allowed. The breaker is switched to observe-only so that
// every request really reaches the (failing) upstream and only the budget limits retries.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, type Answer, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const RATIO = 0.2;
const MIN_PER_SECOND = 1;
/** The budget's window is 10 s: the floor is minRetriesPerSecond × 10 retries. */
const FLOOR = MIN_PER_SECOND * 10;
const REQUESTS = 60;
const ATTEMPTS = 2; // retries per request allowed by the shipped policy

describe('the retry budget during an outage', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  const answers: Answer[] = [];

  beforeAll(async () => {
    const policy = DEFAULT_POLICY.replace('      budgetRatio: 0.2', `      minRetriesPerSecond: ${MIN_PER_SECOND}\n      budgetRatio: ${RATIO}`);
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ twilio, p } = harness = await withProxy({ env: { CIRCUIT_BREAKER_ENABLED: 'false', RATE_LIMIT_PER_MINUTE: '100000' }, policy }));
    twilio.mode = 'fail'; // every attempt answers 503, which GETs retry
    for (let batch = 0; batch < REQUESTS / 10; batch++) {
      answers.push(
        ...(await Promise.all(
          Array.from({ length: 10 }, (_, i) => request(p.proxyPort, 'GET', `/twilio/2010-04-01/Accounts/AC1/Calls.json?n=${batch * 10 + i}`)),
        )),
      );
    }
  });
  afterAll(() => harness?.close());

  it("answers every request with the upstream's 503 (the budget changes attempts, not answers)", () => {
    expect(answers).toHaveLength(REQUESTS);
    for (const a of answers) {
      expect(a.status).toBe(503);
      expect(a.headers['x-breakwater-error']).toBeUndefined();
    }
  });

  it('keeps upstream hits within requests × (1 + ratio) + floor, far below requests × (1 + attempts)', () => {
    const hits = twilio.started;
    expect(hits).toBeLessThanOrEqual(REQUESTS * (1 + RATIO) + FLOOR);
    expect(hits).toBeLessThan(REQUESTS * (1 + ATTEMPTS));
    // It is a budget, not a ban: some retries did happen.
    expect(hits).toBeGreaterThan(REQUESTS);
  });

  it('reports the retries made and the ones the budget refused', async () => {
    const text = await metricsText(p.adminPort);
    const made = metricValue(text, 'breakwater_retries_total', { upstream: 'twilio', reason: '503' }) ?? 0;
    const skipped = metricValue(text, 'breakwater_retries_skipped_total', { upstream: 'twilio', reason: 'budget' }) ?? 0;
    expect(made).toBe(twilio.started - REQUESTS);
    expect(made).toBeLessThanOrEqual(REQUESTS * RATIO + FLOOR);
    expect(skipped).toBeGreaterThan(0);
    // Each request ends either by using up its attempts or by a budget refusal.
    const retriedHeaders = answers.reduce((s, a) => s + Number(a.headers['x-breakwater-retries'] ?? 0), 0);
    expect(retriedHeaders).toBe(made);
    const exhausted = answers.filter((a) => a.headers['x-breakwater-retries'] === String(ATTEMPTS)).length;
    expect(exhausted + skipped).toBe(REQUESTS);
  });

  it('the breaker observed the outage without blocking anything', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'circuit_breaker_state', { service: 'twilio' })).toBe(2);
    expect(metricValue(text, 'circuit_breaker_rejections_total', { service: 'twilio' })).toBe(0);
    // One failure per app request, however many attempts it made.
    expect(metricValue(text, 'circuit_breaker_failures_total', { service: 'twilio' })).toBe(REQUESTS);
  });

  it('serves normally, without retries, once the upstream recovers', async () => {
    twilio.mode = 'ok';
    const n = twilio.started;
    const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Calls.json');
    expect(r.status).toBe(200);
    expect(r.headers['x-breakwater-retries']).toBeUndefined();
    expect(twilio.started).toBe(n + 1);
  });
});
