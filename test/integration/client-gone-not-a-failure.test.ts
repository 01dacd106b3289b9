// An app that hangs up before the upstream answers (a client timeout, a load generator ending its
// run) says nothing about the upstream's health: it must not open the breaker, and nobody is
// left to read a retry's answer. Found by the benchmark: every wrk run ending mid-request used
// to count three "resets" and open the Twilio breaker for 30 s.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const PATH = '/twilio/2010-04-01/Accounts/AC123/Messages.json';

/** Sends a GET and destroys the connection once the upstream has it, before any answer. */
function hangUpAfterSent(port: number, upstream: FakeUpstream): Promise<void> {
  return new Promise((resolve) => {
    const before = upstream.seen.length;
    const req = http.request({ host: '127.0.0.1', port, method: 'GET', path: PATH, agent: false });
    req.on('error', () => resolve());
    req.end();
    const poll = setInterval(() => {
      if (upstream.seen.length > before) {
        clearInterval(poll);
        req.destroy();
        setTimeout(resolve, 50);
      }
    }, 5);
  });
}

describe('a client that hangs up before the answer', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' } }));
  });
  afterAll(() => harness?.close());

  it('is neither a breaker failure nor retried', async () => {
    twilio.mode = 'hang';
    const seen = twilio.seen.length;
    for (let i = 0; i < 4; i++) await hangUpAfterSent(p.proxyPort, twilio);
    // One upstream request per hang-up: GETs are retried on resets, but not for a gone client.
    expect(twilio.seen.length - seen).toBe(4);
    const breakers = await request(p.adminPort, 'GET', '/breakers');
    const b = breakers.json.breakers.find((x: { name: string }) => x.name === 'twilio');
    expect(b.state).toBe('closed');
    expect(b.failures).toBe(0);
    twilio.mode = 'ok';
    expect((await request(p.proxyPort, 'GET', PATH)).status).toBe(200);
  });

  it('is counted and logged as a client hang-up (499 client_closed), not as an upstream 5xx', async () => {
    twilio.mode = 'hang';
    const before =
      metricValue(await metricsText(p.adminPort), 'breakwater_requests_total', { upstream: 'twilio', status: '499', outcome: 'client_closed' }) ?? 0;
    const lines = p.logLines().length;
    for (let i = 0; i < 3; i++) await hangUpAfterSent(p.proxyPort, twilio);
    twilio.mode = 'ok';
    const closed = () =>
      p
        .logLines()
        .slice(lines)
        .filter((x) => x.msg === 'request' && x.upstream === 'twilio');
    await waitFor(() => closed().length >= 3, { timeoutMs: 5000, everyMs: 20 });
    for (const l of closed()) {
      expect(l.status).toBe(499);
      expect(l.outcome).toBe('client_closed');
      expect(l.cause).toBe('client closed');
    }
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_requests_total', { upstream: 'twilio', status: '499', outcome: 'client_closed' })).toBe(before + 3);
    // No 5xx series was ever created for a hang-up (the 5xx alerts and SLO ratios read these).
    expect(text).not.toMatch(/breakwater_requests_total\{[^}]*status="5\d\d"/);
  });

  it('an upload the app abandons halfway is a 499 too, not a 400 nobody reads', async () => {
    const lines = p.logLines().length;
    const seen = twilio.seen.length;
    await new Promise<void>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port: p.proxyPort,
        method: 'POST',
        path: PATH,
        agent: false,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '1000' },
      });
      req.on('error', () => resolve());
      req.write('To=%2B15550000001&Body=');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 100);
    });
    const line = await waitFor(
      () =>
        p
          .logLines()
          .slice(lines)
          .find((x) => x.msg === 'request' && x.method === 'POST'),
      { timeoutMs: 5000, everyMs: 20 },
    );
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'bad_request']);
    expect(twilio.seen.length).toBe(seen);
  });
});
