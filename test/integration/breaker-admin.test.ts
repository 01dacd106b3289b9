// Forcing a breaker during an incident: POST /breakers/<name>/open|close|reset on the admin
// listener, with GET /breakers and the metrics reflecting each step. The same paths on the
// proxy port are just unknown routes: the app can never force a breaker. Each test gets its own
// proxy and brings its breaker to the state it starts from, so the tests hold in any order.
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, startProxy, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';
import { isAllowedHost } from '../../src/admin.js';

const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

describe('breaker admin', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, h: ProxyHarness | undefined;
  beforeEach(async () => {
    ({ twilio, vapi, p } = h = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '30', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
  });
  afterEach(() => h?.close());

  async function metrics(service = 'twilio') {
    const text = await metricsText(p.adminPort);
    const v = (name: string) => metricValue(text, name, { service });
    return {
      state: v('circuit_breaker_state'),
      failures: v('circuit_breaker_failures_total'),
      opens: v('circuit_breaker_opens_total'),
      closes: v('circuit_breaker_closes_total'),
      rejections: v('circuit_breaker_rejections_total'),
    };
  }
  const admin = (action: string, name = 'twilio') => request(p.adminPort, 'POST', `/breakers/${name}/${action}`, { headers: { 'x-breakwater-admin': '1' } });
  const list = async () => (await request(p.adminPort, 'GET', '/breakers')).json.breakers as Record<string, unknown>[];
  const send = () => request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
  /** Forces twilio open and has three requests refused (the state 'forced open' leaves behind). */
  async function forcedOpenWithThreeRefusals(): Promise<void> {
    expect((await admin('open')).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await send()).headers['x-breakwater-error']).toBe('circuit_open');
    expect(await metrics()).toEqual({ state: 2, failures: 0, opens: 1, closes: 0, rejections: 3 });
  }

  it("lists every upstream's breaker with state and counts", async () => {
    const r = await request(p.adminPort, 'GET', '/breakers');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    const names = (r.json.breakers as { name: string }[]).map((b) => b.name).sort();
    expect(names).toEqual(['twilio', 'vapi']);
    for (const b of r.json.breakers as Record<string, unknown>[]) {
      expect(b).toMatchObject({ state: 'closed', enforcing: true, failures: 0, rejections: 0, forced: false, openForMs: null });
    }
  });

  it('forced open: every request is refused with 503 circuit_open and Retry-After, nothing reaches the upstream', async () => {
    const r = await admin('open');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ name: 'twilio', state: 'open', forced: true });
    expect(await metrics()).toEqual({ state: 2, failures: 0, opens: 1, closes: 0, rejections: 0 });
    const n = twilio.started;
    for (let i = 0; i < 3; i++) {
      const a = await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
      expect(a.status).toBe(503);
      expect(a.headers['x-breakwater-error']).toBe('circuit_open');
      // It never closes by itself: a short Retry-After, and a message that says it is forced.
      expect(a.headers['retry-after']).toBe('1');
      expect((a.json as { message: string }).message).toMatch(/forced open by an operator/);
    }
    expect(twilio.started).toBe(n);
    expect(await metrics()).toEqual({ state: 2, failures: 0, opens: 1, closes: 0, rejections: 3 });
    // The other upstream is untouched.
    expect((await request(p.proxyPort, 'GET', '/vapi/call')).status).toBe(200);
    expect(await metrics('vapi')).toMatchObject({ state: 0, opens: 0, rejections: 0 });
  });

  it('a forced open does not end by itself (no half-open probe is let through)', async () => {
    await forcedOpenWithThreeRefusals();
    const [tw] = (await list()).filter((b) => b.name === 'twilio');
    expect(tw).toMatchObject({ state: 'open', forced: true, openForMs: null });
  });

  it('forced close: traffic flows again and the close is counted', async () => {
    await forcedOpenWithThreeRefusals();
    const r = await admin('close');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ state: 'closed', forced: false });
    expect(await metrics()).toEqual({ state: 0, failures: 0, opens: 1, closes: 1, rejections: 3 });
    const n = twilio.started;
    expect((await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' })).status).toBe(200);
    expect(twilio.started).toBe(n + 1);
  });

  it('forced close of a breaker that tripped on its own', async () => {
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
    expect(await metrics()).toEqual({ state: 2, failures: 3, opens: 1, closes: 0, rejections: 0 });
    expect((await list()).find((b) => b.name === 'twilio')).toMatchObject({ state: 'open', forced: false, openForMs: expect.any(Number) });
    twilio.mode = 'ok';
    expect((await admin('close')).status).toBe(200);
    expect(await metrics()).toEqual({ state: 0, failures: 3, opens: 1, closes: 1, rejections: 0 });
    expect((await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' })).status).toBe(200);
  });

  it("reset: closed, with the breaker's own counts cleared", async () => {
    // History first: three failures opened it, then a request was refused.
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) await send();
    twilio.mode = 'ok';
    await request(p.proxyPort, 'GET', SEND); // one rejection
    expect(await metrics()).toEqual({ state: 2, failures: 3, opens: 1, closes: 0, rejections: 1 });
    const r = await admin('reset');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ state: 'closed', failures: 0, successes: 0, rejections: 0, forced: false });
    const m = await metrics();
    expect(m.state).toBe(0);
    // Prometheus counters never go down: the reset shows as a close, not as lost history.
    expect(m).toMatchObject({ failures: 3, opens: 1, closes: 1, rejections: 1 });
    expect((await request(p.proxyPort, 'GET', SEND)).status).toBe(200);
  });

  it('answers 404 for an unknown breaker and 405 for a GET on an action', async () => {
    const unknown = await admin('open', 'stripe');
    expect(unknown.status).toBe(404);
    const get = await request(p.adminPort, 'GET', '/breakers/twilio/open');
    expect(get.status).toBe(405);
    expect((await list()).find((b) => b.name === 'twilio')).toMatchObject({ state: 'closed' });
  });

  it.each(['open', 'close', 'reset'])('POST /breakers/twilio/%s on the proxy port is 404 no_route and changes nothing', async (action) => {
    const before = await metrics();
    const n = twilio.started;
    const r = await request(p.proxyPort, 'POST', `/breakers/twilio/${action}`);
    expect(r.status).toBe(404);
    expect(r.headers['x-breakwater-error']).toBe('no_route');
    expect(await metrics()).toEqual(before);
    expect(twilio.started).toBe(n);
  });

  it('the other admin endpoints are not on the proxy port either', async () => {
    for (const path of ['/metrics', '/healthz', '/readyz', '/breakers']) {
      const r = await request(p.proxyPort, 'GET', path);
      expect(r.status, path).toBe(404);
      expect(r.headers['x-breakwater-error'], path).toBe('no_route');
    }
  });

  it('health and readiness answer on the admin listener', async () => {
    expect((await request(p.adminPort, 'GET', '/healthz')).status).toBe(200);
    expect((await request(p.adminPort, 'GET', '/readyz')).status).toBe(200);
  });

  // The SPEC's admin rules, checked byte for byte: what a rebinding page or a cross-site form
  // would actually put on the wire.
  function raw(head: string, body = ''): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(p.adminPort, '127.0.0.1');
      const chunks: Buffer[] = [];
      sock.setTimeout(5000, () => sock.destroy(new Error('raw request timed out')));
      sock.on('data', (c: Buffer) => chunks.push(c));
      sock.on('error', reject);
      sock.on('close', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
      });
      sock.end(`${head.replace(/\n/g, '\r\n')}\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }
  const state = async () => (await list()).find((b) => b.name === 'twilio')!.state;

  describe('admin rules', () => {
    it.each(['evil.example', 'evil.example:9090', '10.0.0.5', 'localhost.evil.example', '[::2]'])('refuses Host %s with 403, for reads too', async (host) => {
      for (const path of ['/breakers', '/metrics', '/', '/status.json']) {
        const r = await raw(`GET ${path} HTTP/1.1\nHost: ${host}`);
        expect(r.status, path).toBe(403);
        expect(r.text).not.toContain('circuit_breaker_state');
      }
    });

    it('refuses a request with no Host at all', async () => {
      expect((await raw('GET /breakers HTTP/1.0')).status).toBe(403);
    });

    it.each(['127.0.0.1', '127.0.0.1:9090', 'localhost', 'LOCALHOST:1', 'status.localhost', '[::1]:9090', '127.1.2.3'])('answers Host %s', async (host) => {
      expect((await raw(`GET /breakers HTTP/1.1\nHost: ${host}`)).status).toBe(200);
    });

    it('a POST without X-Breakwater-Admin is refused and changes nothing', async () => {
      expect(await state()).toBe('closed');
      const r = await raw('POST /breakers/twilio/open HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json', '{}');
      expect(r.status).toBe(403);
      expect(r.text).toContain('x-breakwater-admin');
      expect(await state()).toBe('closed');
    });

    it.each(['application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain;charset=UTF-8', ' Text/Plain'])(
      'a POST with form content type %s is refused even with the header',
      async (ct) => {
        const r = await raw(`POST /breakers/twilio/open HTTP/1.1\nHost: localhost\nX-Breakwater-Admin: 1\nContent-Type: ${ct}`, 'a=b');
        expect(r.status).toBe(403);
        expect(await state()).toBe('closed');
      },
    );

    it('a POST from a rebinding Host is refused even with the header', async () => {
      const r = await raw('POST /breakers/twilio/open HTTP/1.1\nHost: evil.example\nX-Breakwater-Admin: 1');
      expect(r.status).toBe(403);
      expect(await state()).toBe('closed');
    });

    it('a POST with the header and no form body works, and is logged with the caller', async () => {
      // A refused one first: its log line is checked below.
      expect((await raw('POST /breakers/twilio/open HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json', '{}')).status).toBe(403);
      const r = await raw(
        'POST /breakers/twilio/open HTTP/1.1\nHost: localhost:9090\nX-Breakwater-Admin: 1\nUser-Agent: oncall-runbook/1.0\nContent-Type: application/json',
        '{}',
      );
      expect(r.status).toBe(200);
      expect(await state()).toBe('open');
      const line = p.logLines().find((l) => l.action === 'open' && l.userAgent === 'oncall-runbook/1.0');
      expect(line).toMatchObject({ upstream: 'twilio', before: 'closed', after: 'open', peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
      const refused = p.logLines().filter((l) => String(l.msg).startsWith('admin action refused'));
      expect(refused.length).toBeGreaterThan(0);
      expect(refused[0]).toMatchObject({ peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
      expect((await admin('reset')).status).toBe(200);
    });
  });

  describe('Host names the listener answers to', () => {
    it('an IP-literal Host equal to the address the connection arrived on (kubelet probes, pod scrapes)', () => {
      expect(isAllowedHost('10.1.2.3:9090', [], '10.1.2.3')).toBe(true);
      expect(isAllowedHost('10.1.2.3', [], '::ffff:10.1.2.3')).toBe(true);
      expect(isAllowedHost('10.1.2.3', [], '10.9.9.9')).toBe(false);
      expect(isAllowedHost('10.1.2.3', [])).toBe(false);
      // A name is never matched against the local address: that is what rebinding sends.
      expect(isAllowedHost('evil.example', [], 'evil.example')).toBe(false);
    });

    it('a configured admin name (ADMIN_NAMES) is accepted; others still refused', async () => {
      const q = await startProxy({ TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url, ADMIN_NAMES: 'breakwater, bw.internal' });
      try {
        const get = (host: string) => request(q.adminPort, 'GET', '/breakers', { headers: { host } });
        expect((await get('breakwater:9090')).status).toBe(200);
        expect((await get('BW.internal')).status).toBe(200);
        expect((await get('evil.example')).status).toBe(403);
      } finally {
        await q.close();
      }
    });
  });
});
