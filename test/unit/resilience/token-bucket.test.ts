// Token-bucket maths and the bounded bucket table. Time is a number the test passes in.
import { describe, expect, it } from 'vitest';
import { BucketTable, take, type Bucket, type BucketLimit } from '../../../src/resilience/token-bucket.js';

/** `n` per `perMs`, burst `burst` (default n), shaping up to `maxDelayMs`. */
const limit = (n: number, perMs: number, burst = n, maxDelayMs = 0): BucketLimit => ({ ratePerMs: n / perMs, burst, maxDelayMs });
const full = (l: BucketLimit, at = 0): Bucket => ({ tokens: l.burst, last: at });

describe('take: burst and remaining', () => {
  const rows = [
    { desc: '5/min allows a burst of 5', l: limit(5, 60_000), allowed: 5 },
    { desc: 'burst larger than rate', l: limit(1, 1000, 10), allowed: 10 },
    { desc: 'burst of 1', l: limit(100, 1000, 1), allowed: 1 },
    { desc: 'fractional burst below one token allows nothing', l: limit(1, 1000, 0.5), allowed: 0 },
  ];
  it.each(rows)('$desc', ({ l, allowed }) => {
    const b: Bucket = full(l);
    const results = Array.from({ length: allowed + 1 }, () => take(b, l, 0));
    expect(results.filter((d) => d.allowed)).toHaveLength(allowed);
    expect(results.at(-1)!.allowed).toBe(false);
  });

  it('remaining counts down in whole tokens', () => {
    const l = limit(5, 60_000);
    const b = full(l);
    expect([1, 2, 3, 4, 5].map(() => take(b, l, 0).remaining)).toEqual([4, 3, 2, 1, 0]);
  });
});

describe('take: resetMs and refill over time', () => {
  it('a refused take reports the exact wait for the next token', () => {
    const l = limit(5, 60_000); // one token per 12 s
    const b = full(l);
    for (let i = 0; i < 5; i++) take(b, l, 0);
    expect(take(b, l, 0)).toEqual({ allowed: false, delayMs: 0, remaining: 0, resetMs: 12_000 });
    expect(take(b, l, 3_000).resetMs).toBeCloseTo(9_000, 6);
  });

  it('an allowed take reports the time until the bucket is full again', () => {
    const l = limit(5, 60_000);
    const b = full(l);
    expect(take(b, l, 0).resetMs).toBeCloseTo(12_000, 6);
    expect(take(b, l, 0).resetMs).toBeCloseTo(24_000, 6);
  });

  const refill = [
    { desc: 'just before a token has refilled: refused', after: 11_999, allowed: false },
    { desc: 'exactly when a token has refilled: allowed', after: 12_000, allowed: true },
    { desc: 'long idle refills to burst, never beyond', after: 10 * 60_000, allowed: true },
  ];
  it.each(refill)('$desc', ({ after, allowed }) => {
    const l = limit(5, 60_000);
    const b = full(l);
    for (let i = 0; i < 5; i++) take(b, l, 0);
    expect(take(b, l, after).allowed).toBe(allowed);
    expect(b.tokens).toBeLessThanOrEqual(l.burst);
  });

  it('after a long idle only burst tokens are available', () => {
    const l = limit(5, 60_000);
    const b: Bucket = { tokens: 0, last: 0 };
    const at = 3_600_000;
    const allowed = Array.from({ length: 10 }, () => take(b, l, at)).filter((d) => d.allowed).length;
    expect(allowed).toBe(5);
  });

  it('a clock that goes backwards neither refills nor breaks the bucket', () => {
    const l = limit(1, 1000);
    const b: Bucket = { tokens: 0, last: 5_000 };
    expect(take(b, l, 1_000).allowed).toBe(false);
    expect(b.last).toBe(5_000);
    expect(take(b, l, 6_000).allowed).toBe(true);
  });
});

describe('take: shaping with maxDelay', () => {
  it('reservations go negative and wait their turn, then refuse beyond maxDelay', () => {
    const l = limit(1, 1000, 1, 5_000); // 1/s, burst 1, wait at most 5 s
    const b = full(l);
    const ds = Array.from({ length: 8 }, () => take(b, l, 0));
    expect(ds.map((d) => d.allowed)).toEqual([true, true, true, true, true, true, false, false]);
    expect(ds.slice(0, 6).map((d) => d.delayMs)).toEqual([0, 1000, 2000, 3000, 4000, 5000]);
    expect(b.tokens).toBe(-5);
    // Refused: the wait for the next free slot is reported, and nothing was reserved.
    expect(ds[6]).toEqual({ allowed: false, delayMs: 0, remaining: 0, resetMs: 6000 });
  });

  it('reservations are repaid by refill', () => {
    const l = limit(1, 1000, 1, 2_000);
    const b = full(l);
    for (let i = 0; i < 3; i++) take(b, l, 0);
    expect(take(b, l, 0).allowed).toBe(false);
    // 3 s later the debt of 2 is repaid and one token is back.
    const d = take(b, l, 3_000);
    expect(d).toMatchObject({ allowed: true, delayMs: 0 });
  });

  it('maxDelay 0 never delays', () => {
    const l = limit(1, 1000, 1, 0);
    const b = full(l);
    take(b, l, 0);
    const d = take(b, l, 0);
    expect(d.allowed).toBe(false);
    expect(d.delayMs).toBe(0);
  });
});

describe('BucketTable: bounded per-key state', () => {
  const one = limit(1, 60_000, 1);

  it('keeps keys independent', () => {
    const t = new BucketTable(one, 10, 60_000);
    expect(t.take('a', 0).allowed).toBe(true);
    expect(t.take('a', 0).allowed).toBe(false);
    expect(t.take('b', 0).allowed).toBe(true);
  });

  it('never holds more than maxKeys, evicting the least recently used', () => {
    const t = new BucketTable(one, 3, 3_600_000);
    for (const k of ['a', 'b', 'c']) t.take(k, 0);
    t.take('a', 1); // touch: b is now the least recently used
    t.take('d', 2);
    expect(t.size).toBe(3);
    // a was kept (still empty), b was evicted (starts full again).
    expect(t.take('a', 3).allowed).toBe(false);
    expect(t.take('b', 3).allowed).toBe(true);
  });

  it('stays at maxKeys under 10 000 distinct keys', () => {
    const t = new BucketTable(one, 100, 3_600_000);
    for (let i = 0; i < 10_000; i++) t.take(`k${i}`, i);
    expect(t.size).toBe(100);
  });

  it('sweeps idle keys as new keys arrive (two looked at per new key)', () => {
    const t = new BucketTable(one, 1000, 10_000);
    for (const k of ['a', 'b', 'c']) t.take(k, 0);
    t.take('d', 5_000);
    expect(t.size).toBe(4);
    // a, b, c are idle for 10 s by now; d is not. Three new keys look at six entries: enough
    // for the cursor to reach every idle one.
    for (const k of ['e', 'f', 'g']) t.take(k, 10_000);
    expect(t.size).toBe(4); // d, e, f, g
    expect(t.take('d', 10_000).allowed).toBe(false); // d kept its (spent) bucket
  });

  it('an idle key that was swept starts with a full bucket (it had refilled anyway)', () => {
    const t = new BucketTable(one, 1000, 10_000);
    t.take('a', 0);
    expect(t.take('a', 0).allowed).toBe(false);
    t.take('z', 60_000);
    expect(t.take('a', 60_000).allowed).toBe(true);
  });
});
