// The in-process cache store: least recently used out first, bounded both in entries and in
// bytes (a few large assistant configurations must not push the process out of memory).
// An index from target URI to keys lets an unsafe method invalidate every credential's copy.
import type { Freshness } from './freshness.js';
import { BoundedMap } from '../resilience/bounded-map.js';

export interface CacheEntry {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[]>>;
  readonly body: Buffer;
  readonly freshness: Freshness;
  readonly storedAt: number;
  /** Request header values the response's Vary named, to match later requests against. */
  readonly vary: readonly (readonly [string, string])[];
  /** The target URI path (no query), for invalidation. */
  readonly path: string;
  /** The cached route's name, for invalidation by related URIs. */
  readonly route: string;
}

/** Approximate bytes an entry holds: body, headers and a fixed overhead. */
export function entrySize(key: string, e: Pick<CacheEntry, 'body' | 'headers'>): number {
  let n = 200 + key.length * 2 + e.body.length;
  for (const k in e.headers) n += k.length + String(e.headers[k]).length;
  return n;
}

/**
 * Where entries live: the memory store (this file) or the fleet's Redis (redis-store.ts). Only
 * a lookup may be asynchronous, and then only for Redis, within its bounded wait: the memory
 * store answers synchronously, so a hit costs no extra tick. Writes and invalidations take
 * effect locally at once; Redis receives them in the background (command order on the one
 * connection keeps a later lookup behind them).
 */
export interface CacheStore {
  readonly kind: 'memory' | 'redis';
  /** Entries and bytes held in this process's memory. */
  readonly size: number;
  readonly bytes: number;
  get(key: string): CacheEntry | undefined | PromiseLike<CacheEntry | undefined>;
  /** Stores an entry; false when it is larger than the store may hold. */
  set(key: string, entry: CacheEntry): boolean;
  delete(key: string): void;
  invalidatePath(path: string): void;
  invalidateRoute(route: string): void;
}

export interface MemoryStoreOptions {
  maxEntries: number;
  maxBytes: number;
  /** Told the cached route of each entry evicted to stay within the bounds. */
  onEvict?: (route: string) => void;
}

export class MemoryCacheStore implements CacheStore {
  readonly kind = 'memory' as const;
  private readonly entries: BoundedMap<string, { entry: CacheEntry; size: number }>;
  private readonly byPath = new Map<string, Set<string>>();
  private readonly byRoute = new Map<string, Set<string>>();

  constructor(opts: MemoryStoreOptions) {
    this.entries = new BoundedMap({
      maxEntries: opts.maxEntries,
      maxWeight: opts.maxBytes,
      weigh: (h) => h.size,
      onRemove: (key, h, evicted) => {
        unindex(this.byPath, h.entry.path, key);
        unindex(this.byRoute, h.entry.route, key);
        if (evicted) opts.onEvict?.(h.entry.route);
      },
    });
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.entries.weight;
  }

  get(key: string): CacheEntry | undefined {
    // A use makes it the most recently used: the table's order is the LRU order.
    return this.entries.touch(key)?.entry;
  }

  /** Stores an entry; false when it alone is larger than the store may hold. */
  set(key: string, entry: CacheEntry): boolean {
    if (!this.entries.set(key, { entry, size: entrySize(key, entry) })) return false;
    index(this.byPath, entry.path, key);
    index(this.byRoute, entry.route, key);
    return true;
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** Drops everything (the Redis store's fallback, once Redis is back and may hold newer copies). */
  clear(): void {
    this.entries.clear();
    this.byPath.clear();
    this.byRoute.clear();
  }

  /** Drops every entry for this path, whatever its query or credential (RFC 9111 §4.4). */
  invalidatePath(path: string): number {
    return this.dropAll(this.byPath.get(path));
  }

  /** Drops every entry of this cached route, whatever its URI or credential (related URIs). */
  invalidateRoute(route: string): number {
    return this.dropAll(this.byRoute.get(route));
  }

  private dropAll(keys: Set<string> | undefined): number {
    if (keys === undefined) return 0;
    const n = keys.size;
    for (const k of [...keys]) this.delete(k);
    return n;
  }
}

function index(map: Map<string, Set<string>>, name: string, key: string): void {
  let keys = map.get(name);
  if (keys === undefined) map.set(name, (keys = new Set()));
  keys.add(key);
}

function unindex(map: Map<string, Set<string>>, name: string, key: string): void {
  const keys = map.get(name);
  keys?.delete(key);
  if (keys?.size === 0) map.delete(name);
}
