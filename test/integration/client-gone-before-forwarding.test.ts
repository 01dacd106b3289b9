// An app that gives up while its request still waits inside the proxy (its turn under sender
// pacing, a Redis limiter round trip, a bulkhead queue) must not have that request sent on: the
// app will retry, and the abandoned copy reaching Twilio is the duplicate SMS. Nor may it count
// against the upstream. Found by the benchmark: with the Redis limiter, requests whose client had
// left during the limiter's round trip were forwarded anyway, sat 5 s with nobody to read the
// answer until the upstream closed the idle connection, and counted as upstream resets: three of
// them opened the Twilio breaker for 30 s. nginx answers such a request with 499 and never
// sends it; Envoy resets it before it leaves.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { accountSid, form, FORM, policyWith } from '../support/policy.js';
import { request, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SENDER = '+15558675310';
const MESSAGES = `/twilio/2010-04-01/Accounts/${accountSid('7')}/Messages.json`;

/** Sends a paced POST and hangs up after `afterMs`, while it still waits for its turn. */
function sendThenHangUp(port: number, requestId: string, to: string, afterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const body = form({ From: SENDER, To: to, Body: 'hello' });
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: MESSAGES,
      agent: false,
      headers: { ...FORM, 'content-length': String(Buffer.byteLength(body)), 'x-request-id': requestId },
    });
    req.on('error', () => resolve());
    req.on('response', (res) => {
      res.resume();
      resolve();
    });
    req.end(body);
    setTimeout(() => {
      req.destroy();
      resolve();
    }, afterMs);
  });
}

describe('a client that hangs up while its request waits in the proxy', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.rateLimits = [
        { name: 'sender-pacing', route: 'POST /2010-04-01/Accounts/*/Messages.json', rate: 1, per: 1, burst: 1, key: ['body:From'], maxDelay: 5 },
      ];
    });
    ({ twilio, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const toSender = () => twilio.seen.filter((s) => s.body.toString().includes(encodeURIComponent(SENDER)));

  it('is never forwarded, is not a breaker failure, and leaves the sender free', async () => {
    // The first takes the sender's one token; the next two wait about 1 s and 2 s for theirs.
    const first = await request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ From: SENDER, To: '+15550000001', Body: 'hello' }) });
    expect(first.status).toBe(200);
    await Promise.all([sendThenHangUp(p.proxyPort, 'gone-1', '+15550000002', 200), sendThenHangUp(p.proxyPort, 'gone-2', '+15550000003', 200)]);

    // Each waiter's access line is written when its turn comes and it finds its client gone;
    // with the fault, the abandoned requests reach the upstream instead.
    const abandonedLines = () => p.logLines().filter((x) => x.msg === 'request' && (x.reqId === 'gone-1' || x.reqId === 'gone-2'));
    await waitFor(() => abandonedLines().length === 2 || toSender().length > 1, { timeoutMs: 8000, everyMs: 50 });
    expect(toSender().length, 'abandoned requests sent on to Twilio').toBe(1);
    const lines = abandonedLines();
    expect(lines.length, 'an access line for each abandoned request').toBe(2);
    for (const l of lines) {
      expect(l.cause).toBe('client closed before forwarding');
      expect([l.status, l.outcome]).toEqual([499, 'client_closed']);
    }

    const breakers = await request(p.adminPort, 'GET', '/breakers');
    const b = breakers.json.breakers.find((x: { name: string }) => x.name === 'twilio');
    expect(b.state).toBe('closed');
    expect(b.failures).toBe(0);

    // The sender's next message goes through (nothing left hanging on an upstream connection).
    const next = await request(p.proxyPort, 'POST', MESSAGES, {
      headers: FORM,
      body: form({ From: SENDER, To: '+15550000004', Body: 'hello' }),
      timeoutMs: 8000,
    });
    expect(next.status).toBe(200);
    expect(toSender().length).toBe(2);
  }, 20_000);
});

describe('a client that hangs up while its request waits for an upstream connection', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // One connection: the second request queues in undici's pool behind the first.
    const policy = policyWith((pol) => {
      pol.upstreams.twilio.connections = 1;
    });
    ({ twilio, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' }, policy }));
  });
  afterAll(() => harness?.close());

  it('is never sent once the connection frees up', async () => {
    twilio.mode = 'slow';
    twilio.delayMs = 600;
    const seen = twilio.seen.length;
    const first = request(p.proxyPort, 'POST', MESSAGES, { headers: FORM, body: form({ From: SENDER, To: '+15550000011', Body: 'first' }), timeoutMs: 5000 });
    await waitFor(() => twilio.seen.length > seen, { timeoutMs: 3000, everyMs: 5 });
    // The second is dispatched now but waits for the only connection; its app gives up at 150 ms.
    await sendThenHangUp(p.proxyPort, 'queued-1', '+15550000012', 150);
    expect((await first).status).toBe(200);
    const line = await waitFor(() => p.logLines().find((x) => x.msg === 'request' && x.reqId === 'queued-1'), { timeoutMs: 5000, everyMs: 20 });
    expect(
      twilio.seen
        .slice(seen)
        .map((s) => s.body.toString())
        .filter((b) => b.includes('%2B15550000012')),
      'the abandoned request reached the upstream',
    ).toEqual([]);
    expect(line?.cause).toBe('client closed before forwarding');
    expect([line?.status, line?.outcome]).toEqual([499, 'client_closed']);
    const breakers = await request(p.adminPort, 'GET', '/breakers');
    expect(breakers.json.breakers.find((x: { name: string }) => x.name === 'twilio').failures).toBe(0);
  }, 15_000);
});
