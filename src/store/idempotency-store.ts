// Stored answers for idempotency keys. An entry is either in flight (the original is being
// forwarded; duplicates wait on it) or done (a stored answer replayed until it expires).
// Bounded in count (oldest evicted) and in size (large answers are not stored).
import type { Clock } from '../resilience/clock.js';
import { MapCursor } from '../resilience/map-cursor.js';

export interface StoredAnswer {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
}

export type Lookup =
  | { state: 'absent' }
  | { state: 'in_flight'; fingerprint: string; done: Promise<void> }
  | { state: 'done'; fingerprint: string; answer: StoredAnswer };

export interface IdempotencyStore {
  lookup(key: string): Lookup | Promise<Lookup>;
  /**
   * Claims the key for an original request; false when someone else holds it. `holdMs` bounds
   * how long a shared claim outlives a replica that died mid-request.
   */
  claim(key: string, fingerprint: string, holdMs: number): boolean | Promise<boolean>;
  /** Ends an in-flight claim: stores the answer, or (undefined) releases the key for a new attempt. */
  complete(key: string, fingerprint: string, answer: StoredAnswer | undefined, ttlMs: number): void;
  size(): number;
}

interface Flight {
  fingerprint: string;
  done: Promise<void>;
  wake: () => void;
}

export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly flights = new Map<string, Flight>();
  private readonly answers = new Map<string, { fingerprint: string; answer: StoredAnswer; expires: number }>();
  // Answers share one TTL, so insertion order is expiry order: evict from a cursor at the oldest.
  private readonly cursor = new MapCursor(this.answers);

  constructor(
    private readonly maxEntries: number,
    private readonly clock: Clock,
  ) {}

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

  claim(key: string, fingerprint: string): boolean {
    if (this.flights.has(key)) return false;
    let wake!: () => void;
    const done = new Promise<void>((r) => (wake = r));
    this.flights.set(key, { fingerprint, done, wake });
    return true;
  }

  complete(key: string, _fingerprint: string, answer: StoredAnswer | undefined, ttlMs: number): void {
    const f = this.flights.get(key);
    if (f === undefined) return;
    this.flights.delete(key);
    if (answer !== undefined) {
      this.answers.delete(key);
      this.answers.set(key, { fingerprint: f.fingerprint, answer, expires: this.clock() + ttlMs });
      this.evict();
    }
    f.wake();
  }

  size(): number {
    return this.answers.size;
  }

  private evict(): void {
    const now = this.clock();
    // Bounded work per call: drop expired answers at the cursor, then the oldest while over the cap.
    for (let i = 0; i < 16; i++) {
      const e = this.cursor.next();
      if (e === undefined) return;
      if (e[1].expires <= now || this.answers.size > this.maxEntries) this.answers.delete(e[0]);
      else if (this.answers.size <= this.maxEntries) return;
    }
  }
}
