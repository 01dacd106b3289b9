// The second hardening pass (issue 19): hostile clients and misbehaving upstreams that used to
// hold resources for ever or slip past a limit. Raw sockets where Node's client would not
// misbehave the way an attacker does.
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, startProxy, type TestProxy } from '../support/proxy.js';
import { connectRaw, fetchOnce, LOCAL, policyWithServer, rawExchange, rawHeader } from './support.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json';
const ENV = { RATE_LIMIT_PER_MINUTE: '1000000' };

describe('raw refusals do not leave half-open connections (maxConnections 30)', () => {
  let p: TestProxy, harness: ProxyHarness | undefined;
  const held: Socket[] = [];
  beforeAll(async () => {
    // Long header/request timeouts: only the refusal itself may free the slots.
    ({ p } = harness = await withProxy({ env: ENV, policy: policyWithServer({ maxConnections: 30, headersTimeout: 60, requestTimeout: 120 }) }));
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await harness?.close();
  });
  const connections = async () => metricValue(await metricsText(p.adminPort), 'breakwater_client_connections') ?? -1;

  it('60 clients that send CONNECT or garbage and never read nor close free their slots within seconds', async () => {
    const payloads = [
      `CONNECT ${LOCAL}:1 HTTP/1.1\r\nHost: ${LOCAL}:1\r\n\r\n`,
      'NOT HTTP AT ALL\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n`,
    ];
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 30; i++) {
        const s = await connectRaw(p.proxyPort);
        s.on('error', () => {});
        s.pause(); // never reads, so never sees the server's FIN and never closes on its own
        s.write(payloads[i % payloads.length]!);
        held.push(s);
      }
      // Every slot is released by the server although no client closed its side.
      expect(await waitFor(async () => (await connections()) === 0, { timeoutMs: 6000, everyMs: 100 })).toBe(true);
    }
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
  });
});

/** The default policy with keys added to every upstream block (after its `timeout:` line). */
function policyWithUpstream(lines: Record<string, number>, base = policyWithServer({})): string {
  const extra = Object.entries(lines)
    .map(([k, v]) => `\n    ${k}: ${v}`)
    .join('');
  return base.replace(/^( {4}timeout: .*)$/gm, `$1${extra}`).replace(/maxConcurrent: 100/g, 'maxConcurrent: 2');
}

describe('a client that stops reading a large answer (sendTimeout 1 s, bulkhead 2)', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio: up, p } = harness = await withProxy({ env: ENV, policy: policyWithUpstream({ sendTimeout: 1 }) }));
    up.body = Buffer.alloc(16 * 1024 * 1024, 'x'); // far more than socket buffers hold
  });
  afterAll(() => harness?.close());
  const active = async () => metricValue(await metricsText(p.adminPort), 'breakwater_bulkhead_active', { upstream: 'twilio' }) ?? -1;

  it('releases the bulkhead slot, the upstream connection and the client connection within the send timeout', async () => {
    const stalled: Socket[] = [];
    const started = up.started;
    for (let i = 0; i < 2; i++) {
      const s = await connectRaw(p.proxyPort);
      s.on('error', () => {});
      s.write(`GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\n\r\n`);
      s.pause(); // reads nothing: the answer backs up into the proxy
      stalled.push(s);
    }
    // Both answers started (on a loaded machine the first may already be cut before the second
    // fills its slot, so the slots are not required to be seen full at once).
    expect(await waitFor(() => up.started >= started + 2, { timeoutMs: 5000 })).toBe(true);
    const t0 = Date.now();
    // Both slots come back within sendTimeout plus a sweep and scheduling slack.
    expect(await waitFor(async () => (await active()) === 0, { timeoutMs: 6000, everyMs: 50 })).toBe(true);
    const released = Date.now() - t0;
    expect(released).toBeLessThan(5000);
    // The upstream's sockets of those answers are closed, and the stalled clients are cut off.
    expect(await waitFor(() => up.sockets.size === 0 || [...up.sockets].every((s) => s.destroyed), { timeoutMs: 3000 })).toBe(true);
    expect(await waitFor(() => stalled.every((s) => s.destroyed || s.readableEnded || (s.resume(), false)), { timeoutMs: 3000 })).toBe(true);
    // Others are served again, and the access line says why the answers were cut.
    up.body = 'small';
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
    expect(p.logLines().filter((l) => l.msg === 'request' && l.aborted === 'send_timeout').length).toBe(2);
    for (const s of stalled) s.destroy();
  });
});

describe('the upstream exchange has a total deadline (UPSTREAM_TIMEOUT 2 s, exchangeTimeout 3 s)', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio: up, p } = harness = await withProxy({ env: { ...ENV, UPSTREAM_TIMEOUT: '2' }, policy: policyWithUpstream({ exchangeTimeout: 3 }) }));
  });
  afterAll(() => harness?.close());

  it('a 103 every 0.4 s does not re-arm the headers timeout: 504 upstream_timeout after about 2 s', async () => {
    up.handler = (_req, res) => {
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.writeEarlyHints({ link: '</a>; rel=preload' })), 400);
      res.on('close', () => clearInterval(t));
    };
    const t0 = Date.now();
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES, { timeoutMs: 15_000 });
    expect(r.status).toBe(504);
    expect(r.headers['x-breakwater-error']).toBe('upstream_timeout');
    expect(Date.now() - t0).toBeLessThan(4500);
  });

  it('a body trickled a byte every 0.3 s is cut at the deadline: the client sees no clean end, the outcome is truncated', async () => {
    up.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write('x')), 300);
      res.on('close', () => clearInterval(t));
    };
    const t0 = Date.now();
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES, { timeoutMs: 15_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(Date.now() - t0).toBeLessThan(5500);
    const m = await metricsText(p.adminPort);
    expect(metricValue(m, 'breakwater_requests_total', { upstream: 'twilio', status: '200', outcome: 'truncated' })).toBe(1);
    expect(await waitFor(() => p.logLines().some((l) => l.msg === 'request' && l.aborted === 'BW_EXCHANGE_TIMEOUT'), { timeoutMs: 2000 })).toBe(true);
  });

  it('chunked: a cut body never gets the terminating chunk', async () => {
    up.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write('y')), 300);
      res.on('close', () => clearInterval(t));
    };
    const t0 = Date.now();
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES, { timeoutMs: 15_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.error).not.toBe('client-timeout'); // the proxy broke it, not our own give-up
    expect(Date.now() - t0).toBeLessThan(5500);
  });
});

describe('requests refused before routing', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio: up, p } = harness = await withProxy({
      env: { ...ENV, TWILIO_ACCOUNT_SID: 'AC00000000000000000000000000000001', TWILIO_AUTH_TOKEN: 'secret-token' },
    }));
  });
  afterAll(() => harness?.close());

  it.each(['TRACE', 'PROPFIND', 'LINK'])('%s is 405 method_not_allowed and never reaches the upstream (no credentials echoed)', async (method) => {
    const before = up.started;
    const r = await rawExchange(p.proxyPort, `${method} ${MESSAGES} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(405);
    expect(rawHeader(r.text, 'x-breakwater-error')).toBe('method_not_allowed');
    expect(r.text).not.toContain('Basic ');
    expect(up.started).toBe(before);
  });

  it('a head of more than 100 lines is 431 headers_too_large, not cut to size (a late Authorization would vanish)', async () => {
    const before = up.started;
    const lines = Array.from({ length: 120 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const r = await rawExchange(p.proxyPort, `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\n${lines}Authorization: Basic QUM6eA==\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(431);
    expect(rawHeader(r.text, 'x-breakwater-error')).toBe('headers_too_large');
    expect(up.started).toBe(before);
    // 99 lines are fine.
    const ok = await rawExchange(
      p.proxyPort,
      `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\n${lines.split('\r\n').slice(0, 97).join('\r\n')}\r\nConnection: close\r\n\r\n`,
    );
    expect(ok.status).toBe(200);
  });

  it('a Transfer-Encoding other than chunked is 400 bad_request (no 501 code in the catalog), never relayed decoded', async () => {
    const before = up.started;
    const r = await rawExchange(
      p.proxyPort,
      `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    );
    expect(r.status).toBe(400);
    expect(rawHeader(r.text, 'x-breakwater-error')).toBe('bad_request');
    expect(up.started).toBe(before);
  });

  it('Expect: 100-continue with an oversized Content-Length gets 413 and never 100', async () => {
    const before = up.started;
    const r = await rawExchange(
      p.proxyPort,
      `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${64 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n`,
      { untilResponse: true },
    );
    expect(r.statusLine).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.text).not.toContain('100 Continue');
    expect(up.started).toBe(before);
    // A small body still gets its 100 and is forwarded.
    const ok = await rawExchange(
      p.proxyPort,
      `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n`,
      { untilResponse: true },
    );
    expect(ok.statusLine).toMatch(/^HTTP\/1\.1 100 /);
  });
});

/** An upstream that answers every request with `script(request head)` written raw, then keeps or closes the socket. */
async function rawUpstream(script: { answer: (head: string) => string }): Promise<{ url: string; close(): Promise<void> }> {
  const socks = new Set<Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    s.on('close', () => socks.delete(s));
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.slice(0, end);
      const cl = /content-length: *(\d+)/i.exec(head);
      if (cl && buf.length < end + 4 + Number(cl[1])) return;
      buf = '';
      s.write(script.answer(head));
    });
  });
  await new Promise<void>((r) => server.listen(0, LOCAL, r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${LOCAL}:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('upstream answers handled per RFC 9110/9112', () => {
  let answer = (_head: string) => '';
  let up: Awaited<ReturnType<typeof rawUpstream>>, vapi: FakeUpstream, p: TestProxy;
  beforeAll(async () => {
    up = await rawUpstream({ answer: (h) => answer(h) });
    vapi = await fakeUpstream('vapi');
    p = await startProxy({ ...ENV, TWILIO_BASE_URL: up.url, VAPI_BASE_URL: vapi.url, UPSTREAM_TIMEOUT: '3' });
  });
  afterAll(async () => {
    await p.close();
    await up.close();
    await vapi.close();
  });
  const failures = async () => metricValue(await metricsText(p.adminPort), 'circuit_breaker_failures_total', { service: 'twilio' }) ?? 0;

  it('upstream-set X-Breakwater-Error, Idempotent-Replayed and headers named in its Connection are not relayed', async () => {
    answer = () =>
      'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Breakwater-Error: circuit_open\r\nIdempotent-Replayed: true\r\nX-Breakwater-Retries: 9\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: internal\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\n{}';
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
    expect(r.headers['x-kept']).toBe('yes');
    expect(r.headers['x-breakwater-error']).toBeUndefined();
    expect(r.headers['idempotent-replayed']).toBeUndefined();
    expect(r.headers['x-breakwater-retries']).toBeUndefined();
    expect(r.headers['x-secret-hop']).toBeUndefined();
  });

  it('a 304 and a 204 with Content-Length, and a HEAD answer with Content-Length, are relayed whole on a working connection; no breaker failure', async () => {
    const before = await failures();
    answer = (h) =>
      h.startsWith('HEAD')
        ? 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n'
        : /if-none-match/i.test(h)
          ? 'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\nContent-Length: 1234\r\n\r\n'
          : 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n';
    const a = await fetchOnce(p.proxyPort, 'GET', MESSAGES, { headers: { 'if-none-match': '"a"' } });
    expect(a.status, JSON.stringify(a) + JSON.stringify(p.logLines().slice(-3))).toBe(304);
    expect(a.error).toBeUndefined();
    const b = await fetchOnce(p.proxyPort, 'DELETE', MESSAGES);
    expect(b.status).toBe(204);
    expect(b.error).toBeUndefined();
    const c = await fetchOnce(p.proxyPort, 'HEAD', MESSAGES);
    expect(c.status).toBe(200);
    expect(c.error).toBeUndefined();
    expect(c.headers['content-length']).toBe('1234');
    expect(await failures()).toBe(before);
  });

  it('a status outside 100-599 is not relayed: 502 upstream_unavailable', async () => {
    answer = () => 'HTTP/1.1 700 Weird\r\nContent-Length: 0\r\n\r\n';
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(502);
    expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
  });
});

describe('request header names with underscores', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio: up, p } = harness = await withProxy({ env: ENV }));
  });
  afterAll(() => harness?.close());

  it('are not relayed (X_Forwarded_For, X_Original_URL would alias dropped headers behind CGI-style servers)', async () => {
    const r = await rawExchange(
      p.proxyPort,
      `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX_Original_URL: /admin\r\nX-Kept: yes\r\nConnection: close\r\n\r\n`,
    );
    expect(r.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.headers['x-kept']).toBe('yes');
    expect(Object.keys(seen.headers).filter((k) => k.includes('_'))).toEqual([]);
  });
});

describe('respelled paths meet the same route (and so its limits)', () => {
  let p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ p } = harness = await withProxy({ env: ENV }));
  });
  afterAll(() => harness?.close());

  it.each([
    '/twilio/2010-04-01/Accounts/AC1/%4Dessages.json',
    '/twilio/2010-04-01/Accounts/AC1/Messages.json/',
    '/twilio/2010-04-01//Accounts/AC1/Messages.json',
  ])('%s is route messages.create', async (path) => {
    const r = await fetchOnce(p.proxyPort, 'POST', path, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'To=%2B15550001111&Body=x',
    });
    expect(r.status).toBe(200);
    const id = r.headers['x-request-id'];
    expect(await waitFor(() => p.logLines().some((l) => l.msg === 'request' && l.reqId === id), { timeoutMs: 2000 })).toBe(true);
    expect(p.logLines().find((l) => l.msg === 'request' && l.reqId === id)?.route).toBe('messages.create');
  });
});
