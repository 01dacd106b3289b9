// HTTP/1.1 pipelining: a client may send its next request before the first is answered. Node
// queues the second response until the first is done, and a queued response is never told when
// its connection closes. An upstream answer larger than that queue's buffer used to pause on
// back-pressure that would never drain: when the client then went away, the attempt waited
// forever, holding its bulkhead slot and upstream connection (undici's body timeout does not run
// while the body is paused). A client could park the upstream's whole bulkhead that way.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const BIG = Buffer.alloc(1024 * 1024, 'x');

describe('a pipelining client that leaves while its second answer waits in the queue', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000', UPSTREAM_TIMEOUT: '60' } }));
    twilio.handler = (req, res) => {
      if (req.url!.includes('slow')) return; // never answers: the first response holds the queue
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BIG.length) });
      res.end(BIG);
    };
  });
  afterAll(() => harness?.close());

  const gauge = async (name: string) => metricValue(await metricsText(p.adminPort), name, { upstream: 'twilio' }) ?? 0;

  it('releases the queued attempt, its bulkhead slot and its upstream connection when the client closes', async () => {
    const socket = net.connect(p.proxyPort, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(
      'GET /twilio/2010-04-01/Accounts/AC1/slow.json HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: pipe-1\r\n\r\n' +
        'GET /twilio/2010-04-01/Accounts/AC1/big.json HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: pipe-2\r\n\r\n',
    );
    // Both are with the upstream: the second's answer is being relayed into Node's queue.
    await waitFor(() => twilio.seen.length >= 2, { timeoutMs: 3000, everyMs: 10 });
    await waitFor(async () => (await gauge('breakwater_bulkhead_active')) === 2, { timeoutMs: 3000, everyMs: 20 });
    socket.destroy();
    // Both attempts end: nothing in flight, no slot held, and an access line for each.
    const drained = await waitFor(async () => (await gauge('breakwater_bulkhead_active')) === 0 && (await gauge('breakwater_requests_in_flight')) === 0, {
      timeoutMs: 5000,
      everyMs: 50,
    });
    expect(drained, 'attempts still holding the bulkhead after the client left').toBe(true);
    const line = (id: string) => p.logLines().find((x) => x.msg === 'request' && x.reqId === id);
    // The first had no answer yet: the client's. The second's head had been handed to Node
    // (queued, never on the wire): logged with its status and as cut short.
    expect([line('pipe-1')?.status, line('pipe-1')?.outcome]).toEqual([499, 'client_closed']);
    expect([line('pipe-2')?.status, line('pipe-2')?.aborted]).toEqual([200, 'client closed']);
  });
});
