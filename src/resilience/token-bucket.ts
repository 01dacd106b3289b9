// Token-bucket maths and a bounded in-memory bucket table. Pure: time comes from the caller.
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

/**
 * Buckets by key, bounded: least recently used keys are evicted past `maxKeys`, and keys idle
 * longer than `idleMs` are swept as new keys arrive. An idle bucket has refilled, so dropping
 * it loses nothing; eviction under pressure lets that one client start full (as Traefik does).
 */
export class BucketTable {
  private readonly map = new Map<string, Bucket>();

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
      this.sweep(now);
      b = { tokens: this.limit.burst, last: now };
    } else {
      // Re-insert so Map order stays least-recently-used first.
      this.map.delete(key);
    }
    this.map.set(key, b);
    return take(b, this.limit, now);
  }

  private sweep(now: number): void {
    // Only the head can be idle or over the cap; look at a few entries, O(1) amortised.
    let budget = 8;
    for (const [k, b] of this.map) {
      if (this.map.size < this.maxKeys && (now - b.last < this.idleMs || budget-- <= 0)) break;
      this.map.delete(k);
    }
  }
}
