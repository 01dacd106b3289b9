import { describe, expect, it } from 'vitest';
import { BoundedMap } from '../../../src/resilience/bounded-map.js';

const keys = (m: { get(key: string): unknown }, all: string[]) => all.filter((k) => m.get(k) !== undefined);

describe('BoundedMap', () => {
  it('evicts the oldest past its entry bound and says so', () => {
    const removed: [string, boolean][] = [];
    const m = new BoundedMap<string, number>({ maxEntries: 2, onRemove: (k, _v, evicted) => removed.push([k, evicted]) });
    m.set('a', 1);
    m.set('b', 2);
    m.set('c', 3);
    expect(keys(m, ['a', 'b', 'c'])).toEqual(['b', 'c']);
    m.delete('b');
    expect(removed).toEqual([
      ['a', true],
      ['b', false],
    ]);
  });

  it('touch makes an entry the most recently used; get does not', () => {
    const m = new BoundedMap<string, number>({ maxEntries: 2 });
    m.set('a', 1);
    m.set('b', 2);
    m.get('a');
    m.set('c', 3);
    expect(keys(m, ['a', 'b', 'c'])).toEqual(['b', 'c']);
    m.touch('b');
    m.set('d', 4);
    expect(keys(m, ['b', 'c', 'd'])).toEqual(['b', 'd']);
  });

  it('holds its weight bound, refuses a value heavier than the table, and keeps the total exact', () => {
    const m = new BoundedMap<string, { w: number }>({ maxEntries: 100, maxWeight: 10, weigh: (v) => v.w });
    expect(m.set('big', { w: 11 })).toBe(false);
    expect(m.size).toBe(0);
    for (let i = 0; i < 6; i++) m.set(`k${i}`, { w: 3 });
    expect(m.weight).toBeLessThanOrEqual(10);
    expect(keys(m, ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'])).toEqual(['k3', 'k4', 'k5']);
    m.set('k4', { w: 1 }); // replacing re-weighs
    expect(m.weight).toBe(7);
    m.clear();
    expect([m.size, m.weight]).toEqual([0, 0]);
  });

  it('drops expired entries from the oldest end as it is written, a bounded number per write', () => {
    const m = new BoundedMap<string, number>({ maxEntries: 1000, expired: (until, now) => until <= now });
    for (let i = 0; i < 100; i++) m.set(`old${i}`, 10);
    m.set('live', 1000, 50);
    // At most 16 expired looked at per write while within bounds.
    expect(m.size).toBe(101 - 16);
    for (let i = 0; i < 10; i++) m.set(`n${i}`, 1000, 50);
    expect(
      keys(
        m,
        Array.from({ length: 100 }, (_, i) => `old${i}`),
      ),
    ).toEqual([]);
    expect(m.get('live')).toBe(1000);
  });

  it('stops at a live oldest entry, and starts again from it once it is used or gone', () => {
    const m = new BoundedMap<string, number>({ maxEntries: 1000, expired: (until, now) => until <= now });
    m.set('keep', 1000, 0);
    m.set('x', 10, 0);
    m.set('y', 1000, 50); // 'keep' is live: nothing behind it is looked at
    expect(m.get('x')).toBe(10);
    m.touch('keep'); // now 'x' is the oldest
    m.set('z', 1000, 50);
    expect(m.get('x')).toBeUndefined();
    expect(keys(m, ['keep', 'y', 'z'])).toEqual(['keep', 'y', 'z']);
  });

  it('stays linear under churn: 200,000 writes through a table of 1,000', () => {
    const m = new BoundedMap<number, number>({ maxEntries: 1000, expired: (until, now) => until <= now });
    const started = performance.now();
    for (let i = 0; i < 200_000; i++) m.set(i, i + 500, i);
    expect(m.size).toBeLessThanOrEqual(1000);
    expect(performance.now() - started).toBeLessThan(2000);
  });
});
