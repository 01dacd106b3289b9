// The stores' logic with an injected clock and a scripted Redis double: no sleeps beyond a
// promise turn, no real Redis (the integration tests run real redis-server processes).
import { describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { answerBytes, MemoryIdempotencyStore, type StoredAnswer } from '../../../src/store/idempotency-store.js';
import { redisIdempotencyStore } from '../../../src/store/redis-idempotency.js';
import { manualClock } from '../../../src/resilience/clock.js';

const answer = (bytes: number): StoredAnswer => ({ status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(bytes, 0x61) });
const store = (key: string, s: MemoryIdempotencyStore, a: StoredAnswer, ttl = 60_000) => {
  expect(s.claim(key, 'fp')).toBe('claimed');
  s.complete(key, 'fp', a, ttl);
};

describe('MemoryIdempotencyStore budget', () => {
  const rows = [
    { desc: 'keeps everything inside the byte budget', entries: 100, answers: 10, size: 1000, budgetFor: 10, kept: 10 },
    { desc: 'evicts the oldest answers once over the byte budget', entries: 100, answers: 30, size: 1000, budgetFor: 10, kept: 10 },
    { desc: 'still honours the entry cap under a large byte budget', entries: 5, answers: 30, size: 1000, budgetFor: 1000, kept: 5 },
  ];
  for (const r of rows) {
    it(r.desc, () => {
      const clock = manualClock();
      const per = answerBytes('k00', answer(r.size));
      const s = new MemoryIdempotencyStore(r.entries, clock, per * r.budgetFor);
      for (let i = 0; i < r.answers; i++) store(`k${String(i).padStart(2, '0')}`, s, answer(r.size));
      expect(s.size()).toBe(r.kept);
      expect(s.byteSize()).toBeLessThanOrEqual(per * r.budgetFor);
      // The newest survive, the oldest went first.
      expect(s.lookup(`k${String(r.answers - 1).padStart(2, '0')}`).state).toBe('done');
      if (r.answers > r.kept) expect(s.lookup('k00').state).toBe('absent');
    });
  }

  it('drops expired answers before live ones and gives their bytes back', () => {
    const clock = manualClock();
    const per = answerBytes('old-0', answer(100));
    const s = new MemoryIdempotencyStore(100, clock, per * 4);
    store('old-0', s, answer(100), 1000);
    store('old-1', s, answer(100), 1000);
    clock.advance(2000);
    store('new-0', s, answer(100));
    expect(s.lookup('old-0').state).toBe('absent');
    expect(s.lookup('old-1').state).toBe('absent');
    expect(s.lookup('new-0').state).toBe('done');
    expect(s.byteSize()).toBe(answerBytes('new-0', answer(100)));
  });

  it('stores a streamed original under its final fingerprint, not the pending one', () => {
    const clock = manualClock();
    const s = new MemoryIdempotencyStore(10, clock);
    expect(s.claim('k', 'pending')).toBe('claimed');
    expect(s.claim('k', 'pending')).toBe('taken');
    s.complete('k', 'final-hash', answer(10), 1000);
    const found = s.lookup('k');
    expect(found.state === 'done' && found.fingerprint).toBe('final-hash');
  });
});

/** A Redis double whose every command follows the script: answer, fail, or never answer. */
function scriptedRedis() {
  const data = new Map<string, string>();
  const d = {
    status: 'ready' as string,
    mode: 'ok' as 'ok' | 'error' | 'hang',
    sets: 0,
    data,
    run<T>(f: () => T): Promise<T> {
      if (d.mode === 'error') return Promise.reject(new Error('OOM command not allowed'));
      if (d.mode === 'hang') return new Promise(() => {});
      return Promise.resolve(f());
    },
    get: (k: string) => d.run(() => data.get(k) ?? null),
    set: (k: string, v: string, ...args: unknown[]) =>
      d.run(() => {
        d.sets++;
        if (args.includes('NX') && data.has(k)) return null;
        data.set(k, v);
        return 'OK';
      }),
    eval: (_s: string, _n: number, k: string, v: string) => d.run(() => (data.get(k) === v ? Number(data.delete(k)) : 0)),
    del: (k: string) => d.run(() => Number(data.delete(k))),
    on: () => d,
  };
  return d;
}

/** Redis keys holding claims or answers (not the generation marker). */
const records = (r: ReturnType<typeof scriptedRedis>) => [...r.data.keys()].filter((k) => !k.endsWith('generation'));

const health = { usable: () => true, failed: () => {}, succeeded: () => {} };
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('redisIdempotencyStore', () => {
  const make = (r: ReturnType<typeof scriptedRedis>, retryMs = 1) => {
    const clock = manualClock();
    return redisIdempotencyStore({
      redis: r as unknown as Redis,
      health,
      local: new MemoryIdempotencyStore(100, clock),
      timeoutMs: 5,
      claimMs: 60_000,
      retryMs,
    });
  };
  const rows = [
    { desc: 'a lookup that times out is unavailable, not absent', mode: 'hang' as const, status: 'ready' },
    { desc: 'a lookup that errors is unavailable', mode: 'error' as const, status: 'ready' },
    { desc: 'a lookup while disconnected is unavailable', mode: 'ok' as const, status: 'reconnecting' },
  ];
  for (const row of rows) {
    it(row.desc, async () => {
      const r = scriptedRedis();
      const s = make(r);
      r.mode = row.mode;
      r.status = row.status;
      expect((await s.lookup('k')).state).toBe('unavailable');
    });
  }

  it('a claim Redis cannot confirm is unavailable and leaves no local claim behind', async () => {
    const r = scriptedRedis();
    const s = make(r);
    r.mode = 'hang';
    expect(await s.claim('k', 'fp', 1000)).toBe('unavailable');
    r.mode = 'ok';
    expect((await s.lookup('k')).state).toBe('absent');
    expect(await s.claim('k', 'fp', 1000)).toBe('claimed');
  });

  it('a claim another replica holds is taken', async () => {
    const r = scriptedRedis();
    const a = make(r);
    const b = make(r);
    expect(await a.claim('k', 'fp', 1000)).toBe('claimed');
    expect(await b.claim('k', 'fp', 1000)).toBe('taken');
    expect((await b.lookup('k')).state).toBe('in_flight');
  });

  it('re-publishes an answer Redis refused once it takes writes again', async () => {
    const r = scriptedRedis();
    const a = make(r);
    const b = make(r);
    expect(await a.claim('k', 'fp', 1000)).toBe('claimed');
    r.mode = 'error'; // Redis full (noeviction) or restarting
    a.complete('k', 'fp', answer(10), 60_000);
    await tick();
    expect(a.pending()).toBe(1);
    r.mode = 'ok';
    for (let i = 0; i < 50 && a.pending() > 0; i++) await tick();
    expect(a.pending()).toBe(0);
    const found = await b.lookup('k');
    expect(found.state).toBe('done');
  });

  it('releases only its own claim', async () => {
    const r = scriptedRedis();
    const a = make(r);
    expect(await a.claim('k', 'fp', 1000)).toBe('claimed');
    const key = records(r)[0];
    expect(key).toBeDefined();
    r.data.set(key!, JSON.stringify({ s: 'f', fp: 'fp', o: 'someone-else' }));
    a.complete('k', 'fp', undefined, 0);
    await tick();
    expect(r.data.has(key!)).toBe(true);
  });
});

describe('orphaned claims', () => {
  it('keeps the key used, as orphaned, once a dead replica’s claim passes its deadline', async () => {
    const r = scriptedRedis();
    let t = 1_000_000;
    const mk = () =>
      redisIdempotencyStore({
        redis: r as unknown as Redis,
        health,
        local: new MemoryIdempotencyStore(100, manualClock()),
        timeoutMs: 5,
        claimMs: 1000,
        now: () => t,
      });
    const dead = mk();
    const b = mk();
    expect(await dead.claim('k', 'fp', 1000, 86_400_000)).toBe('claimed');
    // `dead` never completes: its process was killed after forwarding.
    expect((await b.lookup('k')).state).toBe('in_flight');
    t += 1001;
    const found = await b.lookup('k');
    expect(found).toEqual({ state: 'orphaned', fingerprint: 'fp' });
    expect(await b.claim('k', 'fp', 1000, 86_400_000)).toBe('taken');
  });

  it('retries a release Redis did not take, so a refused create does not leave an orphan', async () => {
    const r = scriptedRedis();
    const a = redisIdempotencyStore({
      redis: r as unknown as Redis,
      health,
      local: new MemoryIdempotencyStore(100, manualClock()),
      timeoutMs: 5,
      claimMs: 1000,
      retryMs: 1,
    });
    expect(await a.claim('k', 'fp', 1000, 86_400_000)).toBe('claimed');
    r.mode = 'error';
    a.complete('k', 'fp', undefined, 0);
    for (let i = 0; i < 20 && a.pending() === 0; i++) await tick();
    expect(a.pending()).toBe(1);
    r.mode = 'ok';
    for (let i = 0; i < 50 && a.pending() > 0; i++) await tick();
    expect(a.pending()).toBe(0);
    expect(records(r)).toEqual([]);
  });
});

describe('generation marker', () => {
  it('reports a Redis that came back without its records, and not one that kept them', async () => {
    const r = scriptedRedis();
    const handlers: (() => void)[] = [];
    (r as unknown as { on: (ev: string, f: () => void) => void }).on = (_ev, f) => void handlers.push(f);
    let resets = 0;
    redisIdempotencyStore({
      redis: r as unknown as Redis,
      health,
      local: new MemoryIdempotencyStore(100, manualClock()),
      timeoutMs: 5,
      claimMs: 1000,
      onReset: () => resets++,
    });
    await tick();
    for (const h of handlers) h(); // reconnected to a Redis that kept its data (AOF)
    await tick();
    expect(resets).toBe(0);
    r.data.clear(); // restarted empty
    for (const h of handlers) h();
    await tick();
    expect(resets).toBe(1);
  });
});
