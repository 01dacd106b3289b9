// The bulkhead caps concurrent in-flight requests per upstream: with maxConcurrent 2 for Vapi and
// two requests parked at the upstream, a third is answered 503 bulkhead_full with Retry-After at
// once, without reaching the upstream; Twilio is unaffected; slots free up when answers finish.
// With a queue, an extra request waits for a slot instead, up to the queue timeout.
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, startProxy, type Answer, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

/** Makes the upstream hold every answer until `release()`. */
function parking(up: FakeUpstream) {
  const parked: ServerResponse[] = [];
  up.handler = (_req, res) => void parked.push(res);
  return {
    parked,
    release() {
      for (const res of parked.splice(0)) if (!res.writableEnded) res.writeHead(200, { 'content-type': 'application/json' }).end('{"released":true}');
    },
  };
}

async function bulkheadMetrics(p: TestProxy, upstream: string) {
  const text = await metricsText(p.adminPort);
  return {
    active: metricValue(text, 'breakwater_bulkhead_active', { upstream }),
    limit: metricValue(text, 'breakwater_bulkhead_limit', { upstream }),
    rejections: metricValue(text, 'breakwater_bulkhead_rejections_total', { upstream }) ?? 0,
    queued: metricValue(text, 'breakwater_bulkhead_queued', { upstream }),
  };
}

describe('bulkhead overflow', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = DEFAULT_POLICY.replace('maxConcurrent: 100\n    rateLimits', 'maxConcurrent: 2\n    rateLimits');
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '100000' }, policy }));
  });
  afterAll(() => harness?.close());
  beforeEach(() => {
    vapi.handler = undefined;
  });

  it('exports the configured limits', async () => {
    expect(await bulkheadMetrics(p, 'vapi')).toMatchObject({ limit: 2, active: 0, rejections: 0 });
    expect(await bulkheadMetrics(p, 'twilio')).toMatchObject({ limit: 100, active: 0 });
  });

  it('refuses the third concurrent request with 503 bulkhead_full + Retry-After, without contacting the upstream', async () => {
    const park = parking(vapi);
    const inFlight: Promise<Answer>[] = [];
    try {
      inFlight.push(request(p.proxyPort, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{"n":1}' }));
      inFlight.push(request(p.proxyPort, 'GET', '/vapi/call/2'));
      expect(await waitFor(() => park.parked.length === 2, { timeoutMs: 5000 })).toBe(true);
      expect(await bulkheadMetrics(p, 'vapi')).toMatchObject({ active: 2, rejections: 0 });

      const started = vapi.started;
      const third = await request(p.proxyPort, 'GET', '/vapi/call/3');
      expect(third.status).toBe(503);
      expect(third.headers['x-breakwater-error']).toBe('bulkhead_full');
      expect(Number(third.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(third.json).toEqual({
        code: 'bulkhead_full',
        message: expect.any(String),
        status: 503,
        upstream: 'vapi',
        requestId: third.headers['x-request-id'],
      });
      expect(vapi.started).toBe(started);
      expect(await bulkheadMetrics(p, 'vapi')).toMatchObject({ active: 2, rejections: 1 });

      // A GET refused by the bulkhead is not retried into the upstream either.
      expect(third.headers['x-breakwater-retries']).toBeUndefined();

      // Twilio has its own bulkhead.
      expect((await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Calls.json')).status).toBe(200);
    } finally {
      park.release();
    }
    const done = await Promise.all(inFlight);
    expect(done.map((a) => a.status)).toEqual([200, 200]);
  });

  it('frees the slots when the answers finish', async () => {
    expect(await waitFor(async () => (await bulkheadMetrics(p, 'vapi')).active === 0, { timeoutMs: 5000 })).toBe(true);
    const answers = await Promise.all([request(p.proxyPort, 'GET', '/vapi/call/a'), request(p.proxyPort, 'GET', '/vapi/call/b')]);
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
  });

  it('does not count bulkhead refusals as breaker failures', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'circuit_breaker_state', { service: 'vapi' })).toBe(0);
    expect(metricValue(text, 'circuit_breaker_failures_total', { service: 'vapi' })).toBe(0);
  });

  it('refuses every request beyond the cap when many arrive at once', async () => {
    const park = parking(vapi);
    const before = (await bulkheadMetrics(p, 'vapi')).rejections;
    let answers: Answer[] = [];
    try {
      const all = Array.from({ length: 8 }, (_, i) => request(p.proxyPort, 'GET', `/vapi/call/burst-${i}`));
      // Six are refused at once; the two admitted ones wait at the upstream until released.
      expect(await waitFor(async () => park.parked.length === 2 && (await bulkheadMetrics(p, 'vapi')).rejections === before + 6, { timeoutMs: 5000 })).toBe(
        true,
      );
      park.release();
      answers = await Promise.all(all);
    } finally {
      park.release();
    }
    expect(answers.filter((a) => a.status === 200)).toHaveLength(2);
    expect(answers.filter((a) => a.headers['x-breakwater-error'] === 'bulkhead_full')).toHaveLength(6);
  });
});

describe('bulkhead with a queue', () => {
  let vapi: FakeUpstream, p: TestProxy;
  beforeAll(async () => {
    vapi = await fakeUpstream('vapi');
    const policy = DEFAULT_POLICY.replace('maxConcurrent: 100\n    rateLimits', 'maxConcurrent: 1\n      queue: 1\n      queueTimeout: 5\n    rateLimits');
    expect(policy).not.toBe(DEFAULT_POLICY);
    p = await startProxy({ VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '100000' }, policy);
  });
  afterAll(async () => {
    await p.close();
    await vapi.close();
  });

  it('queues one request for a slot and refuses the next', async () => {
    const park = parking(vapi);
    try {
      const first = request(p.proxyPort, 'GET', '/vapi/call/1');
      expect(await waitFor(() => park.parked.length === 1, { timeoutMs: 5000 })).toBe(true);
      const second = request(p.proxyPort, 'GET', '/vapi/call/2');
      expect(await waitFor(async () => (await bulkheadMetrics(p, 'vapi')).queued === 1, { timeoutMs: 5000 })).toBe(true);
      const third = await request(p.proxyPort, 'GET', '/vapi/call/3');
      expect(third.status).toBe(503);
      expect(third.headers['x-breakwater-error']).toBe('bulkhead_full');
      expect(vapi.started).toBe(1);
      // Releasing the first hands its slot to the queued one, which then reaches the upstream.
      park.release();
      expect((await first).status).toBe(200);
      expect(await waitFor(() => park.parked.length === 1, { timeoutMs: 5000 })).toBe(true);
      park.release();
      expect((await second).status).toBe(200);
      expect(vapi.started).toBe(2);
      expect(await bulkheadMetrics(p, 'vapi')).toMatchObject({ active: 0, queued: 0, rejections: 1 });
    } finally {
      park.release();
    }
  });
});
