// The bulkhead's semaphore with a hand-driven scheduler: queue timeouts fire when the test says.
import { describe, expect, it } from 'vitest';
import { Semaphore, type Scheduler } from '../../../src/resilience/semaphore.js';

function manualScheduler() {
  let id = 0;
  const timers = new Map<number, { fn: () => void; ms: number }>();
  const scheduler: Scheduler = {
    set(fn, ms) {
      timers.set(++id, { fn, ms });
      return id;
    },
    clear(h) {
      timers.delete(h as number);
    },
  };
  /** Fires every pending timer, as if its delay had elapsed. */
  const fireAll = () => {
    const due = [...timers.values()];
    timers.clear();
    for (const t of due) t.fn();
  };
  return { scheduler, timers, fireAll };
}

/** Lets resolved promises run their callbacks. */
const settle = () => new Promise<void>((r) => setImmediate(r));

describe('Semaphore: limit', () => {
  const rows = [
    { desc: 'limit 1', limit: 1 },
    { desc: 'limit 3', limit: 3 },
    { desc: 'limit 100', limit: 100 },
  ];
  it.each(rows)('$desc: exactly `limit` immediate acquisitions', ({ limit }) => {
    const s = new Semaphore(limit, 0, 1000, manualScheduler().scheduler);
    const got = Array.from({ length: limit + 2 }, () => s.tryAcquire());
    expect(got.filter(Boolean)).toHaveLength(limit);
    expect(s.active).toBe(limit);
  });

  it('release frees a slot when nobody waits', () => {
    const s = new Semaphore(1, 0, 1000, manualScheduler().scheduler);
    expect(s.tryAcquire()).toBe(true);
    expect(s.tryAcquire()).toBe(false);
    s.release();
    expect(s.active).toBe(0);
    expect(s.tryAcquire()).toBe(true);
  });

  it('an extra release never makes active negative', () => {
    const s = new Semaphore(1, 0, 1000, manualScheduler().scheduler);
    s.release();
    expect(s.active).toBe(0);
  });
});

describe('Semaphore: queue', () => {
  const rows = [
    { desc: 'no queue', queueLimit: 0, canQueue: [false] },
    { desc: 'queue of 2', queueLimit: 2, canQueue: [true, true, false] },
  ];
  it.each(rows)('canQueue respects the queue limit: $desc', ({ queueLimit, canQueue }) => {
    const s = new Semaphore(1, queueLimit, 1000, manualScheduler().scheduler);
    s.tryAcquire();
    const seen: boolean[] = [];
    for (let i = 0; i < canQueue.length; i++) {
      seen.push(s.canQueue());
      if (s.canQueue()) void s.wait();
    }
    expect(seen).toEqual(canQueue);
  });

  it('a waiter times out with false after queueTimeout and leaves the queue', async () => {
    const { scheduler, timers, fireAll } = manualScheduler();
    const s = new Semaphore(1, 5, 250, scheduler);
    s.tryAcquire();
    const p = s.wait();
    expect(s.queued).toBe(1);
    expect([...timers.values()].map((t) => t.ms)).toEqual([250]);
    fireAll();
    await expect(p).resolves.toBe(false);
    expect(s.queued).toBe(0);
    expect(s.active).toBe(1);
  });

  it('release hands the slot to the oldest waiter (FIFO) without freeing it', async () => {
    const { scheduler, timers } = manualScheduler();
    const s = new Semaphore(1, 5, 1000, scheduler);
    s.tryAcquire();
    const order: string[] = [];
    const a = s.wait().then((ok) => order.push(`a:${ok}`));
    const b = s.wait().then((ok) => order.push(`b:${ok}`));
    const c = s.wait().then((ok) => order.push(`c:${ok}`));
    s.release();
    await settle();
    expect(order).toEqual(['a:true']);
    expect(s.active).toBe(1);
    expect(s.tryAcquire()).toBe(false);
    s.release();
    s.release();
    await Promise.all([a, b, c]);
    expect(order).toEqual(['a:true', 'b:true', 'c:true']);
    // Each handed-over waiter's timer was cleared: nothing left to fire.
    expect(timers.size).toBe(0);
    s.release();
    expect(s.active).toBe(0);
  });

  it('a timed-out waiter is skipped by the next release', async () => {
    const { scheduler, timers } = manualScheduler();
    const s = new Semaphore(1, 5, 1000, scheduler);
    s.tryAcquire();
    const first = s.wait();
    const second = s.wait();
    // Only the first waiter's timer fires.
    const [firstTimer] = [...timers.entries()][0]!;
    const t = timers.get(firstTimer)!;
    timers.delete(firstTimer);
    t.fn();
    await expect(first).resolves.toBe(false);
    s.release();
    await expect(second).resolves.toBe(true);
    expect(s.queued).toBe(0);
  });
});
