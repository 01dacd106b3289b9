// The rate limiter's stores. The memory store on a hand-moved clock: tables kept by id across
// calls (a reload keeps state), dropped by retain, refunds. The Redis store on a real
// redis-server: replicas share one bucket, a refund is seen fleet-wide, and when Redis is away
// or stalls a decision is made at once on the local share (limit / replicas) and said to be local.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../../../src/resilience/clock.js';
import type { BucketLimit, Decision } from '../../../src/resilience/token-bucket.js';
import { redisStore, shareOf, type StoreEvents } from '../../../src/store/redis.js';
import { limitId, memoryStore, type LimiterStore } from '../../../src/store/store.js';
import { startRedis, type RedisServer } from '../../support/redis.js';
import { freePort, waitFor } from '../../support/wait.mjs';

/** `n` per minute, burst n. */
const perMinute = (n: number): BucketLimit => ({ ratePerMs: n / 60_000, burst: n, maxDelayMs: 0 });
const allowedOf = async (ds: (Decision | Promise<Decision>)[]) => (await Promise.all(ds)).map((d) => d.allowed);

describe('memoryStore', () => {
  const make = () => {
    const clock = manualClock(0);
    return { clock, store: memoryStore({ maxKeys: 100, idleMs: 3_600_000, clock }) };
  };

  it('the same id returns the same table: state survives asking again (a reload)', () => {
    const { store } = make();
    const l = perMinute(2);
    const a = store.buckets('twilio|default', l);
    expect([a.take('k'), a.take('k')].map((d) => (d as Decision).allowed)).toEqual([true, true]);
    const again = store.buckets('twilio|default', l);
    expect((again.take('k') as Decision).allowed).toBe(false);
    expect(again.size()).toBe(1);
  });

  it('tables of other ids and keys of one table are independent', () => {
    const { store } = make();
    const l = perMinute(1);
    const a = store.buckets('a', l);
    const b = store.buckets('b', l);
    expect((a.take('k') as Decision).allowed).toBe(true);
    expect((a.take('k') as Decision).allowed).toBe(false);
    expect((a.take('other') as Decision).allowed).toBe(true);
    expect((b.take('k') as Decision).allowed).toBe(true);
  });

  it('refills on the injected clock', () => {
    const { store, clock } = make();
    const t = store.buckets('a', perMinute(1));
    expect((t.take('k') as Decision).allowed).toBe(true);
    clock.advance(59_999);
    expect((t.take('k') as Decision).allowed).toBe(false);
    clock.advance(1);
    expect((t.take('k') as Decision).allowed).toBe(true);
  });

  it('a refund gives the token back', () => {
    const { store } = make();
    const t = store.buckets('a', perMinute(1));
    const d = t.take('k') as Decision;
    expect((t.take('k') as Decision).allowed).toBe(false);
    t.refund('k', d);
    expect((t.take('k') as Decision).allowed).toBe(true);
  });

  it('retain drops the tables of removed limits and keeps the rest', () => {
    const { store } = make();
    const l = perMinute(1);
    store.buckets('kept', l).take('k');
    store.buckets('gone', l).take('k');
    store.retain(new Set(['kept']));
    expect((store.buckets('kept', l).take('k') as Decision).allowed).toBe(false);
    expect((store.buckets('gone', l).take('k') as Decision).allowed).toBe(true);
  });

  it('limitId changes with every part of the limit', () => {
    const base = perMinute(5);
    const ids = new Set([base, { ...base, burst: 6 }, { ...base, ratePerMs: 1 }, { ...base, maxDelayMs: 10 }].map((l) => limitId('twilio|default', l)));
    expect(ids.size).toBe(4);
    expect(limitId('vapi|default', base)).not.toBe(limitId('twilio|default', base));
  });
});

describe('shareOf', () => {
  const rows = [
    { desc: 'one replica keeps the limit', replicas: 1, l: perMinute(10), burst: 10, rate: 10 / 60_000 },
    { desc: 'four replicas get a quarter each', replicas: 4, l: perMinute(10), burst: 2, rate: 10 / 60_000 / 4 },
    { desc: 'never less than one token of burst', replicas: 50, l: perMinute(10), burst: 1, rate: 10 / 60_000 / 50 },
  ];
  it.each(rows)('$desc', ({ replicas, l, burst, rate }) => {
    const s = shareOf(l, replicas);
    expect(s.burst).toBe(burst);
    expect(s.ratePerMs).toBeCloseTo(rate, 12);
    expect(s.maxDelayMs).toBe(l.maxDelayMs);
  });
});

describe('redisStore', () => {
  let server: RedisServer;
  let admin: Redis;
  const opened: LimiterStore[] = [];
  beforeAll(async () => {
    server = await startRedis();
    admin = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    for (const s of opened) await s.close();
    admin?.disconnect();
    await server?.kill();
  });

  function recorder() {
    const errors: string[] = [];
    const fallbacks: [boolean, string | undefined][] = [];
    const events: StoreEvents = { error: (r) => errors.push(r), fallback: (a, r) => fallbacks.push([a, r]) };
    return { errors, fallbacks, events };
  }
  let prefixes = 0;
  function open(url: string, opts: { replicas?: number; timeoutMs?: number; retryMs?: number; prefix?: string; local?: LimiterStore } = {}) {
    const rec = recorder();
    const store = redisStore({
      connection: { type: 'single', url, username: '', password: '', tls: false, caFile: '' },
      replicas: opts.replicas ?? 1,
      timeoutMs: opts.timeoutMs ?? 2000,
      retryMs: opts.retryMs ?? 60_000,
      local: opts.local ?? memoryStore({ maxKeys: 100, idleMs: 3_600_000, clock: manualClock(0) }),
      events: rec.events,
      prefix: opts.prefix ?? `t${++prefixes}:`,
    });
    opened.push(store);
    return { store, ...rec };
  }
  const ready = async (s: { redis: { status: string } }) => expect(await waitFor(() => s.redis.status === 'ready', { timeoutMs: 5000 })).toBe(true);

  it('two replicas on one prefix share one bucket, decided in Redis', async () => {
    const a = open(server.url, { prefix: 'shared1:' });
    const b = open(server.url, { prefix: 'shared1:' });
    await ready(a.store);
    await ready(b.store);
    const l = perMinute(2);
    const ta = a.store.buckets('twilio|default', l);
    const tb = b.store.buckets('twilio|default', l);
    expect(await allowedOf([ta.take('client-1')])).toEqual([true]);
    expect(await allowedOf([tb.take('client-1')])).toEqual([true]);
    const third = await ta.take('client-1');
    expect(third).toMatchObject({ allowed: false });
    expect(third.local).toBeUndefined();
    expect(await admin.exists('shared1:twilio|default:client-1')).toBe(1);
    expect(a.errors).toEqual([]);
    expect(a.fallbacks).toEqual([]);
  });

  it('a refund of a Redis decision gives the token back for the whole fleet', async () => {
    const a = open(server.url, { prefix: 'refund1:' });
    const b = open(server.url, { prefix: 'refund1:' });
    await ready(a.store);
    await ready(b.store);
    const l = perMinute(1);
    const ta = a.store.buckets('x', l);
    const granted = await ta.take('k');
    expect(granted.allowed).toBe(true);
    ta.refund('k', granted);
    expect(await waitFor(async () => Number(await admin.hget('refund1:x:k', 'tokens')) >= 1, { timeoutMs: 2000 })).toBe(true);
    expect((await b.store.buckets('x', l).take('k')).allowed).toBe(true);
  });

  it('with Redis away, decides at once on the local share and reports the fallback once', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const s = open(dead, { replicas: 2 });
    const t = s.store.buckets('twilio|default', perMinute(4));
    // Share of 4 over 2 replicas: 2.
    const ds = await Promise.all([t.take('k'), t.take('k'), t.take('k')]);
    expect(ds.map((d) => d.allowed)).toEqual([true, true, false]);
    expect(ds.every((d) => d.local === true)).toBe(true);
    expect(s.fallbacks).toEqual([[true, 'disconnected']]);
    expect(s.errors).toEqual(['disconnected']);
    // The fallback tables live under their own id and survive a retain of the limit's id.
    s.store.retain(new Set(['twilio|default']));
    expect((await t.take('k')).allowed).toBe(false);
  });

  it('a decision Redis does not answer within timeoutMs is made locally, and the next answer ends the fallback', async () => {
    const s = open(server.url, { timeoutMs: 50, retryMs: 0 });
    await ready(s.store);
    const t = s.store.buckets('stall', perMinute(5));
    // Redis holds every command for 1 s: far past the 50 ms the store waits.
    await admin.call('CLIENT', 'PAUSE', '1000', 'ALL');
    const d = await t.take('k');
    expect(d).toMatchObject({ allowed: true, local: true });
    expect(s.errors).toEqual(['timeout']);
    expect(s.fallbacks).toEqual([[true, 'timeout']]);
    // With no back-off left, the next decision is Redis's again and ends the fallback.
    await admin.call('CLIENT', 'UNPAUSE');
    const back = await t.take('k');
    expect(back.local).toBeUndefined();
    expect(s.fallbacks).toEqual([
      [true, 'timeout'],
      [false, undefined],
    ]);
  });

  it('the fallback share of a limit is a table of its own, apart from a local limit of the same id', async () => {
    const local = memoryStore({ maxKeys: 100, idleMs: 3_600_000, clock: manualClock(0) });
    const s = open(`redis://127.0.0.1:${await freePort()}`, { replicas: 2, local });
    const l = perMinute(4);
    const always = local.buckets('twilio|default', l);
    for (let i = 0; i < 4; i++) expect((always.take('k') as Decision).allowed).toBe(true);
    expect((always.take('k') as Decision).allowed).toBe(false);
    expect(await s.store.buckets('twilio|default', l).take('k')).toMatchObject({ allowed: true, local: true });
  });

  it('a refund of a local decision goes back to the local table, not to Redis', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const s = open(dead);
    const t = s.store.buckets('loc', perMinute(1));
    const d = await t.take('k');
    expect(d.local).toBe(true);
    expect((await t.take('k')).allowed).toBe(false);
    t.refund('k', d);
    expect((await t.take('k')).allowed).toBe(true);
  });
});
