// Stub fault injection: a stub can add a fixed delay and answer a share of requests with an
// error status, so a team can rehearse a slow or failing Twilio/Vapi in dev. Injected 5xx are
// real to the resilience stages: the breaker counts them like an upstream's.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricsText, metricValue, request, startProxy, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = `
server: { host: 127.0.0.1, port: 0, adminHost: 127.0.0.1, adminPort: 0 }
logging: { level: warn }
stubMode: true
upstreams:
  outage:
    baseUrl: http://127.0.0.1:9
    prefix: /outage
    breaker: { threshold: 2, recoveryTimeout: 60 }
    stubs:
      - route: "POST /call"
        status: 201
        body: { id: "{{uuid}}" }
        delay: 0.3
        errorRate: 1
        errorStatus: 503
  flaky:
    baseUrl: http://127.0.0.1:9
    prefix: /flaky
    breaker: { enabled: false }
    retry: { attempts: 0 }
    stubs:
      - route: "GET /thing/{id}"
        status: 200
        body: { id: "{{param.id}}", q: "{{query.q}}" }
        errorRate: 0.5
        errorStatus: 500
`;

describe('stub delay and error rate', () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startProxy({}, POLICY);
  });
  afterAll(async () => {
    await p?.close();
  });

  it('answers errorStatus after the delay when errorRate is 1', async () => {
    const began = performance.now();
    const r = await request(p.proxyPort, 'POST', '/outage/call', { headers: { 'content-type': 'application/json' }, body: '{}' });
    const elapsed = performance.now() - began;
    expect(r.status).toBe(503);
    expect(r.headers['x-breakwater-stub']).toBe('true');
    expect(r.json).toMatchObject({ status: 503, message: expect.stringContaining('Injected failure') });
    // The delay is a floor, so only a lower bound (with slack for timer rounding) is asserted.
    expect(elapsed).toBeGreaterThanOrEqual(250);
  });

  it('lets the breaker open on injected failures, as it would on a real outage', async () => {
    // The first test spent one failure; threshold 2 opens on the second.
    const second = await request(p.proxyPort, 'POST', '/outage/call', { headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(second.status).toBe(503);
    expect(second.headers['x-breakwater-stub']).toBe('true');
    const refused = await request(p.proxyPort, 'POST', '/outage/call', { headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(refused.status).toBe(503);
    expect(refused.headers['x-breakwater-error']).toBe('circuit_open');
    expect(refused.headers['retry-after']).toMatch(/^\d+$/);
    const m = await metricsText(p.adminPort);
    expect(metricValue(m, 'circuit_breaker_state', { service: 'outage' })).toBe(2);
    expect(metricValue(m, 'circuit_breaker_failures_total', { service: 'outage' })).toBe(2);
  });

  it('with errorRate 0.5 answers both ways over many requests', async () => {
    const seen = new Map<number, number>();
    // Bounded: the chance that 200 fair draws are all alike is 2^-199.
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      const r = await request(p.proxyPort, 'GET', `/flaky/thing/t${i}?q=x`);
      seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
      expect(r.headers['x-breakwater-stub']).toBe('true');
      if (r.status === 200) expect(r.json).toEqual({ id: `t${i}`, q: 'x' });
      else expect(r.json).toMatchObject({ status: 500 });
    }
    expect([...seen.keys()].sort()).toEqual([200, 500]);
  });
});

describe('a delayed stub whose app gives up first', () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startProxy(
      {},
      `
server: { host: 127.0.0.1, port: 0, adminHost: 127.0.0.1, adminPort: 0 }
logging: { level: info }
stubMode: true
upstreams:
  slow:
    baseUrl: http://127.0.0.1:9
    prefix: /slow
    stubs:
      - route: "POST /call"
        status: 201
        body: { id: "call-1" }
        delay: 0.3
`,
    );
  });
  afterAll(async () => {
    await p?.close();
  });

  it('answers nothing and counts a 499, as a slow real upstream would leave it', async () => {
    await new Promise<void>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port: p.proxyPort,
        method: 'POST',
        path: '/slow/call',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': '2', 'x-request-id': 'stub-gone' },
      });
      req.on('error', () => {});
      req.end('{}');
      // Hang up once the proxy holds it (inside the stub's delay).
      const inside = async () => (metricValue(await metricsText(p.adminPort), 'breakwater_requests_in_flight', { upstream: 'slow' }) ?? 0) >= 1;
      void waitFor(inside, { timeoutMs: 3000, everyMs: 5 }).then(() => {
        req.destroy();
        resolve();
      });
    });
    const line = await waitFor(() => p.logLines().find((x) => x.msg === 'request' && x.reqId === 'stub-gone'), { timeoutMs: 5000, everyMs: 20 });
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'client closed before the stub answered']);
    const m = await metricsText(p.adminPort);
    expect(metricValue(m, 'breakwater_requests_total', { upstream: 'slow', status: '499', outcome: 'client_closed' })).toBe(1);
    expect(metricValue(m, 'breakwater_requests_total', { upstream: 'slow', outcome: 'stub' })).toBeUndefined();
  });
});
