// Stored answers for idempotency keys. An entry is either in flight (the original is being
// forwarded; duplicates wait on it) or done (a stored answer replayed until it expires).
// Bounded in count and in bytes (oldest evicted first; expired entries go before live ones).
import type { Clock } from '../resilience/clock.js';
import { BoundedMap } from '../resilience/bounded-map.js';

export interface StoredAnswer {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/**
 * `unavailable`: the shared store could not say (timeout, error, disconnected). The key may have
 * been used on another replica, so the caller must send nothing rather than guess "absent".
 */
export type Lookup =
  | { state: 'absent' }
  | { state: 'unavailable' }
  | { state: 'in_flight'; fingerprint: string; done: Promise<void> }
  /** A shared claim outlived its original (its replica died after it may have forwarded). */
  | { state: 'orphaned'; fingerprint: string }
  | { state: 'done'; fingerprint: string; answer: StoredAnswer };

/** `taken`: someone else holds the key (look again); `unavailable`: as in Lookup. */
export type Claim = 'claimed' | 'taken' | 'unavailable';

/** A claim made before a streamed body has been hashed: duplicates wait, then compare. */
export const PENDING_FINGERPRINT = 'pending';

export interface IdempotencyStore {
  lookup(key: string): Lookup | Promise<Lookup>;
  /**
   * Claims the key for an original request. `holdMs` bounds how long a shared claim outlives a
   * replica that died mid-request; `keepMs` how long such an orphaned claim is remembered (so
   * the key is not free again while a retry could still come).
   */
  claim(key: string, fingerprint: string, holdMs: number, keepMs?: number): Claim | Promise<Claim>;
  /**
   * Ends an in-flight claim: stores the answer under `fingerprint` (final even when the claim was
   * made with PENDING_FINGERPRINT), or (undefined) releases the key for a new attempt.
   */
  complete(key: string, fingerprint: string, answer: StoredAnswer | undefined, ttlMs: number): void;
  size(): number;
}

interface Flight {
  fingerprint: string;
  done: Promise<void>;
  wake: () => void;
}

interface Entry {
  fingerprint: string;
  answer: StoredAnswer;
  expires: number;
  bytes: number;
}

/** What an entry costs in memory, near enough: body, headers, key and a fixed overhead. */
export function answerBytes(key: string, a: StoredAnswer): number {
  let h = 0;
  for (const name in a.headers) {
    const v = a.headers[name]!;
    h += name.length + (typeof v === 'string' ? v.length : v.reduce((n, s) => n + s.length + 8, 0)) + 16;
  }
  return a.body.length + h + key.length * 2 + 256;
}

export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly flights = new Map<string, Flight>();
  // Answers share one TTL, so insertion order is expiry order: the oldest end goes first.
  private readonly answers: BoundedMap<string, Entry>;

  constructor(
    maxEntries: number,
    private readonly clock: Clock,
    maxBytes = Number.POSITIVE_INFINITY,
  ) {
    this.answers = new BoundedMap({ maxEntries, maxWeight: maxBytes, weigh: (e) => e.bytes, expired: (e, now) => e.expires <= now });
  }

  lookup(key: string): Lookup {
    const f = this.flights.get(key);
    if (f) return { state: 'in_flight', fingerprint: f.fingerprint, done: f.done };
    const a = this.answers.get(key);
    if (a === undefined) return { state: 'absent' };
    if (a.expires <= this.clock()) {
      this.answers.delete(key);
      return { state: 'absent' };
    }
    return { state: 'done', fingerprint: a.fingerprint, answer: a.answer };
  }

  claim(key: string, fingerprint: string): Claim {
    if (this.flights.has(key)) return 'taken';
    let wake!: () => void;
    const done = new Promise<void>((r) => (wake = r));
    this.flights.set(key, { fingerprint, done, wake });
    return 'claimed';
  }

  complete(key: string, fingerprint: string, answer: StoredAnswer | undefined, ttlMs: number): void {
    const f = this.flights.get(key);
    if (f === undefined) return;
    this.flights.delete(key);
    if (answer !== undefined) this.put(key, fingerprint, answer, ttlMs);
    f.wake();
  }

  /** Stores an answer outside a claim (one another replica published). */
  put(key: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): void {
    const now = this.clock();
    // An answer over the whole byte budget is not kept (the old one under its key goes too).
    if (!this.answers.set(key, { fingerprint, answer, expires: now + ttlMs, bytes: answerBytes(key, answer) }, now)) this.answers.delete(key);
  }

  size(): number {
    return this.answers.size;
  }

  /** Bytes held by stored answers (the budget's measure). */
  byteSize(): number {
    return this.answers.weight;
  }
}
