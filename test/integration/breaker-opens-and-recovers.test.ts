// The per-upstream circuit breaker over real sockets: it opens after CIRCUIT_BREAKER_THRESHOLD
// consecutive failures and then answers 503 circuit_open at once (Retry-After = seconds left)
// without contacting the upstream; the other upstream carries on; after
// CIRCUIT_BREAKER_RECOVERY_TIMEOUT one probe goes through, and its outcome closes or re-opens
// the circuit. Metrics are checked after each step. POSTs drive the failures because they are
// never retried, so one request is exactly one breaker outcome. Each test starts its own proxy
// and drives the breaker to where it begins, so the tests hold in any order.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };
const send = (p: TestProxy) => request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=%2B15555550100&Body=hi' });

async function breakerMetrics(p: TestProxy, service: string) {
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

async function breaker(p: TestProxy, name: string): Promise<Record<string, unknown>> {
  const r = await request(p.adminPort, 'GET', '/breakers');
  expect(r.status).toBe(200);
  const b = (r.json.breakers as Record<string, unknown>[]).find((x) => x.name === name);
  expect(b).toBeDefined();
  return b!;
}

/** Waits out the recovery timeout: polls /breakers until the state is half-open (bounded). */
async function waitHalfOpen(p: TestProxy, name: string): Promise<void> {
  const ok = await waitFor(async () => (await breaker(p, name)).state === 'half_open', { timeoutMs: 5000, everyMs: 50 });
  expect(ok, `${name} breaker did not become half-open`).toBe(true);
}

describe('the breaker opens after the threshold and fails fast', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, h: ProxyHarness | undefined;
  beforeEach(async () => {
    ({ twilio, vapi, p } = h = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '2', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
  });
  afterEach(() => h?.close());

  /** Two failures, a success, two failures: closed, one failure short of the threshold. */
  async function twoShortAfterAReset(): Promise<void> {
    twilio.mode = 'fail';
    expect((await send(p)).status).toBe(503);
    expect((await send(p)).status).toBe(503);
    twilio.mode = 'ok';
    expect((await send(p)).status).toBe(200);
    twilio.mode = 'fail';
    expect((await send(p)).status).toBe(503);
    expect((await send(p)).status).toBe(503);
  }
  /** The above, then the third failure: open, failures 5, opens 1. */
  async function openedOnItsOwn(): Promise<void> {
    await twoShortAfterAReset();
    expect((await send(p)).status).toBe(503);
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 2, failures: 5, opens: 1, closes: 0, rejections: 0 });
  }

  it('starts closed with every series exported at zero', async () => {
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 0, failures: 0, opens: 0, closes: 0, rejections: 0 });
    expect(await breakerMetrics(p, 'vapi')).toEqual({ state: 0, failures: 0, opens: 0, closes: 0, rejections: 0 });
  });

  it('counts only consecutive failures: a success in between resets the count', async () => {
    await twoShortAfterAReset();
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 0, failures: 4, opens: 0 });
    expect(await breaker(p, 'twilio')).toMatchObject({ state: 'closed', consecutiveFailures: 2 });
  });

  it('opens on the third consecutive failure, which itself still reached the upstream', async () => {
    await twoShortAfterAReset();
    const n = twilio.started;
    const r = await send(p);
    expect(r.status).toBe(503);
    expect(r.headers['x-breakwater-error']).toBeUndefined(); // the upstream's own 503, passed through
    expect(twilio.started).toBe(n + 1);
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 2, failures: 5, opens: 1, closes: 0, rejections: 0 });
    expect(await breaker(p, 'twilio')).toMatchObject({ state: 'open', forced: false });
  });

  it('then answers 503 circuit_open at once, Retry-After short and the seconds left in the message, and never contacts the upstream', async () => {
    await openedOnItsOwn();
    const n = twilio.started;
    const r = await send(p);
    const left = (await breaker(p, 'twilio')).openForMs as number;
    expect(r.status).toBe(503);
    expect(r.headers['x-breakwater-error']).toBe('circuit_open');
    expect(r.json).toMatchObject({ code: 'circuit_open', status: 503, upstream: 'twilio' });
    // Retry-After is capped (breaker.retryAfterMax, 1 s): SDKs sleep on it before re-sending.
    // Recovery is 2 s: the message says 2 (or 1 once a second has passed), never less than what
    // the breaker reports as left right after the answer.
    expect(r.headers['retry-after']).toBe('1');
    const said = Number(/retry in (\d+) s\./.exec((r.json as { message: string }).message)?.[1]);
    expect([1, 2]).toContain(said);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(2000);
    expect(said).toBeGreaterThanOrEqual(Math.ceil(left / 1000));
    // More requests, any method: all refused locally.
    const more = await Promise.all([
      send(p),
      request(p.proxyPort, 'GET', SEND),
      request(p.proxyPort, 'DELETE', '/twilio/2010-04-01/Accounts/AC1/Messages/SM1.json'),
    ]);
    for (const m of more) expect(m.headers['x-breakwater-error']).toBe('circuit_open');
    expect(twilio.started).toBe(n);
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 2, failures: 5, opens: 1, closes: 0, rejections: 4 });
  });

  it('leaves the other upstream unaffected', async () => {
    await openedOnItsOwn();
    const n = vapi.started;
    const r = await request(p.proxyPort, 'GET', '/vapi/call');
    expect(r.status).toBe(200);
    expect(vapi.started).toBe(n + 1);
    expect(await breakerMetrics(p, 'vapi')).toEqual({ state: 0, failures: 0, opens: 0, closes: 0, rejections: 0 });
    expect(await breaker(p, 'vapi')).toMatchObject({ state: 'closed' });
  });

  it('counts circuit_open answers in the request metrics under their own outcome', async () => {
    await openedOnItsOwn();
    for (let i = 0; i < 4; i++) expect((await send(p)).headers['x-breakwater-error']).toBe('circuit_open');
    const text = await metricsText(p.adminPort);
    const total = text
      .split('\n')
      .filter((l) => l.startsWith('breakwater_requests_total{') && l.includes('upstream="twilio"') && l.includes('outcome="circuit_open"'))
      .reduce((s, l) => s + Number(l.split(' ').at(-1)), 0);
    expect(total).toBe(4);
  });
});

describe('half-open probes after the recovery timeout', () => {
  let twilio: FakeUpstream, p: TestProxy, h: ProxyHarness | undefined;
  beforeEach(async () => {
    ({ twilio, p } = h = await withProxy({ env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '1', RATE_LIMIT_PER_MINUTE: '100000' } }));
  });
  afterEach(() => h?.close());

  async function trip(): Promise<void> {
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) expect((await send(p)).status).toBe(503);
    expect(await breaker(p, 'twilio')).toMatchObject({ state: 'open' });
  }

  it('a successful probe closes the circuit', async () => {
    await trip();
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 2, opens: 1, closes: 0 });
    await waitHalfOpen(p, 'twilio');
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 1 });
    twilio.mode = 'ok';
    const n = twilio.started;
    const r = await send(p);
    expect(r.status).toBe(200);
    expect(twilio.started).toBe(n + 1);
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 0, failures: 3, opens: 1, closes: 1, rejections: 0 });
    // Closed again: traffic flows normally.
    expect((await send(p)).status).toBe(200);
    expect(twilio.started).toBe(n + 2);
  });

  it('a failed probe re-opens it, and it refuses again without upstream contact', async () => {
    await trip();
    await waitHalfOpen(p, 'twilio');
    const n = twilio.started;
    const probe = await send(p); // still failing
    expect(probe.status).toBe(503);
    expect(probe.headers['x-breakwater-error']).toBeUndefined();
    expect(twilio.started).toBe(n + 1);
    expect(await breakerMetrics(p, 'twilio')).toEqual({ state: 2, failures: 4, opens: 2, closes: 0, rejections: 0 });
    const r = await send(p);
    expect(r.headers['x-breakwater-error']).toBe('circuit_open');
    expect(r.headers['retry-after']).toBe('1');
    expect(twilio.started).toBe(n + 1);
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 2, rejections: 1 });
    // And it recovers on its own once the upstream does.
    twilio.mode = 'ok';
    await waitHalfOpen(p, 'twilio');
    expect((await send(p)).status).toBe(200);
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 0, closes: 1 });
  });

  it('lets exactly one probe through when several requests arrive together', async () => {
    await trip();
    await waitHalfOpen(p, 'twilio');
    // A slow upstream keeps the probe in flight while the others arrive.
    twilio.mode = 'slow';
    twilio.delayMs = 400;
    const n = twilio.started;
    const before = await breakerMetrics(p, 'twilio');
    const answers = await Promise.all(Array.from({ length: 5 }, () => send(p)));
    const passed = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.headers['x-breakwater-error'] === 'circuit_open');
    expect(passed).toHaveLength(1);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.status).toBe(503);
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(twilio.started).toBe(n + 1);
    const after = await breakerMetrics(p, 'twilio');
    expect(after.state).toBe(0);
    expect(after.closes).toBe(before.closes! + 1);
    expect(after.rejections).toBe(before.rejections! + 4);
    twilio.mode = 'ok';
  });
});

describe('CIRCUIT_BREAKER_ENABLED=false: the breaker observes but never blocks', () => {
  let twilio: FakeUpstream, p: TestProxy, h: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, p } = h = await withProxy({ env: { CIRCUIT_BREAKER_ENABLED: 'false', CIRCUIT_BREAKER_THRESHOLD: '3', RATE_LIMIT_PER_MINUTE: '100000' } }));
  });
  afterAll(() => h?.close());

  it('forwards every request while exporting the open state it would be in', async () => {
    twilio.mode = 'fail';
    for (let i = 0; i < 6; i++) {
      const r = await send(p);
      expect(r.status).toBe(503);
      expect(r.headers['x-breakwater-error']).toBeUndefined();
    }
    expect(twilio.started).toBe(6);
    expect(await breakerMetrics(p, 'twilio')).toMatchObject({ state: 2, failures: 6, opens: 1, rejections: 0 });
    expect(await breaker(p, 'twilio')).toMatchObject({ state: 'open', enforcing: false });
  });
});
