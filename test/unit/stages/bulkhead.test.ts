// The bulkhead stage over a real Semaphore and a hand-driven scheduler: a slot is held for
// exactly one attempt and given back however it ends (answer, rejection, a throw before the
// attempt began); overflow is a 503 bulkhead_full with Retry-After, counted once; a queued
// request runs when a slot is handed over and is refused when its queue time runs out.
import { describe, expect, it } from 'vitest';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { Semaphore, type Scheduler } from '../../../src/resilience/semaphore.js';
import { bulkhead } from '../../../src/stages/bulkhead.js';
import { answer as answerOf, drain, fakeExchange, SENT_200 } from '../support/exchange.js';

function manualScheduler() {
  const timers = new Map<number, () => void>();
  let id = 0;
  const scheduler: Scheduler = {
    set(fn) {
      timers.set(++id, fn);
      return id;
    },
    clear(h) {
      timers.delete(h as number);
    },
  };
  /** Fires every pending timer, as if the queue timeout had elapsed. */
  const expire = () => {
    const due = [...timers.values()];
    timers.clear();
    for (const fn of due) fn();
  };
  return { scheduler, timers, expire };
}

/** A downstream whose answer the test releases by hand. */
function gate() {
  let open!: (r: Reply) => void;
  let fail!: (e: Error) => void;
  const calls: Exchange[] = [];
  const next = (ex: Exchange) => {
    calls.push(ex);
    return new Promise<Reply>((res, rej) => {
      open = res;
      fail = rej;
    });
  };
  return { next, calls, answer: (r: Reply = answerOf(200)) => open(r), fail: (e: Error) => fail(e) };
}

const settle = () => new Promise<void>((r) => setImmediate(r));

function setup(limit: number, queue = 0) {
  const clock = manualScheduler();
  const sem = new Semaphore(limit, queue, 1000, clock.scheduler);
  let rejected = 0;
  const stage = bulkhead(sem, () => rejected++);
  return { sem, stage, clock, rejected: () => rejected };
}

describe('bulkhead stage', () => {
  it('passes the exchange on and returns the downstream reply unchanged', async () => {
    const { stage, sem } = setup(1);
    const ex = fakeExchange();
    const g = gate();
    const reply = stage(ex, g.next);
    expect(g.calls).toEqual([ex]);
    expect(sem.active).toBe(1);
    const a = answerOf(200, {}, 'body');
    g.answer(a);
    expect(await reply).toBe(a);
    // The slot is held while the answer's body streams, and given back when it is over.
    await settle();
    expect(sem.active).toBe(1);
    await drain(a);
    expect(sem.active).toBe(0);
  });

  const endings: { desc: string; end: (g: ReturnType<typeof gate>) => void; rejects: boolean }[] = [
    { desc: 'an answer', end: (g) => g.answer(), rejects: false },
    { desc: 'a proxy-made error reply', end: (g) => g.answer({ kind: 'error', code: 'upstream_timeout', status: 504, message: 'x' } as Reply), rejects: false },
    { desc: 'a rejected attempt', end: (g) => g.fail(new Error('boom')), rejects: true },
  ];
  it.each(endings)('gives the slot back after $desc', async ({ end, rejects }) => {
    const { stage, sem } = setup(1);
    const g = gate();
    const reply = stage(fakeExchange(), g.next);
    expect(sem.active).toBe(1);
    end(g);
    if (rejects) await expect(reply).rejects.toThrow('boom');
    else await drain(await reply);
    await settle();
    expect(sem.active).toBe(0);
  });

  it('gives the slot back when the downstream throws before returning a promise', async () => {
    const { stage, sem } = setup(1);
    const reply = stage(fakeExchange(), () => {
      throw new Error('sync');
    });
    await expect(reply).rejects.toThrow('sync');
    expect(sem.active).toBe(0);
  });

  it('refuses overflow with 503 bulkhead_full and Retry-After, without calling downstream, counted once each', async () => {
    const { stage, rejected } = setup(2);
    const g = gate();
    void stage(fakeExchange(), g.next);
    void stage(fakeExchange(), g.next);
    let called = false;
    const refused = await stage(fakeExchange(), () => {
      called = true;
      return Promise.resolve(SENT_200);
    });
    expect(called).toBe(false);
    expect(refused).toMatchObject({ kind: 'error', code: 'bulkhead_full', status: 503, headers: { 'retry-after': '1' } });
    expect(rejected()).toBe(1);
    await stage(fakeExchange(), g.next);
    expect(rejected()).toBe(2);
  });

  it('a queued request runs once a slot is handed over, and holds it in turn', async () => {
    const { stage, sem, rejected } = setup(1, 1);
    const first = gate();
    const second = gate();
    const a = stage(fakeExchange(), first.next);
    const b = stage(fakeExchange(), second.next);
    await settle();
    expect(sem.queued).toBe(1);
    expect(second.calls).toHaveLength(0);
    first.answer();
    await drain(await a);
    await settle();
    expect(second.calls).toHaveLength(1);
    expect(sem.active).toBe(1);
    second.answer();
    const rb = await b;
    expect(rb.kind).toBe('answer');
    await drain(rb);
    await settle();
    expect(sem.active).toBe(0);
    expect(rejected()).toBe(0);
  });

  it('a queued request whose queue time runs out is refused and never runs', async () => {
    const { stage, sem, clock, rejected } = setup(1, 1);
    const first = gate();
    const second = gate();
    const a = stage(fakeExchange(), first.next);
    const b = stage(fakeExchange(), second.next);
    await settle();
    clock.expire();
    expect(await b).toMatchObject({ code: 'bulkhead_full' });
    expect(second.calls).toHaveLength(0);
    expect(rejected()).toBe(1);
    expect(sem.queued).toBe(0);
    // The held slot is still the first request's; its end frees it.
    expect(sem.active).toBe(1);
    first.answer();
    await drain(await a);
    await settle();
    expect(sem.active).toBe(0);
  });

  it('past the queue limit, refuses at once', async () => {
    const { stage, sem, rejected } = setup(1, 1);
    const g = gate();
    void stage(fakeExchange(), g.next);
    void stage(fakeExchange(), g.next);
    await settle();
    expect(sem.queued).toBe(1);
    expect(await stage(fakeExchange(), g.next)).toMatchObject({ code: 'bulkhead_full' });
    expect(rejected()).toBe(1);
  });
});
