// Fleet-wide idempotency: the local store still coordinates duplicates inside this replica;
// Redis carries the claim and the stored answer between replicas. Claims are SET NX with an
// expiry, so a replica that dies mid-request cannot block a key for longer than the wait bound.
// Redis errors or slowness fall back to the local store at once, as the rate limiter does:
// dedupe then holds per replica, and no request fails because of Redis.
import { createHash } from 'node:crypto';
import type { IdempotencyStore, Lookup, StoredAnswer } from './idempotency-store.js';
import type { RedisClient } from './redis-connection.js';
import type { RedisHealth } from './redis.js';

interface Wire {
  s: 'f' | 'd';
  fp: string;
  a?: { status: number; headers: Record<string, string | string[]>; body: string };
}

export interface RedisIdempotencyOptions {
  redis: RedisClient;
  health: RedisHealth;
  local: IdempotencyStore;
  timeoutMs: number;
  /** The least time a claim is honoured when the caller asks for less. */
  claimMs: number;
  pollMs?: number;
  prefix?: string;
}

export function redisIdempotencyStore(o: RedisIdempotencyOptions): IdempotencyStore {
  const prefix = o.prefix ?? 'bw:idem:';
  const pollMs = o.pollMs ?? 50;
  // Keys hold client ids and paths: hash them so Redis never stores them in clear.
  const rkey = (key: string) => prefix + createHash('sha256').update(key).digest('base64url');

  function call<T>(op: () => Promise<T>): Promise<T | undefined> {
    if (!o.health.usable()) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let settled = false;
      const t = setTimeout(() => {
        settled = true;
        o.health.failed('timeout');
        resolve(undefined);
      }, o.timeoutMs);
      op().then(
        (v) => {
          if (settled) return;
          clearTimeout(t);
          o.health.succeeded();
          resolve(v);
        },
        () => {
          if (settled) return;
          clearTimeout(t);
          o.health.failed('error');
          resolve(undefined);
        },
      );
    });
  }

  function decode(raw: string | null | undefined): Wire | undefined {
    if (!raw) return undefined;
    try {
      return JSON.parse(raw) as Wire;
    } catch {
      return undefined;
    }
  }

  /** Resolves once another replica's claim is settled (answer stored, released, or expired). */
  function remoteDone(k: string): Promise<void> {
    return new Promise((resolve) => {
      const deadline = Date.now() + o.claimMs;
      const tick = async () => {
        const w = decode(await call(() => o.redis.get(k)));
        if (w?.s !== 'f' || Date.now() > deadline || !o.health.usable()) return resolve();
        setTimeout(tick, pollMs);
      };
      setTimeout(tick, pollMs);
    });
  }

  return {
    async lookup(key): Promise<Lookup> {
      const local = await o.local.lookup(key);
      if (local.state !== 'absent') return local;
      const k = rkey(key);
      const w = decode(await call(() => o.redis.get(k)));
      if (w === undefined) return local;
      if (w.s === 'd' && w.a) return { state: 'done', fingerprint: w.fp, answer: { status: w.a.status, headers: w.a.headers, body: Buffer.from(w.a.body, 'base64') } };
      return { state: 'in_flight', fingerprint: w.fp, done: remoteDone(k) };
    },
    async claim(key, fingerprint, holdMs) {
      if (!(await o.local.claim(key, fingerprint, holdMs))) return false;
      const ok = await call(() => o.redis.set(rkey(key), JSON.stringify({ s: 'f', fp: fingerprint } satisfies Wire), 'PX', Math.max(holdMs, o.claimMs), 'NX'));
      if (ok === null) {
        // Another replica holds it: give our local claim back and let the caller look again.
        o.local.complete(key, fingerprint, undefined, 0);
        return false;
      }
      return true; // 'OK', or Redis unavailable: the local claim stands
    },
    complete(key, fingerprint, answer: StoredAnswer | undefined, ttlMs) {
      o.local.complete(key, fingerprint, answer, ttlMs);
      const k = rkey(key);
      if (answer === undefined) {
        void call(() => o.redis.del(k));
        return;
      }
      // Losing this write would leave other replicas free to forward the duplicate once the
      // claim expires: it is not bound by the short decision timeout, and is tried twice.
      const wire = JSON.stringify({ s: 'd', fp: fingerprint, a: { status: answer.status, headers: answer.headers, body: answer.body.toString('base64') } } satisfies Wire);
      const write = () => o.redis.set(k, wire, 'PX', ttlMs);
      write().catch(() => {
        o.health.failed('error');
        setTimeout(() => void write().catch(() => o.health.failed('error')), 500).unref();
      });
    },
    size: () => o.local.size(),
  };
}
