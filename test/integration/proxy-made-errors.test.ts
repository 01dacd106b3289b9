// Every reply Breakwater makes itself carries `X-Breakwater-Error: <code>` and the flat JSON
// body {code, message, status, upstream, requestId} (SPEC). Each code reachable by the core
// proxy, the breaker, the bulkhead and the rate limiter is provoked here over real sockets.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, startProxy, type Answer, type TestProxy } from '../support/proxy.js';
import { parseRaw, rawExchange } from '../support/processes.js';
import { freePort, waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

/** Asserts the SPEC shape of a proxy-made reply and returns its body. */
function expectProxyError(r: Answer, code: string, status: number, upstream: string | null): Record<string, unknown> {
  expect(r.status).toBe(status);
  expect(r.headers['x-breakwater-error']).toBe(code);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.json).toEqual({ code, message: expect.any(String), status, upstream, requestId: r.headers['x-request-id'] });
  expect(Object.keys(r.json as object).sort()).toEqual(['code', 'message', 'requestId', 'status', 'upstream']);
  expect((r.json as { message: string }).message.length).toBeGreaterThan(0);
  return r.json as Record<string, unknown>;
}

const outcomeCount = async (p: TestProxy, upstream: string, outcome: string) => {
  const text = await metricsText(p.adminPort);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('breakwater_requests_total{') && line.includes(`upstream="${upstream}"`) && line.includes(`outcome="${outcome}"`))
      sum += Number(line.split(' ').at(-1));
  }
  return sum;
};

describe('proxy-made errors', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // A Vapi bulkhead of one makes bulkhead_full easy to reach; nothing else differs from shipped.
    const policy = DEFAULT_POLICY.replace('maxConcurrent: 100\n    rateLimits', 'maxConcurrent: 1\n    rateLimits');
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ twilio, vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '100000', CIRCUIT_BREAKER_THRESHOLD: '100' }, policy }));
  });
  afterAll(() => harness?.close());

  it('no_route (404) for an unknown prefix, with upstream null', async () => {
    const r = await request(p.proxyPort, 'GET', '/stripe/v1/charges', { headers: { 'x-request-id': 'nr-1' } });
    const body = expectProxyError(r, 'no_route', 404, null);
    expect(body.requestId).toBe('nr-1');
    expect(await outcomeCount(p, 'none', 'no_route')).toBeGreaterThanOrEqual(1);
  });

  it('bad_request (400) for an absolute-form request target', async () => {
    const raw = await rawExchange(
      p.proxyPort,
      `GET http://127.0.0.1:${twilio.port}/2010-04-01/Accounts.json HTTP/1.1\r\nHost: 127.0.0.1:${p.proxyPort}\r\nX-Request-Id: br-1\r\nConnection: close\r\n\r\n`,
    );
    const { status, headers, body } = parseRaw(raw);
    expect(status).toBe(400);
    expect(headers['x-breakwater-error']).toBe('bad_request');
    expect(JSON.parse(body)).toEqual({ code: 'bad_request', message: expect.any(String), status: 400, upstream: null, requestId: 'br-1' });
  });

  it('payload_too_large (413) when Content-Length is over the limit, before anything is sent upstream', async () => {
    const started = twilio.started;
    const r = await new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: p.proxyPort,
          method: 'POST',
          path: '/twilio/2010-04-01/Accounts/AC1/Messages.json',
          agent: false,
          headers: { 'content-length': String(11 * 1024 * 1024), 'content-type': 'application/octet-stream' },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text, json: JSON.parse(text) }));
        },
      );
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('client timeout')));
      // Send only the start of the body: the answer must not wait for the rest.
      req.write(Buffer.alloc(64 * 1024, 1));
    });
    expectProxyError(r, 'payload_too_large', 413, 'twilio');
    expect(twilio.started).toBe(started);
  });

  it('payload_too_large (413) when a chunked body grows past the limit mid-stream; the upstream never gets a complete request', async () => {
    const seen = vapi.seen.length;
    const r = await new Promise<Answer>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: p.proxyPort, method: 'POST', path: '/vapi/files', agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text, json: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('client timeout')));
      // 12 MiB, chunked (no Content-Length), against the 10 MiB limit.
      const chunk = Buffer.alloc(64 * 1024, 2);
      let sent = 0;
      const pump = (): void => {
        for (let i = 0; i < 1000 && sent < 12 * 1024 * 1024; i++) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expectProxyError(r, 'payload_too_large', 413, 'vapi');
    expect(vapi.seen.length).toBe(seen);
  });

  it('upstream_unavailable (502) when the upstream resets the connection', async () => {
    vapi.mode = 'reset';
    try {
      const r = await request(p.proxyPort, 'POST', '/vapi/call', { body: '{"assistantId":"a"}', headers: { 'content-type': 'application/json' } });
      expectProxyError(r, 'upstream_unavailable', 502, 'vapi');
    } finally {
      vapi.mode = 'ok';
    }
  });

  it('upstream_unavailable (502) when the upstream answers with garbage instead of HTTP', async () => {
    vapi.mode = 'malformed';
    try {
      const r = await request(p.proxyPort, 'POST', '/vapi/call', { body: '{}', headers: { 'content-type': 'application/json' } });
      expectProxyError(r, 'upstream_unavailable', 502, 'vapi');
    } finally {
      vapi.mode = 'ok';
    }
  });

  it('circuit_open (503 + Retry-After) while the breaker is open, without contacting the upstream', async () => {
    const forced = await request(p.adminPort, 'POST', '/breakers/twilio/open', { headers: { 'x-breakwater-admin': '1' } });
    expect(forced.status).toBe(200);
    const n = twilio.started;
    try {
      const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Calls.json');
      expectProxyError(r, 'circuit_open', 503, 'twilio');
      expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(twilio.started).toBe(n);
    } finally {
      expect((await request(p.adminPort, 'POST', '/breakers/twilio/reset', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
    }
  });

  it('bulkhead_full (503 + Retry-After) when the upstream concurrency cap is reached', async () => {
    const parked: http.ServerResponse[] = [];
    vapi.handler = (_req, res) => void parked.push(res);
    try {
      const first = request(p.proxyPort, 'GET', '/vapi/call/one');
      expect(await waitFor(() => parked.length === 1, { timeoutMs: 5000 })).toBe(true);
      const r = await request(p.proxyPort, 'GET', '/vapi/call/two');
      expectProxyError(r, 'bulkhead_full', 503, 'vapi');
      expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(parked.length).toBe(1);
      parked[0]!.end('{"id":"one"}');
      expect((await first).status).toBe(200);
    } finally {
      vapi.handler = undefined;
      for (const res of parked) if (!res.writableEnded) res.end();
    }
  });
});

describe('proxy-made errors that need their own settings', () => {
  it('upstream_unavailable (502) when the connection is refused', async () => {
    const port = await freePort();
    const p = await startProxy({ VAPI_BASE_URL: `http://127.0.0.1:${port}`, RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      const r = await request(p.proxyPort, 'GET', '/vapi/assistant');
      expectProxyError(r, 'upstream_unavailable', 502, 'vapi');
      expect(await outcomeCount(p, 'vapi', 'upstream_unavailable')).toBe(1);
    } finally {
      await p.close();
    }
  });

  it('upstream_timeout (504) when the upstream does not answer within UPSTREAM_TIMEOUT', async () => {
    const slow = await fakeUpstream('twilio');
    slow.mode = 'hang';
    const p = await startProxy({ TWILIO_BASE_URL: slow.url, UPSTREAM_TIMEOUT: '0.3', RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json', { timeoutMs: 10_000 });
      expectProxyError(r, 'upstream_timeout', 504, 'twilio');
      expect(slow.started).toBe(1);
    } finally {
      await p.close();
      await slow.close();
    }
  });

  it("a 504 on a create says it may have been sent and to retry only with the same Idempotency-Key; a GET's does not", async () => {
    const slow = await fakeUpstream('twilio');
    slow.mode = 'hang';
    const p = await startProxy({ TWILIO_BASE_URL: slow.url, UPSTREAM_TIMEOUT: '0.3', RATE_LIMIT_PER_MINUTE: '100000' });
    const MESSAGES = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    try {
      const post = await request(p.proxyPort, 'POST', MESSAGES, { headers: form, body: 'To=%2B15550001111&Body=hi', timeoutMs: 10_000 });
      expectProxyError(post, 'upstream_timeout', 504, 'twilio');
      const msg = String((post.json as { message: string }).message);
      expect(msg).toMatch(/^The upstream did not answer in time\. The request was sent and may have taken effect/);
      expect(msg).toMatch(/only with an Idempotency-Key, the same one each time/);
      const get = await request(p.proxyPort, 'GET', MESSAGES, { timeoutMs: 10_000 });
      expect((get.json as { message: string }).message).toBe('The upstream did not answer in time.');
      // A keyed create words it once, from the idempotency stage.
      const keyed = await request(p.proxyPort, 'POST', MESSAGES, {
        headers: { ...form, 'idempotency-key': 'timeout-msg-1' },
        body: 'To=%2B15550001111&Body=hi',
        timeoutMs: 10_000,
      });
      const km = String((keyed.json as { message: string }).message);
      expect(km).toMatch(/may have taken effect\. It is not sent again under this Idempotency-Key\.$/);
      expect(km.match(/may have taken effect/g)).toHaveLength(1);
    } finally {
      await p.close();
      await slow.close();
    }
  });

  it('rate_limited (429 + Retry-After + RateLimit headers) once a client spends its per-minute allowance', async () => {
    const up = await fakeUpstream('vapi');
    const p = await startProxy({ VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '2' });
    try {
      const h = { 'x-client-id': 'billing-worker' };
      expect((await request(p.proxyPort, 'GET', '/vapi/call', { headers: h })).status).toBe(200);
      expect((await request(p.proxyPort, 'GET', '/vapi/call', { headers: h })).status).toBe(200);
      const r = await request(p.proxyPort, 'GET', '/vapi/call', { headers: h });
      expectProxyError(r, 'rate_limited', 429, 'vapi');
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(r.headers.ratelimit).toEqual(expect.any(String));
      expect(r.headers['ratelimit-policy']).toEqual(expect.any(String));
      expect(up.seen.length).toBe(2);
      // Another client is not affected.
      expect((await request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'other' } })).status).toBe(200);
      const m = await metricsText(p.adminPort);
      expect(metricValue(m, 'breakwater_rate_limit_decisions_total', { upstream: 'vapi', outcome: 'limited' })).toBe(1);
    } finally {
      await p.close();
      await up.close();
    }
  });
});
