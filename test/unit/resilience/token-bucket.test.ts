// Token-bucket maths and the bounded bucket table. Time is a number the test passes in.
//
// The maths rows run twice: against take() here and against the Lua script the Redis store runs
// (src/store/redis.ts), on a real redis-server. The script reads Redis's clock; for these rows
// its clock line is swapped for the row's time (an argument), and nothing else changes, so the
// rows check both implementations of one algorithm against the same numbers.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BucketTable, take, type Bucket, type BucketLimit, type Decision } from '../../../src/resilience/token-bucket.js';
import { BUCKET_SCRIPT } from '../../../src/store/redis.js';
import { startRedis, type RedisServer } from '../../support/redis.js';

/** `n` per `perMs`, burst `burst` (default n), shaping up to `maxDelayMs`. */
const limit = (n: number, perMs: number, burst = n, maxDelayMs = 0): BucketLimit => ({ ratePerMs: n / perMs, burst, maxDelayMs });
const full = (l: BucketLimit, at = 0): Bucket => ({ tokens: l.burst, last: at });

/** One bucket under test: take a token at a time, read its state back. */
interface Handle {
  take(now: number): Promise<Decision>;
  state(): Promise<Bucket>;
}
interface Impl {
  readonly name: string;
  /** A bucket for `l` starting as `start`. */
  bucket(l: BucketLimit, start: Bucket): Promise<Handle>;
}

const typescript: Impl = {
  name: 'TypeScript take()',
  bucket: async (l, start) => {
    const b = { ...start };
    return { take: async (now) => take(b, l, now), state: async () => b };
  },
};

const CLOCK_LINES = /local t = redis\.call\('TIME'\)\nlocal now = [^\n]+\n/;
const SCRIPT_AT = BUCKET_SCRIPT.replace(CLOCK_LINES, 'local now = tonumber(ARGV[4])\n');
type WithBucketAt = Redis & { bwBucketAt(key: string, rate: number, burst: number, maxDelay: number, now: number): Promise<[number, string, string, string]> };

let server: RedisServer | undefined;
let redis: WithBucketAt | undefined;
let keys = 0;
const lua: Impl = {
  name: 'Lua script (redis-server)',
  bucket: async (l, start) => {
    const r = redis!;
    const key = `bucket-test:${++keys}`;
    await r.hset(key, 'tokens', String(start.tokens), 'last', String(start.last));
    return {
      take: async (now) => {
        const [allowed, delay, remaining, reset] = await r.bwBucketAt(key, l.ratePerMs, l.burst, l.maxDelayMs, now);
        return { allowed: allowed === 1, delayMs: Number(delay), remaining: Number(remaining), resetMs: Number(reset) };
      },
      state: async () => {
        const [tokens, last] = await r.hmget(key, 'tokens', 'last');
        return { tokens: Number(tokens), last: Number(last) };
      },
    };
  },
};

beforeAll(async () => {
  // The swap must have happened, or the Lua rows would run on Redis's own clock.
  expect(SCRIPT_AT).not.toBe(BUCKET_SCRIPT);
  expect(SCRIPT_AT).not.toContain("'TIME'");
  server = await startRedis();
  redis = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: 1 }) as WithBucketAt;
  redis.defineCommand('bwBucketAt', { numberOfKeys: 1, lua: SCRIPT_AT });
});
afterAll(async () => {
  redis?.disconnect();
  await server?.kill();
});

/** `n` takes at the same instant. */
const takes = (h: Handle, n: number, now = 0) =>
  Array.from({ length: n }).reduce<Promise<Decision[]>>(async (acc) => [...(await acc), await h.take(now)], Promise.resolve([]));

describe.each([typescript, lua])('$name', (impl) => {
  describe('take: burst and remaining', () => {
    const rows = [
      { desc: '5/min allows a burst of 5', l: limit(5, 60_000), allowed: 5 },
      { desc: 'burst larger than rate', l: limit(1, 1000, 10), allowed: 10 },
      { desc: 'burst of 1', l: limit(100, 1000, 1), allowed: 1 },
      { desc: 'fractional burst below one token allows nothing', l: limit(1, 1000, 0.5), allowed: 0 },
    ];
    it.each(rows)('$desc', async ({ l, allowed }) => {
      const b = await impl.bucket(l, full(l));
      const results = await takes(b, allowed + 1);
      expect(results.filter((d) => d.allowed)).toHaveLength(allowed);
      expect(results.at(-1)!.allowed).toBe(false);
    });

    it('remaining counts down in whole tokens', async () => {
      const l = limit(5, 60_000);
      const b = await impl.bucket(l, full(l));
      expect((await takes(b, 5)).map((d) => d.remaining)).toEqual([4, 3, 2, 1, 0]);
    });

    it('remaining rounds a part-refilled bucket down', async () => {
      const l = limit(5, 60_000); // one token per 12 s
      const b = await impl.bucket(l, full(l));
      await takes(b, 5);
      // 18 s later 1.5 tokens are back: one is taken, half a token is not one left.
      expect(await b.take(18_000)).toMatchObject({ allowed: true, remaining: 0 });
      expect((await b.state()).tokens).toBeCloseTo(0.5, 9);
    });
  });

  describe('take: resetMs and refill over time', () => {
    it('a refused take reports the exact wait for the next token', async () => {
      const l = limit(5, 60_000); // one token per 12 s
      const b = await impl.bucket(l, full(l));
      await takes(b, 5);
      expect(await b.take(0)).toEqual({ allowed: false, delayMs: 0, remaining: 0, resetMs: 12_000 });
      expect((await b.take(3_000)).resetMs).toBeCloseTo(9_000, 6);
    });

    it('an allowed take reports the time until the bucket is full again', async () => {
      const l = limit(5, 60_000);
      const b = await impl.bucket(l, full(l));
      expect((await b.take(0)).resetMs).toBeCloseTo(12_000, 6);
      expect((await b.take(0)).resetMs).toBeCloseTo(24_000, 6);
    });

    const refill = [
      { desc: 'just before a token has refilled: refused', after: 11_999, allowed: false },
      { desc: 'exactly when a token has refilled: allowed', after: 12_000, allowed: true },
      { desc: 'long idle refills to burst, never beyond', after: 10 * 60_000, allowed: true },
    ];
    it.each(refill)('$desc', async ({ after, allowed }) => {
      const l = limit(5, 60_000);
      const b = await impl.bucket(l, full(l));
      await takes(b, 5);
      expect((await b.take(after)).allowed).toBe(allowed);
      expect((await b.state()).tokens).toBeLessThanOrEqual(l.burst);
    });

    it('after a long idle only burst tokens are available', async () => {
      const l = limit(5, 60_000);
      const b = await impl.bucket(l, { tokens: 0, last: 0 });
      const at = 3_600_000;
      const allowed = (await takes(b, 10, at)).filter((d) => d.allowed).length;
      expect(allowed).toBe(5);
    });

    it('a clock that goes backwards neither refills nor breaks the bucket', async () => {
      const l = limit(1, 1000);
      const b = await impl.bucket(l, { tokens: 0, last: 5_000 });
      expect((await b.take(1_000)).allowed).toBe(false);
      expect((await b.state()).last).toBe(5_000);
      expect((await b.take(6_000)).allowed).toBe(true);
    });

    it('a clock that goes backwards does not take tokens away either', async () => {
      const l = limit(1, 1000, 3);
      const b = await impl.bucket(l, { tokens: 3, last: 5_000 });
      expect(await b.take(1_000)).toMatchObject({ allowed: true, remaining: 2 });
      expect((await b.state()).last).toBe(5_000);
    });
  });

  describe('take: shaping with maxDelay', () => {
    it('reservations go negative and wait their turn, then refuse beyond maxDelay', async () => {
      const l = limit(1, 1000, 1, 5_000); // 1/s, burst 1, wait at most 5 s
      const b = await impl.bucket(l, full(l));
      const ds = await takes(b, 8);
      expect(ds.map((d) => d.allowed)).toEqual([true, true, true, true, true, true, false, false]);
      expect(ds.slice(0, 6).map((d) => d.delayMs)).toEqual([0, 1000, 2000, 3000, 4000, 5000]);
      expect((await b.state()).tokens).toBe(-5);
      // Refused: the wait for the next free slot is reported, and nothing was reserved.
      expect(ds[6]).toEqual({ allowed: false, delayMs: 0, remaining: 0, resetMs: 6000 });
    });

    it('reservations are repaid by refill', async () => {
      const l = limit(1, 1000, 1, 2_000);
      const b = await impl.bucket(l, full(l));
      await takes(b, 3);
      expect((await b.take(0)).allowed).toBe(false);
      // 3 s later the debt of 2 is repaid and one token is back.
      const d = await b.take(3_000);
      expect(d).toMatchObject({ allowed: true, delayMs: 0 });
    });

    it('maxDelay 0 never delays', async () => {
      const l = limit(1, 1000, 1, 0);
      const b = await impl.bucket(l, full(l));
      await b.take(0);
      const d = await b.take(0);
      expect(d.allowed).toBe(false);
      expect(d.delayMs).toBe(0);
    });
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
