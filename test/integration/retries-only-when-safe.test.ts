// Retries never turn one request into two SMS: a POST that may have reached the upstream is
// sent exactly once; an idempotent GET is retried after a reset or a 502/503/504 and succeeds;
// a POST that certainly never left (connection refused) may be retried. `X-Breakwater-Retries`
// and breakwater_retries_total show what happened.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, sleep, startProxy, type TestProxy } from '../support/proxy.js';
import { freePort } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

/** A handler that misbehaves for the first `n` requests, then answers 200. */
function firstN(n: number, misbehave: (req: IncomingMessage, res: ServerResponse) => void) {
  let count = 0;
  return (req: IncomingMessage, res: ServerResponse) => {
    if (count++ < n) return misbehave(req, res);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, attempt: count }));
  };
}
const reset = (req: IncomingMessage) => req.socket.resetAndDestroy();
const status = (code: number) => (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ status: code }));
};

describe('retries only when safe', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  const retries = async (reason?: string) => {
    const text = await metricsText(p.adminPort);
    if (reason) return metricValue(text, 'breakwater_retries_total', { upstream: 'twilio', reason }) ?? 0;
    return text
      .split('\n')
      .filter((l) => l.startsWith('breakwater_retries_total{') && l.includes('upstream="twilio"'))
      .reduce((s, l) => s + Number(l.split(' ').at(-1)), 0);
  };

  beforeAll(async () => {
    // A high threshold keeps the breaker out of the way: this file is about retries.
    ({ twilio, p } = harness = await withProxy({ env: { CIRCUIT_BREAKER_THRESHOLD: '1000', RATE_LIMIT_PER_MINUTE: '100000' } }));
  });
  afterAll(() => harness?.close());
  beforeEach(() => {
    twilio.handler = undefined;
    twilio.mode = 'ok';
    twilio.seen.length = 0;
    twilio.started = 0;
  });

  it('sends a POST whose connection was reset after sending exactly once, and answers 502', async () => {
    const before = await retries();
    twilio.mode = 'reset';
    const r = await request(p.proxyPort, 'POST', MESSAGES, { headers: { ...form, 'x-request-id': 'sms-once' }, body: 'To=%2B15555550100&Body=only%20once' });
    expect(r.status).toBe(502);
    expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect(r.headers['x-breakwater-retries']).toBeUndefined();
    // Give a (wrong) late retry every chance to show up before counting.
    await sleep(300);
    expect(twilio.started).toBe(1);
    expect(twilio.seen.map((s) => s.body.toString())).toEqual(['To=%2B15555550100&Body=only%20once']);
    expect(await retries()).toBe(before);
  });

  it('does not retry a POST answered 503 by the upstream', async () => {
    twilio.handler = firstN(1, status(503));
    const r = await request(p.proxyPort, 'POST', MESSAGES, { headers: form, body: 'To=x' });
    expect(r.status).toBe(503);
    expect(r.headers['x-breakwater-retries']).toBeUndefined();
    await sleep(100);
    expect(twilio.started).toBe(1);
  });

  it('does not retry a PATCH (not idempotent) after a reset', async () => {
    twilio.mode = 'reset';
    const r = await request(p.proxyPort, 'PATCH', '/twilio/2010-04-01/Accounts/AC1/Calls/CA1.json', { headers: form, body: 'Status=completed' });
    expect(r.status).toBe(502);
    await sleep(100);
    expect(twilio.started).toBe(1);
  });

  it('retries a GET after a reset and succeeds, with X-Breakwater-Retries: 1', async () => {
    const before = await retries('reset');
    twilio.handler = firstN(1, reset);
    const r = await request(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ ok: true, attempt: 2 });
    expect(r.headers['x-breakwater-retries']).toBe('1');
    expect(twilio.started).toBe(2);
    expect(twilio.seen.map((s) => s.method)).toEqual(['GET', 'GET']);
    // Both attempts carry the same correlation ID.
    expect(twilio.seen[0]!.headers['x-request-id']).toBe(twilio.seen[1]!.headers['x-request-id']);
    expect(await retries('reset')).toBe(before + 1);
  });

  it.each([502, 503, 504])('retries a GET answered %i and relays the later success', async (code) => {
    twilio.handler = firstN(1, status(code));
    const r = await request(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
    expect(r.headers['x-breakwater-retries']).toBe('1');
    expect(twilio.started).toBe(2);
  });

  it('retries a PUT and a DELETE (idempotent) after a reset', async () => {
    twilio.handler = firstN(1, reset);
    const put = await request(p.proxyPort, 'PUT', '/twilio/v1/Things/1', { headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(put.status).toBe(200);
    expect(put.headers['x-breakwater-retries']).toBe('1');
    expect(twilio.seen.map((s) => s.body.toString())).toEqual(['{"a":1}', '{"a":1}']);
    twilio.handler = firstN(1, reset);
    const del = await request(p.proxyPort, 'DELETE', '/twilio/2010-04-01/Accounts/AC1/Messages/SM1.json');
    expect(del.status).toBe(200);
    expect(del.headers['x-breakwater-retries']).toBe('1');
  });

  it('gives up after the attempt cap (2 retries) and relays the last upstream answer', async () => {
    twilio.handler = firstN(10, status(503));
    const r = await request(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(503);
    expect(r.json).toEqual({ status: 503 });
    expect(r.headers['x-breakwater-retries']).toBe('2');
    expect(twilio.started).toBe(3);
  });

  it('does not retry a GET that timed out (the timeout spans the whole exchange)', async () => {
    const slow = await fakeUpstream('twilio');
    slow.mode = 'hang';
    const q = await startProxy({ TWILIO_BASE_URL: slow.url, UPSTREAM_TIMEOUT: '0.3', RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      const r = await request(q.proxyPort, 'GET', MESSAGES);
      expect(r.status).toBe(504);
      expect(r.headers['x-breakwater-error']).toBe('upstream_timeout');
      expect(slow.started).toBe(1);
    } finally {
      await q.close();
      await slow.close();
    }
  });

  it('does not retry an idempotent request whose large body was streamed (it cannot be replayed)', async () => {
    twilio.handler = firstN(1, reset);
    const body = Buffer.alloc(200 * 1024, 7); // above the 64 KiB buffering threshold
    const r = await request(p.proxyPort, 'PUT', '/twilio/v1/Media/ME1', { headers: { 'content-type': 'application/octet-stream' }, body });
    expect(r.status).toBe(502);
    expect(r.headers['x-breakwater-retries']).toBeUndefined();
    await sleep(100);
    expect(twilio.started).toBe(1);
  });
});

describe('a request that certainly never left', () => {
  it('retries a POST whose connection was refused, visible in X-Breakwater-Retries and the retry metric', async () => {
    const port = await freePort();
    const p = await startProxy({ TWILIO_BASE_URL: `http://127.0.0.1:${port}`, CIRCUIT_BREAKER_THRESHOLD: '1000', RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      const r = await request(p.proxyPort, 'POST', MESSAGES, { headers: form, body: 'To=x' });
      expect(r.status).toBe(502);
      expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
      expect(r.headers['x-breakwater-retries']).toBe('2');
      const text = await metricsText(p.adminPort);
      expect(metricValue(text, 'breakwater_retries_total', { upstream: 'twilio', reason: 'connect' })).toBe(2);
      expect(metricValue(text, 'circuit_breaker_failures_total', { service: 'twilio' })).toBe(1); // one per app request
    } finally {
      await p.close();
    }
  });
});
