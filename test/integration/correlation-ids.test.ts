// Correlation: a valid X-Request-Id is kept, anything else is replaced by a minted one; the ID
// goes upstream, comes back on the response (forwarded or proxy-made) and is the `reqId` of the
// request's log lines. A W3C traceparent passes through byte for byte.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('correlation IDs', () => {
  let vapi: FakeUpstream, twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '100000' } }));
  });
  afterAll(() => harness?.close());

  const accessLine = (reqId: string) => p.logLines().find((l) => l.msg === 'request' && l.reqId === reqId);

  it('keeps a valid incoming X-Request-Id: sent upstream, echoed back, and the reqId of the access log line', async () => {
    const id = 'app-7f3a.b2:c=d+e/f@g_h-1';
    const r = await request(p.proxyPort, 'GET', '/vapi/call/abc', { headers: { 'x-request-id': id } });
    expect(r.status).toBe(200);
    expect(r.headers['x-request-id']).toBe(id);
    expect(vapi.seen.at(-1)?.headers['x-request-id']).toBe(id);
    expect(accessLine(id)).toMatchObject({ reqId: id, upstream: 'vapi', method: 'GET', status: 200, route: 'call.fetch' });
  });

  it('mints a UUID when none is sent, and uses the same one upstream, on the response and in the log', async () => {
    const n = vapi.seen.length;
    const r = await request(p.proxyPort, 'GET', '/vapi/call');
    expect(r.status).toBe(200);
    const id = r.headers['x-request-id'] as string;
    expect(id).toMatch(UUID);
    expect(vapi.seen.length).toBe(n + 1);
    expect(vapi.seen.at(-1)?.headers['x-request-id']).toBe(id);
    expect(accessLine(id)).toMatchObject({ reqId: id, status: 200 });
  });

  it('mints a fresh ID per request', async () => {
    const a = await request(p.proxyPort, 'GET', '/vapi/call');
    const b = await request(p.proxyPort, 'GET', '/vapi/call');
    expect(a.headers['x-request-id']).toMatch(UUID);
    expect(b.headers['x-request-id']).toMatch(UUID);
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
  });

  it.each([
    ['too long', 'a'.repeat(129)],
    ['a space', 'abc def'],
    ['quotes and braces', '"},{"level":60'],
    ['angle brackets', '<script>'],
    ['a semicolon', 'id;rm -rf'],
  ])('replaces an incoming ID with %s, and never forwards or logs the bad one', async (_desc, bad) => {
    const n = vapi.seen.length;
    const r = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-request-id': bad } });
    expect(r.status).toBe(200);
    const id = r.headers['x-request-id'] as string;
    expect(id).toMatch(UUID);
    expect(vapi.seen.length).toBe(n + 1);
    expect(vapi.seen.at(-1)?.headers['x-request-id']).toBe(id);
    expect(accessLine(id)).toBeDefined();
    expect(p.logs.join('')).not.toContain(bad);
  });

  it('keeps an ID of exactly 128 characters', async () => {
    const id = 'x'.repeat(128);
    const r = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-request-id': id } });
    expect(r.headers['x-request-id']).toBe(id);
    expect(vapi.seen.at(-1)?.headers['x-request-id']).toBe(id);
  });

  it('answers with its own ID even when the upstream sends a different X-Request-Id', async () => {
    vapi.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'upstream-chosen-id' });
      res.end('{}');
    };
    try {
      const r = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-request-id': 'mine-1' } });
      expect(r.status).toBe(200);
      expect(r.headers['x-request-id']).toBe('mine-1');
      expect(r.text).toBe('{}');
    } finally {
      vapi.handler = undefined;
    }
  });

  it('passes traceparent and tracestate through unchanged', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const tracestate = 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7';
    const r = await request(p.proxyPort, 'POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', {
      headers: { traceparent, tracestate, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'To=%2B15555550100&Body=hi',
    });
    expect(r.status).toBe(200);
    expect(twilio.seen.at(-1)?.headers.traceparent).toBe(traceparent);
    expect(twilio.seen.at(-1)?.headers.tracestate).toBe(tracestate);
  });

  it('carries the ID on proxy-made errors: header, body and log line', async () => {
    const r = await request(p.proxyPort, 'GET', '/nowhere/x', { headers: { 'x-request-id': 'err-corr-1' } });
    expect(r.status).toBe(404);
    expect(r.headers['x-request-id']).toBe('err-corr-1');
    expect(r.json.requestId).toBe('err-corr-1');
    expect(accessLine('err-corr-1')).toMatchObject({ status: 404, outcome: 'no_route' });
  });

  it('mints an ID for a proxy-made error too, the same in header, body and log', async () => {
    const r = await request(p.proxyPort, 'GET', '/nowhere/y');
    const id = r.headers['x-request-id'] as string;
    expect(id).toMatch(UUID);
    expect(r.json.requestId).toBe(id);
    expect(accessLine(id)).toMatchObject({ status: 404 });
  });

  it('gives every log line that mentions a failed request its reqId', async () => {
    vapi.mode = 'reset';
    try {
      const r = await request(p.proxyPort, 'POST', '/vapi/call', {
        headers: { 'x-request-id': 'multi-line-1', 'content-type': 'application/json' },
        body: '{}',
      });
      expect(r.status).toBe(502);
      expect(r.headers['x-request-id']).toBe('multi-line-1');
    } finally {
      vapi.mode = 'ok';
    }
    const mine = p.logLines().filter((l) => JSON.stringify(l).includes('multi-line-1'));
    expect(mine.length).toBeGreaterThan(0);
    for (const l of mine) expect(l.reqId).toBe('multi-line-1');
  });
});
