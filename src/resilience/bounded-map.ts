// The one bounded table behind the response cache, the idempotency answers and the 429 holds:
// a Map in insertion (or, with `touch`, use) order, bounded in entries and optionally in a
// weight such as bytes, evicting from the oldest end. Expired entries at that end go as the
// table is written, a few per write, so no call walks the whole table.
//
// Eviction reads the oldest end through a cursor rather than a fresh `keys().next()`: V8 leaves
// deleted entries as holes at the front of a Map until it is rehashed, and every new iterator
// walks them again (quadratic under churn); the cursor passes each hole once.
//
// The rate limiter's buckets are the one table not built on it: a bucket lookup is on every
// request, so it must not reorder the map, and its eviction samples instead (token-bucket.ts).
import { MapCursor } from './map-cursor.js';

export interface BoundedMapOptions<K, V> {
  maxEntries: number;
  /** The weight bound (e.g. bytes), with `weigh`; unbounded when absent. */
  maxWeight?: number;
  /** A value's weight; it must not change while the value is in the table. */
  weigh?: (value: V) => number;
  /** Whether a value has expired at `now`: such values are dropped from the oldest end as the table is written. */
  expired?: (value: V, now: number) => boolean;
  /** Told of every value that leaves the table, by eviction, expiry, replacement or delete. */
  onRemove?: (key: K, value: V, evicted: boolean) => void;
}

/** Expired entries looked at per write while within bounds. */
const SWEEP = 16;

export class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();
  private readonly cursor = new MapCursor(this.map);
  /** The oldest entry, looked at last time and kept: the next sweep starts from it. */
  private head: [K, V] | undefined;
  private total = 0;

  constructor(private readonly o: BoundedMapOptions<K, V>) {}

  get size(): number {
    return this.map.size;
  }

  /** The summed weight of the values held. */
  get weight(): number {
    return this.total;
  }

  get(key: K): V | undefined {
    return this.map.get(key);
  }

  /** `get`, and the entry becomes the most recently used (LRU order). */
  touch(key: K): V | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, v);
    if (this.head !== undefined && this.head[0] === key) this.head = undefined;
    return v;
  }

  /**
   * Stores `value` as the newest entry (replacing any under `key`), then evicts from the oldest
   * end while over a bound, and drops expired entries there. False, and nothing stored, when the
   * value alone outweighs the whole table.
   */
  set(key: K, value: V, now = 0): boolean {
    const w = this.o.weigh?.(value) ?? 0;
    if (w > (this.o.maxWeight ?? Number.POSITIVE_INFINITY)) return false;
    this.delete(key);
    this.map.set(key, value);
    this.total += w;
    this.evict(now);
    return true;
  }

  delete(key: K): boolean {
    const v = this.map.get(key);
    if (v === undefined) return false;
    this.remove(key, v, false);
    return true;
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  /** Drops everything; `onRemove` is not told. */
  clear(): void {
    this.map.clear();
    this.total = 0;
    this.head = undefined;
  }

  private remove(key: K, value: V, evicted: boolean): void {
    this.map.delete(key);
    this.total -= this.o.weigh?.(value) ?? 0;
    if (this.head !== undefined && this.head[0] === key) this.head = undefined;
    this.o.onRemove?.(key, value, evicted);
  }

  private evict(now: number): void {
    const maxWeight = this.o.maxWeight ?? Number.POSITIVE_INFINITY;
    const expired = this.o.expired;
    // Over a bound, each oldest entry goes once, so the work is paid for by the writes that grew
    // the table; within bounds, at most SWEEP expired entries go per write.
    for (let i = 0; i < this.map.size + SWEEP; i++) {
      const over = this.map.size > this.o.maxEntries || this.total > maxWeight;
      if (!over && (expired === undefined || i >= SWEEP)) return;
      const e = this.oldest();
      if (e === undefined) return;
      if (over || expired!(e[1], now)) this.remove(e[0], e[1], true);
      else {
        // Live and within bounds: it stays the oldest, and the next write starts from it.
        this.head = e;
        return;
      }
    }
  }

  private oldest(): [K, V] | undefined {
    const h = this.head;
    this.head = undefined;
    if (h !== undefined && this.map.get(h[0]) === h[1]) return h;
    return this.cursor.next();
  }
}
