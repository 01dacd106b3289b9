// Vapi refuses for concurrency with HTTP 400 `{"error":"Over Concurrency Limit"}`. That is
// back-pressure, not an outage and not the app's fault: the sidecar holds that API key and
// answers 429 upstream_rate_limited with Retry-After (what SDKs already wait on), and the
// breaker never counts it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, request, startProxy, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('Vapi concurrency refusal (400 Over Concurrency Limit)', () => {
  let vapi: FakeUpstream, twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ env: { VAPI_API_KEY: 'vapi-key-1', CIRCUIT_BREAKER_THRESHOLD: '1' } }));
  });
  afterAll(() => harness?.close());

  it('is held and surfaced as 429 upstream_rate_limited, and never opens the breaker', async () => {
    vapi.handler = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"error":"Over Concurrency Limit"}');
    };
    const create = () => request(p.proxyPort, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{"assistantId":"a1"}' });
    const first = await create();
    expect(first.status).toBe(429);
    expect(first.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    expect(Number(first.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    const n = vapi.started;
    // Held: the next call is answered locally and costs Vapi nothing.
    const second = await create();
    expect(second.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    expect(vapi.started).toBe(n);
    const text = await metricsText(p.adminPort);
    expect(text).toMatch(/circuit_breaker_failures_total\{service="vapi"\} 0/);
    expect(text).toMatch(/circuit_breaker_state\{service="vapi"\} 0/);
  });

  it('passes any other 400 through to the app unchanged', async () => {
    const other = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'other' } });
    // The key is the API key (held above); a different 400 is seen on the other upstream path.
    expect(other.headers['x-breakwater-error']).toBe('upstream_rate_limited');
    vapi.handler = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"message":["assistantId must be a UUID"],"error":"Bad Request","statusCode":400}');
    };
    const q = await startProxy({ TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url, VAPI_API_KEY: 'vapi-key-2' });
    try {
      const r = await request(q.proxyPort, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(r.status).toBe(400);
      expect(r.headers['x-breakwater-error']).toBeUndefined();
      expect(r.text).toContain('assistantId must be a UUID');
    } finally {
      await q.close();
    }
  });
});
