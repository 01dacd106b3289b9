// The retry stage with a scripted `next`: which replies are retried for which methods, the
// budget, a breaker refusal on a retry, and the full-jitter back-off (random and sleep injected).
import { describe, expect, it } from 'vitest';
import { proxyError } from '../../../src/errors.js';
import type { Answer, Exchange, Failed, Reply } from '../../../src/pipeline/exchange.js';
import { retrySchema } from '../../../src/policy/schema.js';
import { manualClock } from '../../../src/resilience/clock.js';
import { RetryBudget } from '../../../src/resilience/retry-budget.js';
import { retry } from '../../../src/stages/retry.js';
import { readBody } from '../../../src/pipeline/body.js';
import { answer, drain, fakeExchange, SENT_200 } from '../support/exchange.js';

const held = (status: number): Answer => answer(status, { 'content-type': 'application/json' }, `{"status":${status}}`);
const failed = (cause: Failed['cause'], mayHaveReachedUpstream: boolean): Failed => ({
  kind: 'failed',
  cause,
  mayHaveReachedUpstream,
  error: proxyError(cause === 'timeout' ? 'upstream_timeout' : 'upstream_unavailable'),
});
async function bodyText(reply: Reply): Promise<string> {
  if (reply.kind !== 'answer') return '';
  return (await readBody(reply.body, 1 << 20)).buf.toString();
}
const circuitOpen = proxyError('circuit_open', { headers: { 'retry-after': '30' } });

interface Options {
  policy?: Parameters<typeof retrySchema.parse>[0];
  budget?: RetryBudget;
  random?: () => number;
}

function setup(script: Reply[], opts: Options = {}) {
  const policy = retrySchema.parse(opts.policy ?? {});
  const budget = opts.budget ?? new RetryBudget(1, 100, manualClock(0));
  const sleeps: number[] = [];
  const retried: string[] = [];
  const skipped: string[] = [];
  const stage = retry(policy, budget, {
    onRetry: (reason) => retried.push(reason),
    onSkipped: (reason) => skipped.push(reason),
    random: opts.random ?? (() => 0.5),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  });
  const calls: { retries: number }[] = [];
  const next = async (ex: Exchange): Promise<Reply> => {
    calls.push({ retries: ex.retries });
    const r = script[Math.min(calls.length - 1, script.length - 1)];
    if (r === undefined) throw new Error('script exhausted');
    return r;
  };
  const run = async (init: Parameters<typeof fakeExchange>[0] = {}) => {
    const ex = fakeExchange(init);
    const reply = await stage(ex, next);
    return { ex, reply };
  };
  return { run, calls, sleeps, retried, skipped };
}

describe('retry stage: which failures are retried', () => {
  const rows: { desc: string; method: string; first: Reply; calls: number }[] = [
    { desc: 'GET after a held 503', method: 'GET', first: held(503), calls: 2 },
    { desc: 'GET after a held 502', method: 'GET', first: held(502), calls: 2 },
    { desc: 'GET after a reset (may have reached upstream)', method: 'GET', first: failed('reset', true), calls: 2 },
    { desc: 'GET after a connect failure', method: 'GET', first: failed('connect', false), calls: 2 },
    { desc: 'PUT after a reset', method: 'PUT', first: failed('reset', true), calls: 2 },
    { desc: 'DELETE after a held 504', method: 'DELETE', first: held(504), calls: 2 },
    { desc: 'POST after a connect failure (never left)', method: 'POST', first: failed('connect', false), calls: 2 },
    { desc: 'POST after a reset that never left', method: 'POST', first: failed('reset', false), calls: 2 },
    { desc: 'PATCH after a connect failure', method: 'PATCH', first: failed('connect', false), calls: 2 },
    { desc: 'no retry: POST after a reset that may have reached the upstream', method: 'POST', first: failed('reset', true), calls: 1 },
    { desc: 'no retry: PATCH after a reset that may have reached the upstream', method: 'PATCH', first: failed('reset', true), calls: 1 },
    { desc: 'no retry: GET after a timeout', method: 'GET', first: failed('timeout', true), calls: 1 },
    { desc: 'no retry: POST after a timeout', method: 'POST', first: failed('timeout', true), calls: 1 },
    { desc: 'no retry: GET after the client hung up', method: 'GET', first: failed('client', true), calls: 1 },
    { desc: 'no retry: a sent answer', method: 'GET', first: SENT_200, calls: 1 },
    { desc: 'no retry: a local refusal', method: 'GET', first: proxyError('bulkhead_full'), calls: 1 },
    { desc: 'no retry: a first-attempt circuit_open', method: 'GET', first: circuitOpen, calls: 1 },
  ];
  it.each(rows)('$desc', async ({ method, first, calls: want }) => {
    const { run, calls } = setup([first, SENT_200]);
    const { reply } = await run({ method });
    expect(calls).toHaveLength(want);
    expect(reply).toBe(want === 1 ? first : SENT_200);
  });

  it('a successful retry is counted on the exchange (X-Breakwater-Retries) and reported', async () => {
    const { run, retried } = setup([held(503), failed('reset', true), SENT_200]);
    const { ex, reply } = await run({ method: 'GET' });
    expect(reply).toBe(SENT_200);
    expect(ex.retries).toBe(2);
    expect(retried).toEqual(['503', 'reset']);
  });

  it('a POST 503 is passed through as it is: its body is left for the writer', async () => {
    const first = held(503);
    const { run, calls } = setup([first, SENT_200]);
    const { reply } = await run({ method: 'POST' });
    expect(reply).toBe(first);
    expect(calls).toHaveLength(1);
    expect(await drain(reply)).toBe('complete');
  });

  it('reads a retried answer before the next attempt, and returns the last one unread', async () => {
    const ends: string[] = [];
    const a = held(503);
    a.body.tap({ end: (how) => ends.push(`first ${how}`) });
    const last = held(503);
    last.body.tap({ end: (how) => ends.push(`last ${how}`) });
    const { run } = setup([a, last], { policy: { attempts: 1, on: [503] } });
    const { reply } = await run({ method: 'GET' });
    expect(ends).toEqual(['first complete']);
    expect(reply).toBe(last);
  });

  it('stops after `attempts` retries and answers with the last reply', async () => {
    const last = held(503);
    const { run, calls } = setup([held(503), held(503), last], { policy: { attempts: 2 } });
    const { reply, ex } = await run({ method: 'GET' });
    expect(calls).toHaveLength(3);
    expect(reply).toBe(last);
    expect(ex.retries).toBe(2);
  });

  it('attempts 0 never retries', async () => {
    const { run, calls } = setup([held(503), SENT_200], { policy: { attempts: 0 } });
    await run({ method: 'GET' });
    expect(calls).toHaveLength(1);
  });

  it('a streamed body cannot be replayed: no retry even for a connect failure', async () => {
    const first = failed('connect', false);
    const { run, calls } = setup([first, SENT_200]);
    const { reply } = await run({ method: 'PUT', streamed: true });
    expect(calls).toHaveLength(1);
    expect(reply).toBe(first);
  });
});

describe('retry stage: budget and breaker', () => {
  it('an exhausted budget stops retries and answers with the failure', async () => {
    const budget = new RetryBudget(0, 0, manualClock(0));
    const first = held(503);
    const { run, calls, skipped } = setup([first, SENT_200], { budget });
    const { reply, ex } = await run({ method: 'GET' });
    expect(calls).toHaveLength(1);
    expect(reply).toBe(first);
    expect(ex.retries).toBe(0);
    expect(skipped).toEqual(['budget']);
  });

  it('the budget is shared: once spent, later requests are not retried', async () => {
    // ratio 0.5 and no floor: the first request may spend one retry (1 × 0.5 > 0 spent), the
    // second may not (2 × 0.5 = 1 already spent).
    const budget = new RetryBudget(0.5, 0, manualClock(0));
    const { run, calls } = setup([held(503), SENT_200, held(503), SENT_200], { budget });
    await run({ method: 'GET' }); // retried: 2 calls
    expect(calls).toHaveLength(2);
    const second = await run({ method: 'GET' }); // script: held(503) again, no budget left
    expect(calls).toHaveLength(3);
    expect(second.reply).toMatchObject({ kind: 'answer', status: 503 });
  });

  it('every request is recorded in the budget', async () => {
    const budget = new RetryBudget(0.2, 0, manualClock(0));
    const { run } = setup([SENT_200], { budget });
    for (let i = 0; i < 5; i++) await run();
    expect(budget.canRetry()).toBe(true);
    budget.tryRetry();
    expect(budget.canRetry()).toBe(false);
  });

  it('a retry refused by the breaker answers with the previous reply', async () => {
    const first = held(503);
    const { run, calls, skipped } = setup([first, circuitOpen]);
    const { reply, ex } = await run({ method: 'GET' });
    expect(calls).toHaveLength(2);
    // The same answer, its body now in memory (read so the retry could go out).
    expect(reply).toMatchObject({ kind: 'answer', status: 503, source: 'forwarded' });
    expect(reply).not.toBe(first);
    expect(await bodyText(reply)).toBe('{"status":503}');
    expect(ex.retries).toBe(0);
    expect(skipped).toEqual(['breaker']);
  });

  it('a retry refused by the bulkhead answers with the previous reply', async () => {
    const first = failed('connect', false);
    const { run } = setup([first, proxyError('bulkhead_full')]);
    const { reply } = await run({ method: 'POST' });
    expect(reply).toBe(first);
  });

  it('a retry never sent because the client left during the back-off answers with the previous reply', async () => {
    // A PUT with an idempotency key: the reset may have reached the upstream, so the reply the
    // stage returns must still say so, or the key would be released for a second attempt.
    const first = failed('reset', true);
    const { run, calls } = setup([first, failed('client', false)]);
    const { reply, ex } = await run({ method: 'PUT' });
    expect(calls).toHaveLength(2);
    expect(reply).toBe(first);
    expect(ex.retries).toBe(0);
  });

  it('a second retry refused by the breaker keeps the count of the retry that happened', async () => {
    const second = held(502);
    const { run } = setup([held(503), second, circuitOpen], { policy: { attempts: 3 } });
    const { reply, ex } = await run({ method: 'GET' });
    expect(reply).toMatchObject({ kind: 'answer', status: 502 });
    expect(await bodyText(reply)).toBe('{"status":502}');
    expect(ex.retries).toBe(1);
  });
});

describe('retry stage: full-jitter back-off', () => {
  const rows = [
    { desc: 'random 1: the exponential ceiling itself', random: 1, policy: { attempts: 3, backoffBase: 0.05, backoffMax: 1 }, want: [50, 100, 200] },
    { desc: 'random 0.5: half of it', random: 0.5, policy: { attempts: 3, backoffBase: 0.05, backoffMax: 1 }, want: [25, 50, 100] },
    { desc: 'random 0: no wait', random: 0, policy: { attempts: 2, backoffBase: 0.05, backoffMax: 1 }, want: [0, 0] },
    { desc: 'capped by backoffMax', random: 1, policy: { attempts: 5, backoffBase: 0.1, backoffMax: 0.3 }, want: [100, 200, 300, 300, 300] },
  ];
  it.each(rows)('$desc', async ({ random, policy, want }) => {
    const script = [...want.map(() => held(503)), SENT_200];
    const { run, sleeps } = setup(script, { policy, random: () => random });
    await run({ method: 'GET' });
    expect(sleeps).toEqual(want);
  });

  it('every wait lies in [0, min(max, base × 2^n)] for any random value', async () => {
    const policy = { attempts: 5, backoffBase: 0.05, backoffMax: 0.5 };
    for (const r of [0, 0.001, 0.3, 0.77, 0.999999]) {
      const { run, sleeps } = setup([...Array(5).fill(held(503)), SENT_200], { policy, random: () => r });
      await run({ method: 'GET' });
      sleeps.forEach((ms, n) => {
        expect(ms).toBeGreaterThanOrEqual(0);
        expect(ms).toBeLessThanOrEqual(Math.min(500, 50 * 2 ** n));
      });
      expect(sleeps).toHaveLength(5);
    }
  });

  it('no wait when no retry happens', async () => {
    const { run, sleeps } = setup([SENT_200]);
    await run();
    expect(sleeps).toEqual([]);
  });
});

describe('retry stage: answers that are not its to retry', () => {
  it('never retries an answer whose status is not a retry status', async () => {
    const { run, calls, retried } = setup([held(400), SENT_200]);
    const { reply } = await run({ method: 'GET' });
    expect(reply).toMatchObject({ kind: 'answer', status: 400 });
    expect(calls).toHaveLength(1);
    expect(retried).toEqual([]);
  });

  it('never retries a stored answer (a replay or a cached copy), whatever its status', async () => {
    const { run, calls } = setup([answer(503, {}, '', 'replayed'), SENT_200]);
    await run({ method: 'GET' });
    expect(calls).toHaveLength(1);
  });
});

describe('retry stage: statuses the upstream documents as not processed', () => {
  it('retries a 429 for POST too when 429 is listed as unprocessed', async () => {
    const { run, calls, retried } = setup([held(429), SENT_200], { policy: { unprocessed: [429] } });
    const { reply } = await run({ method: 'POST' });
    expect(reply).toBe(SENT_200);
    expect(calls).toHaveLength(2);
    expect(retried).toEqual(['429']);
  });

  it('never retries a POST 429 when nothing is listed', async () => {
    const { run, calls } = setup([held(429), SENT_200]);
    await run({ method: 'POST' });
    expect(calls).toHaveLength(1);
  });
});
