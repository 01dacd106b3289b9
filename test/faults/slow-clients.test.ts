// Slow and greedy clients: a header dribbled byte by byte (slowloris), a body that stalls, idle
// connections, and more connections than server.maxConnections. Each is cut off by a server
// limit, nothing incomplete reaches the upstream, and other clients keep being served.
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, type TestProxy } from '../support/proxy.js';
import { connectRaw, fetchOnce, policyWithServer, rawHeader } from './support.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json';
const ENV = { RATE_LIMIT_PER_MINUTE: '1000000' };

interface Dribble {
  /** Bytes written before the server closed the connection (or all of them). */
  written: number;
  total: number;
  answer: string;
  closedByPeer: boolean;
}

/** Writes `payload` `step` bytes every `everyMs`, until done, the peer closes, or `maxMs` passes. */
function dribble(sock: Socket, payload: string, everyMs: number, maxMs: number, step = 1): Promise<Dribble> {
  return new Promise((resolve) => {
    let written = 0;
    let answer = '';
    let closedByPeer = false;
    sock.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      closedByPeer = written < payload.length || closedByPeer;
      finish();
    });
    const started = Date.now();
    const timer = setInterval(() => {
      if (sock.destroyed || Date.now() - started > maxMs) return finish();
      if (written < payload.length) {
        sock.write(payload.slice(written, written + step));
        written = Math.min(payload.length, written + step);
      }
    }, everyMs);
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      clearInterval(timer);
      const peerClosed = closedByPeer || sock.destroyed;
      sock.destroy();
      resolve({ written, total: payload.length, answer, closedByPeer: peerClosed });
    }
  });
}

describe('slow clients (headersTimeout 1 s, requestTimeout 2 s)', () => {
  let up: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio: up, p } = harness = await withProxy({ env: ENV, policy: policyWithServer({ headersTimeout: 1, requestTimeout: 2 }) }));
  });
  afterAll(() => harness?.close());

  it('slowloris: a request head sent a byte at a time is cut off with 408, while other clients are served', async () => {
    const head = `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nUser-Agent: slowloris\r\nX-Pad: ${'p'.repeat(40)}\r\n\r\n`;
    const socks = await Promise.all(Array.from({ length: 5 }, () => connectRaw(p.proxyPort)));
    const slow = Promise.all(socks.map((s) => dribble(s, head, 100, 20_000)));
    // Meanwhile an ordinary client is served.
    const normal = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(normal.status).toBe(200);
    for (const r of await slow) {
      expect(r.closedByPeer).toBe(true);
      expect(r.written).toBeLessThan(r.total); // cut off before the head was complete
      expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
      expect(rawHeader(r.answer, 'x-breakwater-error')).toBe('request_timeout');
      expect(rawHeader(r.answer, 'connection')).toBe('close');
    }
    expect(up.seen.filter((s) => s.headers['user-agent'] === 'slowloris')).toEqual([]);
  });

  it('an idle connection that never sends a byte is closed by the header timeout', async () => {
    const s = await connectRaw(p.proxyPort);
    const r = await dribble(s, '', 50, 10_000);
    expect(r.closedByPeer).toBe(true);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a buffered body that stalls: 408 at the request timeout; the upstream never sees the request', async () => {
    const seen = up.seen.length;
    const started = up.started;
    const s = await connectRaw(p.proxyPort);
    const head = `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nTo=%2B1555`;
    s.write(head);
    const r = await dribble(s, 'x'.repeat(100), 1000, 10_000); // 1 byte/s: the whole body would take 100 s
    expect(r.closedByPeer).toBe(true);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(up.seen.length).toBe(seen);
    expect(up.started).toBe(started); // bodies up to 64 KiB are read whole before any upstream work
  });

  it('a streamed body (over 64 KiB) that stalls: cut at the request timeout; the upstream never gets a complete request', async () => {
    const seen = up.seen.length;
    const s = await connectRaw(p.proxyPort);
    s.write(`POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\n`);
    s.write(Buffer.alloc(70_000, 0x61));
    const r = await dribble(s, 'y'.repeat(100), 1000, 10_000);
    expect(r.closedByPeer).toBe(true);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(up.seen.length).toBe(seen);
    // The proxy is unharmed and the upstream's half-sent request was abandoned, not left open.
    expect((await fetchOnce(p.proxyPort, 'GET', MESSAGES)).status).toBe(200);
  });

  it('afterwards the proxy serves and holds no leftover client connections', async () => {
    expect((await fetchOnce(p.proxyPort, 'GET', MESSAGES)).status).toBe(200);
    expect(
      await waitFor(async () => metricValue(await metricsText(p.adminPort), 'breakwater_client_connections') === 0, { timeoutMs: 8000, everyMs: 100 }),
    ).toBe(true);
  });
});

describe('connection cap (maxConnections 20, headersTimeout 3 s)', () => {
  let p: TestProxy, harness: ProxyHarness | undefined;
  const held: Socket[] = [];
  const answers = new Map<Socket, string>();
  /** An idle client: connects, never sends, reads whatever the server says. */
  const idle = async () => {
    const s = await connectRaw(p.proxyPort);
    answers.set(s, '');
    s.on('data', (d: Buffer) => answers.set(s, answers.get(s) + d.toString('latin1')));
    s.on('error', () => {});
    held.push(s);
    return s;
  };
  beforeAll(async () => {
    ({ p } = harness = await withProxy({ env: ENV, policy: policyWithServer({ maxConnections: 20, headersTimeout: 3, requestTimeout: 5 }) }));
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await harness?.close();
  });

  const connections = async () => metricValue(await metricsText(p.adminPort), 'breakwater_client_connections') ?? -1;

  it('20 idle sockets fill the cap; the 21st connection is closed unanswered; freeing slots lets new clients in', async () => {
    for (let i = 0; i < 20; i++) await idle();
    expect(await waitFor(async () => (await connections()) === 20, { timeoutMs: 3000 })).toBe(true);

    // The 21st: accepted by the kernel, closed at once by the server, never answered.
    const extra = await connectRaw(p.proxyPort).catch(() => undefined);
    if (extra) {
      const r = await dribble(extra, '', 50, 3000);
      expect(r.closedByPeer).toBe(true);
      expect(r.answer).toBe('');
    }
    const refused = await fetchOnce(p.proxyPort, 'GET', MESSAGES, { timeoutMs: 3000 });
    expect(refused.status).toBeUndefined();
    expect(refused.error).toBeDefined();
    expect(await connections()).toBe(20);

    // Five clients leave: new clients are served again.
    for (const s of held.splice(0, 5)) s.destroy();
    let last = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    const served = await waitFor(async () => (last = await fetchOnce(p.proxyPort, 'GET', MESSAGES)).status === 200, { timeoutMs: 3000, everyMs: 50 });
    expect(served, `last: ${last.status} ${last.error}`).toBe(true);
  });

  it('slots held by idle clients are reclaimed by the header timeout, so a slow crowd cannot starve the rest for long', async () => {
    // Top the cap up again with idle sockets that never send anything.
    while (held.length < 20) await idle();
    expect(await waitFor(async () => (await connections()) >= 20, { timeoutMs: 3000 })).toBe(true);
    // Within headersTimeout (3 s) plus a sweep, every idle socket is closed by the server…
    const closed = await waitFor(() => held.every((s) => s.destroyed || s.readableEnded), { timeoutMs: 10_000, everyMs: 100 });
    expect(closed).toBe(true);
    for (const s of held) {
      const a = answers.get(s) ?? '';
      if (a) expect(a).toMatch(/^HTTP\/1\.1 408 /);
    }
    // …and a new client is served.
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
  });
});
