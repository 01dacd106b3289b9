import { describe, expect, it } from 'vitest';
import { cacheKey, keyPath } from '../../../src/cache/key.js';
import { MemoryCacheStore, type CacheEntry } from '../../../src/cache/memory-store.js';
import { RedisCacheStore, decodeEntry, encodeEntry, expiryMs, redisKeys, routeIndexKey } from '../../../src/cache/redis-store.js';
import { currentAgeMs, usability } from '../../../src/cache/freshness.js';
import { manualClock } from '../../../src/resilience/clock.js';
import type { RedisClient } from '../../../src/store/redis-connection.js';
import type { RedisHealth } from '../../../src/store/redis.js';

const entry = (over: Partial<CacheEntry> = {}): CacheEntry => ({
  status: 200,
  headers: { 'content-type': 'application/json', link: ['<a>; rel=next', '<b>; rel=prev'] },
  body: Buffer.from('{"a":1}\n\u0000line two'),
  freshness: { lifetimeMs: 60_000, initialAgeMs: 5_000, staleIfErrorMs: 10_000 },
  storedAt: 100,
  vary: [['accept', 'application/json']],
  path: 'api.vapi.ai/assistant/a1',
  route: 'assistant.fetch',
  ...over,
});

describe('Redis cache store: wire format and expiry', () => {
  it('gives every key what is left of freshness plus the stale allowance', () => {
    const rows = [
      { desc: 'just stored, with an Age it came with', now: 100, want: 65_000 },
      { desc: 'a second later', now: 1_100, want: 64_000 },
      { desc: 'stale, within the allowance', now: 60_100, want: 5_000 },
      { desc: 'past the allowance', now: 70_100, want: -5_000 },
    ];
    for (const r of rows) expect(expiryMs(entry(), r.now), r.desc).toBe(r.want);
  });

  it("round-trips an entry, its age carried by the key's remaining time, not a replica's clock", () => {
    const clock = manualClock(1_100);
    const e = entry();
    const ttl = expiryMs(e, clock());
    const wire = encodeEntry(e);
    // Another replica reads it 3 s later on a clock that started elsewhere.
    const other = manualClock(987_654);
    const back = decodeEntry(wire, ttl - 3_000, other())!;
    expect(back.status).toBe(200);
    expect(back.headers).toEqual(e.headers);
    expect(back.body.equals(e.body)).toBe(true);
    expect(back.vary).toEqual(e.vary);
    expect([back.path, back.route]).toEqual([e.path, e.route]);
    expect(back.freshness).toEqual(e.freshness);
    expect(currentAgeMs(back.freshness, back.storedAt, other())).toBe(currentAgeMs(e.freshness, e.storedAt, clock()) + 3_000);
    // And it ages on from there on the reader's clock.
    other.advance(56_000);
    expect(usability(back.freshness, back.storedAt, other())).toBe('stale-if-error');
    other.advance(10_000);
    expect(usability(back.freshness, back.storedAt, other())).toBe('expired');
  });

  it('reads nothing from a value it cannot parse or a key that is gone', () => {
    expect(decodeEntry(Buffer.from('no newline'), 1000, 0)).toBeUndefined();
    expect(decodeEntry(Buffer.from('{not json\nbody'), 1000, 0)).toBeUndefined();
    expect(decodeEntry(Buffer.from('{"s":200}\nbody'), 1000, 0)).toBeUndefined();
    expect(decodeEntry(encodeEntry(entry()), -2, 0)).toBeUndefined();
  });

  it('names keys by hashes: one tag per path, one entry per full key, nothing in clear', () => {
    const path = 'api.twilio.com/v2/PhoneNumbers/+15558675310';
    const k1 = cacheKey('twilio', `${path}?Fields=caller_name`, 'cred1', [], {});
    const k2 = cacheKey('twilio', `${path}?Fields=caller_name`, 'cred2', [], {});
    expect(keyPath(k1)).toBe(path);
    const a = redisKeys('bw:cache:twilio:', k1, keyPath(k1));
    const b = redisKeys('bw:cache:twilio:', k2, keyPath(k2));
    expect(a.entry).not.toBe(b.entry);
    const tag = (k: string) => /\{([^}]+)\}/.exec(k)![1];
    expect(tag(a.entry)).toBe(tag(b.entry));
    expect(tag(a.pathIndex)).toBe(tag(a.entry));
    expect(`${a.entry} ${a.pathIndex}`).not.toMatch(/5558675310|cred|Fields/);
    expect(routeIndexKey('bw:cache:twilio:', 'lookups')).toBe('bw:cache:twilio:{r:lookups}');
  });
});

/** A client that records commands and answers none: enough for the paths that never reach Redis. */
function fakeRedis(status: string) {
  const sent: string[] = [];
  const client = {
    status,
    defineCommand(name: string) {
      (client as Record<string, unknown>)[name] = (...a: unknown[]) => (sent.push(`${name} ${String(a[0])}`), new Promise(() => {}));
      (client as Record<string, unknown>)[`${name}Buffer`] = (...a: unknown[]) => (sent.push(`${name}Buffer ${String(a[0])}`), new Promise(() => {}));
    },
    once() {},
    del: (k: string) => (sent.push(`del ${k}`), new Promise(() => {})),
  };
  return { client: client as unknown as RedisClient, sent };
}

const down: RedisHealth = { usable: () => false, failed: () => {}, succeeded: () => {} };

describe('Redis cache store: bounds and fallback', () => {
  it('refuses a value over its bound and sends nothing', () => {
    const { client, sent } = fakeRedis('ready');
    const s = new RedisCacheStore({
      redis: client,
      health: { ...down, usable: () => true },
      local: new MemoryCacheStore({ maxEntries: 10, maxBytes: 1e6 }),
      clock: manualClock(100),
      timeoutMs: 50,
      maxValueBytes: 300,
      prefix: 'bw:cache:t:',
    });
    const before = sent.length;
    expect(s.set('k', entry({ body: Buffer.alloc(400) }))).toBe(false);
    expect(sent.length).toBe(before);
  });

  it('answers from memory synchronously while Redis is unusable, and sends it nothing', () => {
    const { client, sent } = fakeRedis('reconnecting');
    const local = new MemoryCacheStore({ maxEntries: 10, maxBytes: 1e6 });
    const s = new RedisCacheStore({ redis: client, health: down, local, clock: manualClock(100), timeoutMs: 50, maxValueBytes: 1e6, prefix: 'bw:cache:t:' });
    const k = cacheKey('t', 'h/assistant/a1', 'c', [], {});
    expect(s.set(k, entry({ path: 'h/assistant/a1' }))).toBe(true);
    const got = s.get(k);
    // Not a promise: the memory path costs no extra tick.
    expect(got !== undefined && 'then' in got).toBe(false);
    expect((got as CacheEntry).status).toBe(200);
    s.invalidatePath('h/assistant/a1');
    expect(s.get(k)).toBeUndefined();
    s.invalidateRoute('assistant.fetch');
    expect(sent).toEqual([]);
    // Kept to be sent once Redis is back.
    expect(s.backlog.invalidations).toBe(2);
  });
});
