import { describe, expect, it } from 'vitest';
import { MemoryCacheStore, entrySize, type CacheEntry } from '../../../src/cache/memory-store.js';
import { Coalescer } from '../../../src/cache/coalesce.js';

const entry = (path: string, bytes = 10, route = 'r'): CacheEntry => ({
  status: 200,
  headers: { 'content-type': 'application/json' },
  body: Buffer.alloc(bytes),
  freshness: { lifetimeMs: 1000, initialAgeMs: 0, staleIfErrorMs: 0 },
  storedAt: 0,
  vary: [],
  path,
  route,
});

describe('memory cache store', () => {
  it('drops every entry of a route, and only those, on a related-URI invalidation', () => {
    const s = new MemoryCacheStore({ maxEntries: 100, maxBytes: 1e9 });
    s.set('list-cred1', entry('/assistant', 10, 'assistants'));
    s.set('list-cred2', entry('/assistant', 10, 'assistants'));
    s.set('list-paged', entry('/assistant?page=2', 10, 'assistants'));
    s.set('one', entry('/assistant/a1', 10, 'assistant'));
    expect(s.invalidateRoute('assistants')).toBe(3);
    expect(s.get('list-cred1')).toBeUndefined();
    expect(s.get('list-paged')).toBeUndefined();
    expect(s.get('one')).toBeDefined();
    expect(s.invalidateRoute('assistants')).toBe(0);
    // The indexes stay consistent after deletes and evictions.
    s.delete('one');
    expect(s.invalidateRoute('assistant')).toBe(0);
    expect(s.size).toBe(0);
  });

  it('evicts the least recently used past its entry bound', () => {
    const evicted: string[] = [];
    const s = new MemoryCacheStore({ maxEntries: 2, maxBytes: 1e9, onEvict: (route) => evicted.push(route) });
    s.set('a', entry('/a', 10, 'ra'));
    s.set('b', entry('/b', 10, 'rb'));
    expect(s.get('a')).toBeDefined(); // a is now the most recent
    s.set('c', entry('/c'));
    expect(s.get('b')).toBeUndefined();
    expect(s.get('a')).toBeDefined();
    expect(s.get('c')).toBeDefined();
    // Told the evicted entry's route, for the per-route eviction counter.
    expect(evicted).toEqual(['rb']);
  });

  it('holds its byte bound and refuses an entry larger than the whole store', () => {
    const one = entrySize('k0', entry('/p', 1000));
    const s = new MemoryCacheStore({ maxEntries: 1000, maxBytes: one * 3 });
    for (let i = 0; i < 10; i++) s.set(`k${i}`, entry('/p', 1000));
    expect(s.bytes).toBeLessThanOrEqual(one * 3);
    expect(s.size).toBe(3);
    expect(s.set('huge', entry('/h', one * 4))).toBe(false);
    expect(s.get('huge')).toBeUndefined();
  });

  it('invalidates every key of a path (all credentials and queries), and only those', () => {
    const s = new MemoryCacheStore({ maxEntries: 100, maxBytes: 1e9 });
    s.set('cred1 /assistant/1', entry('/assistant/1'));
    s.set('cred2 /assistant/1?x=1', entry('/assistant/1'));
    s.set('cred1 /assistant/2', entry('/assistant/2'));
    expect(s.invalidatePath('/assistant/1')).toBe(2);
    expect(s.get('cred1 /assistant/1')).toBeUndefined();
    expect(s.get('cred2 /assistant/1?x=1')).toBeUndefined();
    expect(s.get('cred1 /assistant/2')).toBeDefined();
    const before = s.bytes;
    s.delete('cred1 /assistant/2');
    expect(s.bytes).toBeLessThan(before);
    expect(s.bytes).toBe(0);
  });
});

describe('coalescer', () => {
  it("one leader, bounded followers, all settled with the leader's outcome", async () => {
    const c = new Coalescer(2);
    const lead = c.join('k');
    const f1 = c.join('k');
    const f2 = c.join('k');
    const f3 = c.join('k');
    expect(lead.role).toBe('leader');
    expect(f1.role).toBe('follower');
    expect(f2.role).toBe('follower');
    expect(f3.role).toBe('alone');
    const e = entry('/a');
    if (lead.role === 'leader') lead.settle(e);
    if (f1.role === 'follower') expect(await f1.outcome).toBe(e);
    expect(c.inFlight).toBe(0);
    expect(c.join('k').role).toBe('leader'); // a new flight after the first settled
  });

  it('a failed leader settles followers with nothing (they go upstream themselves)', async () => {
    const c = new Coalescer(10);
    const lead = c.join('k');
    const f = c.join('k');
    if (lead.role === 'leader') lead.settle(undefined);
    if (f.role !== 'follower') throw new Error('expected a follower');
    expect(await f.outcome).toBeUndefined();
  });
});
