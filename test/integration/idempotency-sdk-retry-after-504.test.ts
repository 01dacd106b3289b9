// The Vapi server SDK re-sends POST /call on 408, 429 and 5xx. Through Breakwater with an
// Idempotency-Key, the re-send after a 504 upstream_timeout does not place a second call: the
// timed-out create may have reached Vapi, so its 504 is stored and replayed
// (Idempotent-Replayed: true) instead of being forwarded again. That is the designed answer: the
// app learns the outcome is unknown, and no duplicate call is made.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, sleep, type Answer, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

/** An SDK-style client: re-sends on 408/429/5xx (at most `retries` times), honouring Retry-After. */
async function sdkCreateCall(port: number, key: string, body: object, retries = 2): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (let attempt = 0; attempt <= retries; attempt++) {
    const r = await request(port, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test', 'idempotency-key': key },
      body: JSON.stringify(body),
    });
    answers.push(r);
    if (r.status !== 408 && r.status !== 429 && r.status < 500) break;
    const wait = Number(r.headers['retry-after'] ?? 0);
    await sleep(Math.min(wait, 2) * 1000 + 50);
  }
  return answers;
}

describe('SDK-style re-send after a 504', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ vapi, p } = harness = await withProxy({ env: { UPSTREAM_TIMEOUT: '0.5' } }));
    vapi.mode = 'hang';
  });
  afterAll(() => harness?.close());

  it('answers the re-sends with the stored 504 and never sends a second create', async () => {
    const answers = await sdkCreateCall(p.proxyPort, 'sdk-call-1', { assistantId: 'a1', customer: { number: '+15550003000' } });
    expect(answers.length).toBe(3);
    const [first, ...resent] = answers;
    expect(first!.status).toBe(504);
    expect(first!.headers['x-breakwater-error']).toBe('upstream_timeout');
    expect(first!.json).toMatchObject({ code: 'upstream_timeout', status: 504, upstream: 'vapi' });
    expect(first!.headers['idempotent-replayed']).toBeUndefined();
    for (const r of resent) {
      expect(r.status).toBe(504);
      expect(r.headers['idempotent-replayed']).toBe('true');
      expect(r.headers['x-breakwater-error']).toBe('upstream_timeout');
      expect(r.json.code).toBe('upstream_timeout');
    }
    // One create left the proxy, ever.
    expect(vapi.started).toBe(1);
    expect(vapi.seen.filter((s) => s.method === 'POST').length).toBe(1);
    expect(vapi.seen[0]!.headers['idempotency-key']).toBeUndefined();

    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_idempotency_total', { upstream: 'vapi', outcome: 'replayed' })).toBe(2);
  });

  it('still forwards a create with a new key', async () => {
    vapi.mode = 'ok';
    const [r] = await sdkCreateCall(p.proxyPort, 'sdk-call-2', { assistantId: 'a1', customer: { number: '+15550003001' } });
    expect(r!.status).toBe(200);
    expect(vapi.started).toBe(2);
  });
});
