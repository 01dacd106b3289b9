// Fleet-wide idempotency: the local store still coordinates duplicates inside this replica;
// Redis carries the claim and the stored answer between replicas. Claims are SET NX with an
// expiry, so a replica that dies mid-request cannot block a key for longer than the wait bound.
//
// A Redis that is slow, erroring or disconnected cannot say whether a key was used elsewhere.
// Unlike the rate limiter (which falls back to local buckets), that is never read as "absent":
// lookups and claims answer `unavailable` and the caller sends nothing (503 + Retry-After, which
// both SDKs retry). The wait is its own setting, longer than the limiter's decision timeout: a
// Redis stall of a few hundred milliseconds should delay a create, not refuse it.
//
// An answer that could not be written is kept and re-published until Redis takes it (a bounded
// queue), because a lost record lets another replica forward the duplicate once the claim expires.
import { createHash, randomUUID } from 'node:crypto';
import type { RedisClient } from './redis-connection.js';
import type { Claim, IdempotencyStore, Lookup, StoredAnswer } from './idempotency-store.js';
import type { RedisHealth } from './redis.js';
import { withDeadline } from '../resilience/deadline.js';

interface Wire {
  s: 'f' | 'd';
  fp: string;
  /** Claim owner, so that a release never deletes another replica's claim. */
  o?: string;
  /** When the claim's original is over at the latest (epoch ms); past it, the claim is orphaned. */
  u?: number;
  a?: { status: number; headers: Record<string, string | string[]>; body: string };
}

export interface RedisIdempotencyOptions {
  redis: RedisClient;
  health: RedisHealth;
  local: IdempotencyStore;
  /** The longest wait for one Redis answer before the key's state is "unknown". */
  timeoutMs: number;
  /** The least time a claim is honoured when the caller asks for less. */
  claimMs: number;
  pollMs?: number;
  prefix?: string;
  /** Answers waiting to be re-published (oldest dropped beyond this). */
  maxPending?: number;
  /** Interval between re-publishing attempts. */
  retryMs?: number;
  /** Reports a write that failed (queued) and one given up on (queue full). */
  onWrite?: (outcome: 'queued' | 'republished' | 'dropped') => void;
  /** Wall clock shared with the other replicas (claim deadlines travel between them). */
  now?: () => number;
  /** Redis came back without the generation marker this replica saw: its records are gone. */
  onReset?: () => void;
}

const UNKNOWN = Symbol('unknown');
// Deletes the key only while it still holds the caller's claim.
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

export function redisIdempotencyStore(o: RedisIdempotencyOptions): IdempotencyStore & { pending(): number } {
  const prefix = o.prefix ?? 'bw:idem:';
  const pollMs = o.pollMs ?? 50;
  const maxPending = o.maxPending ?? 10_000;
  const retryMs = o.retryMs ?? 1000;
  const now = o.now ?? Date.now;
  // Keys hold client ids and paths: hash them so Redis never stores them in clear.
  const rkey = (key: string) => prefix + createHash('sha256').update(key).digest('base64url');
  /** Claim values by key, for a release that only removes our own claim. */
  const owned = new Map<string, string>();
  /** Answers Redis has not taken yet, by Redis key: value and expiry (epoch ms). */
  const pending = new Map<string, { wire: string; expires: number; release?: boolean }>();
  let flushing: NodeJS.Timeout | undefined;

  function call<T>(op: () => Promise<T>): Promise<T | typeof UNKNOWN> {
    // Disconnected: the offline queue is off, so a command would only fail; say so at once.
    if (o.redis.status !== 'ready') return Promise.resolve(UNKNOWN);
    return withDeadline(
      op(),
      o.timeoutMs,
      () => UNKNOWN,
      (how) => (how === 'ok' ? o.health.succeeded() : o.health.failed(how)),
    );
  }

  function decode(raw: string | null): Wire | undefined {
    if (!raw) return undefined;
    try {
      return JSON.parse(raw) as Wire;
    } catch {
      return undefined;
    }
  }

  /** Resolves once another replica's claim is settled (answer stored, released, or expired). */
  function remoteDone(k: string, until: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      const deadline = until ?? now() + o.claimMs;
      const tick = async () => {
        const raw = await call(() => o.redis.get(k));
        // Unknown: let the caller look again, which answers `unavailable` while Redis is.
        if (raw === UNKNOWN || decode(raw)?.s !== 'f' || now() > deadline) return resolve();
        setTimeout(tick, pollMs);
      };
      setTimeout(tick, pollMs);
    });
  }

  /** `release`: `wire` is our claim, to be removed (compare-and-delete) rather than written. */
  function enqueue(k: string, wire: string, ttlMs: number, release = false): void {
    pending.delete(k);
    pending.set(k, { wire, expires: now() + ttlMs, release });
    o.onWrite?.('queued');
    while (pending.size > maxPending) {
      pending.delete(pending.keys().next().value!);
      o.onWrite?.('dropped');
    }
    flushing ??= setTimeout(flush, retryMs).unref();
  }

  async function flush(): Promise<void> {
    flushing = undefined;
    for (const [k, p] of [...pending]) {
      const left = p.expires - now();
      if (left <= 0) {
        pending.delete(k);
        continue;
      }
      if (o.redis.status !== 'ready') break;
      try {
        if (p.release) await o.redis.eval(RELEASE, 1, k, p.wire);
        else await o.redis.set(k, p.wire, 'PX', left);
        // A newer write for the same key may have been queued meanwhile.
        if (pending.get(k) === p) pending.delete(k);
        o.onWrite?.('republished');
      } catch {
        break;
      }
    }
    if (pending.size > 0) flushing ??= setTimeout(flush, retryMs).unref();
  }

  // A generation marker, written once per Redis data set: a Redis that comes back with another
  // (or none) restarted empty, and every record the fleet stored is gone. The operator must see
  // it: keys used before the restart can be forwarded again.
  const genKey = prefix + 'generation';
  let generation: string | undefined;
  async function checkGeneration(): Promise<void> {
    try {
      const mine = randomUUID();
      const current = (await o.redis.set(genKey, mine, 'NX')) === 'OK' ? mine : await o.redis.get(genKey);
      if (generation !== undefined && current !== generation) o.onReset?.();
      generation = current ?? undefined;
    } catch {
      // Checked again at the next reconnect.
    }
  }
  o.redis.on('ready', () => void checkGeneration());
  if (o.redis.status === 'ready') void checkGeneration();

  return {
    async lookup(key): Promise<Lookup> {
      const local = await o.local.lookup(key);
      if (local.state !== 'absent') return local;
      const k = rkey(key);
      const raw = await call(() => o.redis.get(k));
      if (raw === UNKNOWN) return { state: 'unavailable' };
      const w = decode(raw);
      if (w === undefined) return local;
      if (w.s === 'd' && w.a)
        return { state: 'done', fingerprint: w.fp, answer: { status: w.a.status, headers: w.a.headers, body: Buffer.from(w.a.body, 'base64') } };
      // Its replica died after it may have forwarded: the key stays used, the outcome unknown.
      if (w.u !== undefined && w.u <= now()) return { state: 'orphaned', fingerprint: w.fp };
      return { state: 'in_flight', fingerprint: w.fp, done: remoteDone(k, w.u) };
    },
    async claim(key, fingerprint, holdMs, keepMs): Promise<Claim> {
      const mine = await o.local.claim(key, fingerprint, holdMs);
      if (mine !== 'claimed') return mine;
      const k = rkey(key);
      const hold = Math.max(holdMs, o.claimMs);
      const value = JSON.stringify({ s: 'f', fp: fingerprint, o: randomUUID(), u: now() + hold } satisfies Wire);
      // Kept past its deadline (as an orphan) for as long as an answer would be: a replica killed
      // after forwarding must not leave the key free for a second create.
      const ok = await call(() => o.redis.set(k, value, 'PX', Math.max(hold, keepMs ?? 0), 'NX'));
      if (ok === 'OK') {
        owned.set(key, value);
        return 'claimed';
      }
      o.local.complete(key, fingerprint, undefined, 0);
      if (ok === null) return 'taken'; // another replica holds it: the caller looks again
      // The SET may still land after our timeout: take it back if it did, so the key is not
      // blocked until the claim expires.
      void call(() => o.redis.eval(RELEASE, 1, k, value));
      return 'unavailable';
    },
    complete(key, fingerprint, answer: StoredAnswer | undefined, ttlMs) {
      o.local.complete(key, fingerprint, answer, ttlMs);
      const k = rkey(key);
      const value = owned.get(key);
      owned.delete(key);
      if (answer === undefined) {
        // A release that does not land would leave the claim to be orphaned: retry it as well.
        if (value !== undefined) void call(() => o.redis.eval(RELEASE, 1, k, value)).then((r) => r === UNKNOWN && enqueue(k, value, o.claimMs, true));
        return;
      }
      // Not bound by the lookup timeout: a slow write that lands is as good as a fast one.
      const wire = JSON.stringify({
        s: 'd',
        fp: fingerprint,
        a: { status: answer.status, headers: answer.headers, body: answer.body.toString('base64') },
      } satisfies Wire);
      if (o.redis.status !== 'ready') return enqueue(k, wire, ttlMs);
      o.redis.set(k, wire, 'PX', ttlMs).then(
        () => o.health.succeeded(),
        () => {
          o.health.failed('error');
          enqueue(k, wire, ttlMs);
        },
      );
    },
    size: () => o.local.size(),
    pending: () => pending.size,
  };
}
