// An upstream that sends `100 Continue` it was not asked for (Breakwater never sends
// `Expect: 100-continue` upstream) before a `201`. RFC 9110 §15.2 says a client must be able to
// skip 1xx answers; undici 7's HTTP/1.1 parser instead destroys the socket on a 100 it did not ask
// for (lib/dispatcher/client-h1.js, onHeadersComplete: `if (statusCode === 100) util.destroy(socket,
// new SocketError('bad response'))`) and offers no option or dispatcher hook to skip it. The create
// may well have happened, so the safe outcome is pinned here: a keyed create is answered and stored
// as "may have been sent", its retry is neither re-sent nor replayed as a success, and an unkeyed
// POST is not retried.
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { fetchOnce, LOCAL } from './support.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC00000000000000000000000000000019/Messages.json';
const CREATED = '{"sid":"SM00000000000000000000000000000019","status":"queued"}';

describe('an unsolicited 100 Continue before a 201', () => {
  let server: net.Server, vapi: FakeUpstream, p: TestProxy;
  const socks = new Set<Socket>();
  let creates = 0;
  beforeAll(async () => {
    server = net.createServer((s) => {
      socks.add(s);
      s.on('error', () => {});
      s.on('close', () => socks.delete(s));
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const cl = /content-length: *(\d+)/i.exec(buf.slice(0, end));
        if (cl && buf.length < end + 4 + Number(cl[1])) return;
        buf = '';
        creates++;
        s.write(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: ${CREATED.length}\r\n\r\n${CREATED}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, LOCAL, r));
    vapi = await fakeUpstream('vapi');
    p = await startProxy({
      RATE_LIMIT_PER_MINUTE: '100000',
      TWILIO_BASE_URL: `http://${LOCAL}:${(server.address() as AddressInfo).port}`,
      VAPI_BASE_URL: vapi.url,
    });
  });
  afterAll(async () => {
    await p.close();
    for (const s of socks) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    await vapi.close();
  });

  const create = (key?: string) =>
    fetchOnce(p.proxyPort, 'POST', MESSAGES, {
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(key ? { 'idempotency-key': key } : {}) },
      body: 'To=%2B15551230019&Body=hi',
    });

  it('a keyed create is answered "may have been sent", and its retry is neither re-sent nor replayed as a success', async () => {
    const before = creates;
    const first = await create('k-continue-1');
    expect(first.status).toBe(502);
    expect(first.headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect(creates).toBe(before + 1);
    const retry = await create('k-continue-1');
    expect(creates).toBe(before + 1);
    expect(retry.status).toBeGreaterThanOrEqual(500);
    expect(retry.text).not.toContain('SM00000000000000000000000000000019');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    for (const r of [first, retry]) {
      expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
      expect((JSON.parse(r.text) as { message: string }).message).toMatch(/may have taken effect\. It is not sent again/);
    }
    // The access line names undici's refusal, for the operator.
    expect(p.logLines().some((l) => l.status === 502 && String(l.cause).includes('UND_ERR_SOCKET'))).toBe(true);
  });

  it('a GET is retried as after a reset, then answered 502', async () => {
    const before = creates;
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(502);
    expect(creates).toBe(before + 3);
  });

  it('an unkeyed create is not retried', async () => {
    const before = creates;
    const r = await create();
    expect(r.status).toBe(502);
    expect(creates).toBe(before + 1);
  });
});
