// Token-bucket maths and a bounded in-memory bucket table. Pure: time comes from the caller.
import { MapCursor } from './map-cursor.js';
// A bucket may go negative down to `-maxDelay × rate`: that is a reservation for a request
// that waits its turn (shaping, nginx `limit_req … delay`) instead of being refused.

export interface BucketLimit {
  /** Tokens per millisecond. */
  readonly ratePerMs: number;
  readonly burst: number;
  /** Longest a request may wait for its token, in ms (0: reject at once). */
  readonly maxDelayMs: number;
}

export interface Bucket {
  tokens: number;
  last: number;
}

export interface Decision {
  readonly allowed: boolean;
  /** Wait before forwarding (shaping), ms; 0 when forwarded at once. */
  readonly delayMs: number;
  /** Whole tokens left after this decision. */
  readonly remaining: number;
  /** Rejected: ms until a token is free. Allowed: ms until the bucket is full again. */
  readonly resetMs: number;
  /** Made on local state because the shared store was unavailable. */
  readonly local?: boolean;
}

export function refill(b: Bucket, limit: BucketLimit, now: number): void {
  if (now > b.last) {
    b.tokens = Math.min(limit.burst, b.tokens + (now - b.last) * limit.ratePerMs);
    b.last = now;
  }
}

/** Takes one token from `b` (mutating it) when the limit allows. */
export function take(b: Bucket, limit: BucketLimit, now: number): Decision {
  refill(b, limit, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return { allowed: true, delayMs: 0, remaining: Math.floor(b.tokens), resetMs: (limit.burst - b.tokens) / limit.ratePerMs };
  }
  const waitMs = (1 - b.tokens) / limit.ratePerMs;
  if (waitMs <= limit.maxDelayMs) {
    b.tokens -= 1;
    return { allowed: true, delayMs: waitMs, remaining: 0, resetMs: (limit.burst - b.tokens) / limit.ratePerMs };
  }
  return { allowed: false, delayMs: 0, remaining: 0, resetMs: waitMs };
}

/** Gives back a token taken by `take` (another limit refused the same request). */
export function refund(b: Bucket, limit: BucketLimit): void {
  b.tokens = Math.min(limit.burst, b.tokens + 1);
}

/**
 * Buckets by key, bounded. Past `maxKeys`, a new key evicts one existing bucket: the least
 * recently used of a small sample taken at a cursor (Redis's sampled LRU), preferring one idle
 * for `idleMs`. Each new key also checks a couple of entries for idleness, so idle buckets are
 * swept as traffic flows. An idle bucket has refilled, so dropping it loses nothing; eviction
 * under pressure lets that one client start full again (as Traefik's capped table does).
 * Lookups do not reorder the map: a hit costs one `get`.
 */
export class BucketTable {
  private readonly map = new Map<string, Bucket>();
  private readonly cursor = new MapCursor(this.map);

  constructor(
    private readonly limit: BucketLimit,
    private readonly maxKeys: number,
    private readonly idleMs: number,
  ) {}

  get size(): number {
    return this.map.size;
  }

  take(key: string, now: number): Decision {
    let b = this.map.get(key);
    if (b === undefined) {
      this.makeRoom(now);
      b = { tokens: this.limit.burst, last: now };
      this.map.set(key, b);
    }
    return take(b, this.limit, now);
  }

  refund(key: string): void {
    const b = this.map.get(key);
    if (b !== undefined) refund(b, this.limit);
  }

  private makeRoom(now: number): void {
    // Incremental expiry: look at two entries per new key and drop them if idle.
    for (let i = 0; i < 2 && this.map.size > 0; i++) {
      const e = this.cursor.next();
      if (e && now - e[1].last >= this.idleMs) this.map.delete(e[0]);
    }
    if (this.map.size < this.maxKeys) return;
    let victim: [string, Bucket] | undefined;
    for (let i = 0; i < 8; i++) {
      const e = this.cursor.next();
      if (e === undefined) break;
      if (victim === undefined || e[1].last < victim[1].last) victim = e;
      if (now - e[1].last >= this.idleMs) break;
    }
    if (victim) this.map.delete(victim[0]);
  }
}
