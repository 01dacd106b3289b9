// The breaker stage: a fast 503 circuit_open with Retry-After while open, and which replies
// count as failures (5xx, connect, reset, timeout), as neutral (429, 4xx, local refusals, a client
// that hung up) or as successes.
import { describe, expect, it } from 'vitest';
import { proxyError, type ProxyError } from '../../../src/errors.js';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { breakerSchema } from '../../../src/policy/schema.js';
import { CircuitBreaker } from '../../../src/resilience/circuit-breaker.js';
import { manualClock } from '../../../src/resilience/clock.js';
import { breaker, breakerOptions } from '../../../src/stages/breaker.js';
import { answer, answerEnding, drain, fakeExchange } from '../support/exchange.js';

const sent = (status: number): Reply => answer(status);
const failed = (cause: 'connect' | 'timeout' | 'reset' | 'client'): Reply => ({
  kind: 'failed',
  cause,
  mayHaveReachedUpstream: cause !== 'connect',
  error: proxyError('upstream_unavailable'),
});

function setup(policy: Record<string, unknown> = {}) {
  const clock = manualClock(0);
  const p = breakerSchema.parse({ threshold: 1, ...policy });
  const cb = new CircuitBreaker('twilio', breakerOptions(p), clock);
  let failures = 0;
  let rejected = 0;
  const stage = breaker(cb, p, { onFailure: () => failures++, onRejected: () => rejected++ });
  let calls = 0;
  // An answer is counted once its body is over: read it as the reply writer would.
  const send = async (reply: Reply) => {
    const r = await stage(fakeExchange(), async (_ex: Exchange) => {
      calls++;
      return reply;
    });
    await drain(r);
    return r;
  };
  return { cb, clock, send, failures: () => failures, rejected: () => rejected, calls: () => calls };
}

describe('breaker stage: what counts', () => {
  const rows: { desc: string; reply: Reply; policy?: Record<string, unknown>; opens: boolean }[] = [
    { desc: '500 is a failure', reply: sent(500), opens: true },
    { desc: '503 is a failure', reply: sent(503), opens: true },
    { desc: 'a 502 dropped unread (a retried one) is a failure', reply: answerEnding(502, 'discarded'), opens: true },
    { desc: 'connect error is a failure', reply: failed('connect'), opens: true },
    { desc: 'reset is a failure', reply: failed('reset'), opens: true },
    { desc: 'timeout is a failure', reply: failed('timeout'), opens: true },
    { desc: '429 is back-pressure, never a failure', reply: sent(429), opens: false },
    { desc: '404 is the caller’s fault', reply: sent(404), opens: false },
    { desc: '200 is a success', reply: sent(200), opens: false },
    { desc: 'a client that hung up says nothing about the upstream', reply: failed('client'), opens: false },
    { desc: 'a 200 the upstream cut off mid-body is a reset failure', reply: answerEnding(200, 'broken'), opens: true },
    { desc: 'a 200 the client stopped reading mid-body is neutral', reply: answerEnding(200, 'client'), opens: false },
    { desc: 'a mid-body reset not counted when failOn leaves resets out', reply: answerEnding(200, 'broken'), policy: { failOn: ['5xx'] }, opens: false },
    { desc: 'a local refusal further in is neutral', reply: proxyError('bulkhead_full'), opens: false },
    { desc: '5xx not counted when failOn leaves it out', reply: sent(503), policy: { failOn: ['connect'] }, opens: false },
    { desc: 'timeouts not counted when failOn leaves them out', reply: failed('timeout'), policy: { failOn: ['connect', '5xx'] }, opens: false },
  ];
  it.each(rows)('$desc', async ({ reply, policy, opens }) => {
    const { cb, send, failures } = setup(policy);
    expect(await send(reply)).toBe(reply);
    expect(cb.stateName).toBe(opens ? 'open' : 'closed');
    expect(failures()).toBe(opens ? 1 : 0);
  });
});

describe('breaker stage: open', () => {
  it('answers 503 circuit_open at once, without calling the upstream: a short Retry-After, the time left in the message', async () => {
    const { send, clock, calls, rejected } = setup({ recoveryTimeout: 30 });
    await send(sent(503));
    clock.advance(12_500);
    const r = (await send(sent(200))) as ProxyError;
    expect(r.kind).toBe('error');
    expect(r.code).toBe('circuit_open');
    expect(r.status).toBe(503);
    // An SDK sleeps on Retry-After before re-sending: 18 s would stall the app for the open period.
    expect(r.headers).toEqual({ 'retry-after': '1' });
    expect(r.message).toMatch(/retry in 18 s\.$/);
    expect(calls()).toBe(1);
    expect(rejected()).toBe(1);
  });

  it('Retry-After follows the time left when it is under breaker.retryAfterMax', async () => {
    const { send, clock } = setup({ recoveryTimeout: 30, retryAfterMax: 10 });
    await send(sent(503));
    clock.advance(12_500);
    expect(((await send(sent(200))) as ProxyError).headers).toEqual({ 'retry-after': '10' });
    clock.advance(15_000);
    const r = (await send(sent(200))) as ProxyError;
    expect(r.headers).toEqual({ 'retry-after': '3' });
    expect(r.message).toMatch(/retry in 3 s\.$/);
  });

  it('a forced open says it is forced and promises no end, with a short numeric Retry-After', async () => {
    const { cb, send } = setup({ recoveryTimeout: 30 });
    cb.forceOpen();
    const r = (await send(sent(200))) as ProxyError;
    expect(r.code).toBe('circuit_open');
    expect(r.headers).toEqual({ 'retry-after': '1' });
    expect(r.message).toMatch(/forced open by an operator/);
    expect(r.message).not.toMatch(/retry in/);
  });

  it('a 429 probe frees the probe slot instead of closing or re-opening', async () => {
    const { cb, send, clock } = setup({ recoveryTimeout: 1 });
    await send(sent(500));
    clock.advance(1000);
    await send(sent(429));
    expect(cb.stateName).toBe('half_open');
    await send(sent(200));
    expect(cb.stateName).toBe('closed');
  });

  it('metrics-only mode forwards while open', async () => {
    const { cb, send, calls } = setup({ enabled: false });
    await send(sent(500));
    expect(cb.stateName).toBe('open');
    await send(sent(200));
    expect(calls()).toBe(2);
  });
});

describe('breaker stage: one request, one failure', () => {
  it('counts the failed attempts of one request (its retries) as one failure', async () => {
    const { cb } = setup({ threshold: 2 });
    const stage = breaker(cb, breakerSchema.parse({ threshold: 2 }), { onFailure: () => {}, onRejected: () => {} });
    const ex = fakeExchange();
    let counted = 0;
    const attempt = () =>
      stage(ex, async () => sent(503))
        .then(drain)
        .then(() => counted++);
    for (let i = 0; i < 3; i++) await attempt();
    expect(counted).toBe(3);
    expect(cb.stateName).toBe('closed');
    expect(cb.snapshot().consecutiveFailures).toBe(1);
    // A second request's failure is its own: now two in a row, and the breaker opens.
    await stage(fakeExchange(), async () => sent(503)).then(drain);
    expect(cb.stateName).toBe('open');
  });

  it('a failed probe always counts, even from a request that already failed once', async () => {
    const { cb, clock } = setup({ threshold: 1, recoveryTimeout: 1 });
    const stage = breaker(cb, breakerSchema.parse({ threshold: 1, recoveryTimeout: 1 }), { onFailure: () => {}, onRejected: () => {} });
    const ex = fakeExchange();
    await stage(ex, async () => sent(503)).then(drain);
    expect(cb.stateName).toBe('open');
    clock.advance(1000);
    await stage(ex, async () => sent(503)).then(drain);
    expect(cb.stateName).toBe('open');
  });
});
