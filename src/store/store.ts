// Where token buckets live. The memory store is the default; the Redis store (redis.ts) shares
// buckets across replicas and falls back to a memory store of its own when Redis is away.
import { BucketTable, type BucketLimit, type Decision } from '../resilience/token-bucket.js';
import type { Clock } from '../resilience/clock.js';

export interface Buckets {
  take(key: string): Decision | Promise<Decision>;
  /** Returns the token `take` granted, when another limit refused the same request. */
  refund(key: string, granted: Decision): void;
  /** Keys held in local memory. */
  size(): number;
}

export interface LimiterStore {
  readonly kind: 'memory' | 'redis';
  /** The bucket table for one limit; the same `id` and limit return the same table (state kept across reloads). */
  buckets(id: string, limit: BucketLimit): Buckets;
  /** Drops tables not in `ids` (limits removed by a reload). */
  retain(ids: ReadonlySet<string>): void;
  close(): Promise<void>;
}

export interface MemoryOptions {
  maxKeys: number;
  idleMs: number;
  clock: Clock;
}

export function limitId(scope: string, limit: BucketLimit): string {
  return `${scope}|${limit.ratePerMs}|${limit.burst}|${limit.maxDelayMs}`;
}

export function memoryStore(opts: MemoryOptions): LimiterStore {
  const tables = new Map<string, BucketTable>();
  return {
    kind: 'memory',
    buckets(id, limit) {
      let t = tables.get(id);
      if (!t) {
        t = new BucketTable(limit, opts.maxKeys, opts.idleMs);
        tables.set(id, t);
      }
      const table = t;
      const clock = opts.clock;
      return { take: (key) => table.take(key, clock()), refund: (key) => table.refund(key), size: () => table.size };
    },
    retain(ids) {
      for (const id of tables.keys()) if (!ids.has(id)) tables.delete(id);
    },
    close: async () => {},
  };
}
