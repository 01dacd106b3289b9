// Upstream faults, one at a time, against the proxy on its default policy: what the app sees
// (a coded reply with X-Breakwater-Error, or the upstream's own answer), what the breaker and
// retry metrics do, and that the proxy keeps serving afterwards.
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, startProxy, type TestProxy } from '../support/proxy.js';
import { fetchOnce, LOCAL, type Fetched } from './support.js';
import { freePort, waitFor } from '../support/wait.mjs';

const ACCOUNT = 'AC00000000000000000000000000000001';
const MESSAGES = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const BODY = 'To=%2B15551230000&From=%2B15557650000&Body=hello';

/** Defaults for every test: no rate limit in the way, a short breaker recovery. */
const BASE_ENV = { RATE_LIMIT_PER_MINUTE: '1000000', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '0.4', LOG_LEVEL: 'info' };

let proxy: TestProxy | undefined;
let twilio: FakeUpstream | undefined;
let vapi: FakeUpstream | undefined;
const extra: (() => Promise<void>)[] = [];

async function boot(env: Record<string, string> = {}, twilioUrl?: string) {
  twilio = await fakeUpstream('twilio');
  vapi = await fakeUpstream('vapi');
  proxy = await startProxy({ ...BASE_ENV, TWILIO_BASE_URL: twilioUrl ?? twilio.url, VAPI_BASE_URL: vapi.url, ...env });
  return { p: proxy, tw: twilio, va: vapi };
}

afterEach(async () => {
  await proxy?.close();
  await twilio?.close();
  await vapi?.close();
  for (const f of extra.splice(0)) await f();
  proxy = twilio = vapi = undefined;
});

/** Reads /metrics once; missing series read as 0. */
async function scrape(p: TestProxy) {
  const text = await metricsText(p.adminPort);
  return (name: string, labels: Record<string, string> = {}) => metricValue(text, name, labels) ?? 0;
}

const get = (p: TestProxy, path = MESSAGES) => fetchOnce(p.proxyPort, 'GET', path);
const post = (p: TestProxy, path = MESSAGES) => fetchOnce(p.proxyPort, 'POST', path, { headers: FORM, body: BODY });

function expectCoded(r: Fetched, status: number, code: string) {
  expect(r.error, `client error ${r.error}`).toBeUndefined();
  expect(r.status).toBe(status);
  expect(r.headers['x-breakwater-error']).toBe(code);
  expect(JSON.parse(r.text)).toMatchObject({ code, status });
}

/** The fault is gone: within a bounded time a request succeeds and the breaker is closed again. */
async function expectRecovers(p: TestProxy, path = MESSAGES) {
  let last: Fetched | undefined;
  const ok = await waitFor(async () => (last = await get(p, path)).status === 200, { timeoutMs: 8000, everyMs: 100 });
  expect(ok, `last answer ${last?.status} ${last?.text} ${(await request(p.adminPort, 'GET', '/breakers')).text}`).toBe(true);
  const m = await scrape(p);
  expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(0);
}

/** Another upstream, untouched by the fault, is served throughout. */
async function expectOtherUpstreamServed(p: TestProxy) {
  const r = await get(p, '/vapi/call');
  expect(r.status).toBe(200);
  expect(r.complete).toBe(true);
}

describe('upstream refuses connections (closed port)', () => {
  it('retries even a POST (it never left), answers 502, opens the breaker after three requests, then 503 circuit_open until the upstream is back', async () => {
    const port = await freePort();
    const { p } = await boot({}, `http://${LOCAL}:${port}`);

    const r = await post(p);
    expectCoded(r, 502, 'upstream_unavailable');
    expect(r.headers['x-breakwater-retries']).toBe('2');
    let m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: 'connect' })).toBe(2);
    // One app request moves the breaker by one failure, however many attempts it made.
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(1);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(0);
    for (let i = 0; i < 2; i++) expectCoded(await post(p), 502, 'upstream_unavailable');
    m = await scrape(p);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(3);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(2);
    expect(m('circuit_breaker_opens_total', { service: 'twilio' })).toBe(1);

    const refused = await get(p);
    expectCoded(refused, 503, 'circuit_open');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    m = await scrape(p);
    expect(m('circuit_breaker_rejections_total', { service: 'twilio' })).toBeGreaterThanOrEqual(1);

    await expectOtherUpstreamServed(p);

    // The upstream comes back on the same port: the half-open probe closes the breaker.
    const back = http.createServer((_req, res) => res.end('{"ok":true}'));
    await new Promise<void>((resolve, reject) => back.once('error', reject).listen(port, LOCAL, () => resolve()));
    extra.push(
      () =>
        new Promise((r) => {
          back.closeAllConnections();
          back.close(() => r());
        }),
    );
    await expectRecovers(p);
    m = await scrape(p);
    expect(m('circuit_breaker_closes_total', { service: 'twilio' })).toBe(1);
  });
});

describe('upstream resets the connection before answering', () => {
  it('never re-sends a POST, retries a GET twice, both 502 upstream_unavailable; the breaker opens and recovers', async () => {
    const { p, tw } = await boot({ CIRCUIT_BREAKER_THRESHOLD: '5' });
    tw.mode = 'reset';

    const r1 = await post(p);
    expectCoded(r1, 502, 'upstream_unavailable');
    expect(tw.seen.length).toBe(1); // the POST may have been processed: sent once, never again
    expect(r1.headers['x-breakwater-retries']).toBeUndefined();

    const r2 = await get(p);
    expectCoded(r2, 502, 'upstream_unavailable');
    expect(tw.seen.length).toBe(4); // GET: first attempt + 2 retries
    expect(r2.headers['x-breakwater-retries']).toBe('2');

    let m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: 'reset' })).toBe(2);
    // One failure per app request: the GET's three attempts count once.
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(2);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(0);

    for (let i = 0; i < 3; i++) expectCoded(await post(p), 502, 'upstream_unavailable'); // the fifth failing request opens it
    m = await scrape(p);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(2);
    const seen = tw.seen.length;
    expectCoded(await post(p), 503, 'circuit_open');
    expect(tw.seen.length).toBe(seen); // open: the upstream is not contacted

    await expectOtherUpstreamServed(p);
    tw.mode = 'ok';
    await expectRecovers(p);
  });
});

describe('upstream resets mid-response', () => {
  it('relays the status it already sent, then breaks the response so the app sees the truncation; no retry', async () => {
    const { p, tw } = await boot();
    tw.mode = 'reset-mid';
    const r = await get(p);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.error).toBeDefined();
    expect(r.headers['x-breakwater-error']).toBeUndefined(); // the upstream's head was already relayed
    expect(tw.seen.length).toBe(1); // nothing is retried once bytes reached the app
    const m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: 'reset' })).toBe(0);
    expect(m('breakwater_requests_total', { upstream: 'twilio', status: '200', outcome: 'truncated' })).toBe(1); // not passed off as forwarded
    // A body cut off by the upstream is a reset for the breaker, though a 200 went out first.
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(1);
    // The access log records the abort for the operator.
    expect(await waitFor(() => p.logLines().some((l) => l.msg === 'request' && l.aborted !== undefined), { timeoutMs: 2000 })).toBe(true);

    tw.mode = 'ok';
    await expectRecovers(p);
  });
});

describe('upstream hangs (UPSTREAM_TIMEOUT 0.3 s)', () => {
  it('answers 504 upstream_timeout without retrying (GET or POST), and the breaker opens after 3', async () => {
    const { p, tw } = await boot({ UPSTREAM_TIMEOUT: '0.3' });
    tw.mode = 'hang';

    expectCoded(await get(p), 504, 'upstream_timeout');
    expect(tw.seen.length).toBe(1); // a timeout has spent the app's whole budget: not retried
    expectCoded(await post(p), 504, 'upstream_timeout');
    expect(tw.seen.length).toBe(2);
    let m = await scrape(p);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(2);
    expect(m('breakwater_retries_total', { upstream: 'twilio' })).toBe(0);

    expectCoded(await get(p), 504, 'upstream_timeout');
    m = await scrape(p);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(2);
    expectCoded(await get(p), 503, 'circuit_open');
    expect(tw.seen.length).toBe(3);

    await expectOtherUpstreamServed(p);
    tw.mode = 'ok';
    await expectRecovers(p);
  });
});

describe('upstream trickles its response', () => {
  it('a slow but steady body completes (each gap is below the body timeout)', async () => {
    const { p, tw } = await boot({ UPSTREAM_TIMEOUT: '1' });
    tw.mode = 'trickle';
    tw.trickleMs = 5;
    tw.body = JSON.stringify({ sid: 'SM0001', status: 'queued', note: 'x'.repeat(40) });
    const r = await get(p);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.text).toBe(tw.body);
  });

  it('headers that do not arrive within UPSTREAM_TIMEOUT: 504 upstream_timeout', async () => {
    const { p, tw } = await boot({ UPSTREAM_TIMEOUT: '0.3' });
    tw.mode = 'trickle'; // the fake holds its head until the first byte, 1 s away
    tw.trickleMs = 1000;
    expectCoded(await get(p), 504, 'upstream_timeout');
    tw.mode = 'ok';
    await expectRecovers(p);
  });

  it('a body that stalls longer than the body timeout: the relayed response is cut, the app sees it broken', async () => {
    const { p, tw } = await boot({ UPSTREAM_TIMEOUT: '0.3' });
    tw.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"sid":"SM'); // head + first bytes now, the rest never in time
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write('0')), 1000);
      res.on('close', () => clearInterval(t));
    };
    const r = await get(p);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.text.startsWith('{"sid":"SM')).toBe(true);
    expect(tw.seen.length).toBe(1);
    tw.handler = undefined;
    await expectRecovers(p);
  });
});

describe('upstream answers malformed HTTP', () => {
  it('is a 502 upstream_unavailable; a GET is retried, a POST is not', async () => {
    const { p, tw } = await boot({ CIRCUIT_BREAKER_THRESHOLD: '10' });
    tw.mode = 'malformed';
    expectCoded(await get(p), 502, 'upstream_unavailable');
    expect(tw.seen.length).toBe(3);
    expectCoded(await post(p), 502, 'upstream_unavailable');
    expect(tw.seen.length).toBe(4);
    const m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: 'reset' })).toBe(2);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(2); // one per request
    tw.mode = 'ok';
    await expectRecovers(p);
  });
});

describe('upstream closes keep-alive connections early', () => {
  it('Connection: close on every answer: 60 sequential GETs and POSTs all succeed, none re-sent', async () => {
    const { p, tw } = await boot();
    tw.mode = 'close-after';
    const statuses: (number | undefined)[] = [];
    for (let i = 0; i < 60; i++) statuses.push((i % 2 === 0 ? await get(p) : await post(p)).status);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(tw.seen.length).toBe(60);
    const m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio' })).toBe(0);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(0);
  });

  it('the upstream drops each pooled connection a few ms after answering, without notice: 40 sequential requests succeed', async () => {
    const { p, tw } = await boot();
    tw.handler = (req, res) => {
      res.end(JSON.stringify({ ok: true }));
      res.on('finish', () => setTimeout(() => req.socket.destroy(), 3));
    };
    const statuses: (number | undefined)[] = [];
    for (let i = 0; i < 40; i++) {
      statuses.push((await get(p)).status);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  });
});

describe('upstream answers a burst of 5xx', () => {
  it('a GET retries the 503 twice then relays it; three such requests open the breaker and a burst is refused locally; then it recovers', async () => {
    const { p, tw } = await boot();
    tw.mode = 'fail';
    tw.status = 503;

    const first = await get(p);
    expect(first.status).toBe(503);
    expect(first.headers['x-breakwater-error']).toBeUndefined(); // the upstream's own answer
    expect(JSON.parse(first.text)).toEqual({ upstream: 'twilio', error: 'down' });
    expect(first.headers['x-breakwater-retries']).toBe('2');
    expect(tw.seen.length).toBe(3);
    // One failure per app request: two more open the breaker (the third's retry is refused locally).
    for (let i = 0; i < 2; i++) expect((await get(p)).status).toBe(503);
    expect(tw.seen.length).toBe(7);

    const burst = await Promise.all(Array.from({ length: 20 }, () => get(p)));
    for (const r of burst) {
      expectCoded(r, 503, 'circuit_open');
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(tw.seen.length).toBe(7);

    let m = await scrape(p);
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: '503' })).toBe(5);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(3);
    expect(m('circuit_breaker_opens_total', { service: 'twilio' })).toBe(1);
    expect(m('circuit_breaker_rejections_total', { service: 'twilio' })).toBe(21);
    expect(m('breakwater_requests_total', { upstream: 'twilio', status: '503', outcome: 'circuit_open' })).toBe(20);

    await expectOtherUpstreamServed(p);
    tw.mode = 'ok';
    tw.status = 200;
    await expectRecovers(p);
    m = await scrape(p);
    expect(m('circuit_breaker_closes_total', { service: 'twilio' })).toBe(1);

    // Closed again: a POST that meets a 503 is relayed once, never re-sent.
    tw.mode = 'fail';
    const seen = tw.seen.length;
    const r = await post(p);
    expect(r.status).toBe(503);
    expect(r.headers['x-breakwater-error']).toBeUndefined();
    expect(tw.seen.length).toBe(seen + 1);
  });
});

describe('upstream answers a burst of 429', () => {
  it('sends once more after the first hold, relays the 429 that persists, then holds that account locally (429 upstream_rate_limited); the breaker does not count it', async () => {
    const { p, tw } = await boot();
    tw.mode = '429'; // Twilio's 20429 without Retry-After

    // Not processed: sent again after the 1 s hold (retryWithin 2), and relayed when it persists.
    const first = await get(p);
    expect(first.status).toBe(429);
    expect(first.headers['x-breakwater-error']).toBeUndefined();
    expect(JSON.parse(first.text)).toMatchObject({ code: 20429 });
    expect(tw.seen.length).toBe(2);

    const burst = await Promise.all(Array.from({ length: 20 }, () => get(p)));
    for (const r of burst) {
      expectCoded(r, 429, 'upstream_rate_limited');
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(tw.seen.length).toBe(2); // held locally: no more calls burnt on the account

    // Another account is not held.
    const other = await get(p, MESSAGES.replace(ACCOUNT, 'AC00000000000000000000000000000002'));
    expect(other.status).toBe(429);
    expect(other.headers['x-breakwater-error']).toBeUndefined();
    expect(tw.seen.length).toBe(4);

    const m = await scrape(p);
    expect(m('circuit_breaker_failures_total', { service: 'twilio' })).toBe(0);
    expect(m('circuit_breaker_state', { service: 'twilio' })).toBe(0);
    // One second send per account, nothing else retried.
    expect(m('breakwater_retries_total', { upstream: 'twilio', reason: 'upstream_429' })).toBe(2);
    expect(m('breakwater_retries_total', { upstream: 'twilio' })).toBe(2);
    // Each account: a hold on its first 429, extended (two strikes) on the second.
    expect(m('breakwater_upstream_holds_total', { upstream: 'twilio' })).toBe(4);
    expect(m('breakwater_upstream_held_requests_total', { upstream: 'twilio' })).toBe(20);

    tw.mode = 'ok';
    await expectRecovers(p); // once the hold (1 s + jitter) ends
  });
});

describe('upstream flaps', () => {
  it('between down and up three times: the breaker opens and closes each time and ends closed', async () => {
    const { p, tw } = await boot();
    for (let cycle = 1; cycle <= 3; cycle++) {
      tw.mode = 'fail';
      const opened = await waitFor(async () => (await get(p)).status === 503 && (await scrape(p))('circuit_breaker_state', { service: 'twilio' }) === 2, {
        timeoutMs: 5000,
        everyMs: 10,
      });
      expect(opened).toBe(true);
      tw.mode = 'ok';
      await expectRecovers(p);
    }
    const m = await scrape(p);
    expect(m('circuit_breaker_opens_total', { service: 'twilio' })).toBe(3);
    expect(m('circuit_breaker_closes_total', { service: 'twilio' })).toBe(3);
  });

  it('request by request (ok, 503, reset, malformed): every request gets an answer, no POST is ever sent twice', async () => {
    const { p, tw } = await boot({ CIRCUIT_BREAKER_THRESHOLD: '1000' });
    let n = 0;
    tw.handler = (req, res) => {
      switch (n++ % 4) {
        case 0:
          return res.end(JSON.stringify({ ok: true }));
        case 1:
          res.writeHead(503, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ upstream: 'twilio', error: 'down' }));
        case 2:
          return req.socket.resetAndDestroy();
        default:
          req.socket.end('HTTP/1.1 2OO WHAT\r\n\r\n');
      }
    };
    const answers: Fetched[] = [];
    for (let i = 0; i < 60; i++) {
      const id = `flap-${i}`;
      const headers = { 'x-request-id': id, ...(i % 2 ? FORM : {}) };
      answers.push(await fetchOnce(p.proxyPort, i % 2 ? 'POST' : 'GET', MESSAGES, { headers, ...(i % 2 ? { body: BODY } : {}) }));
    }
    for (const r of answers) {
      expect(r.error).toBeUndefined();
      expect([200, 502, 503]).toContain(r.status);
      if (r.status === 502) expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
      if (r.status === 503) expect(r.text).toContain('"down"'); // the upstream's own 503, relayed
    }
    const postIds = tw.seen.filter((s) => s.method === 'POST').map((s) => s.headers['x-request-id']);
    expect(new Set(postIds).size).toBe(postIds.length);
    expect(answers.filter((r) => r.status === 200).length).toBeGreaterThan(0);
    tw.handler = undefined;
    await expectRecovers(p);
  });
});
