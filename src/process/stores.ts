// The process's stores, opened once at start: memory alone, or Redis in front of memory for a
// fleet. A reload never reopens them (the `store` section takes effect after a restart).
import type { Metrics } from '../metrics.js';
import type { Log } from '../log.js';
import type { Policy } from '../policy/schema.js';
import type { StackDeps } from '../pipeline/stack.js';
import type { Clock } from '../resilience/clock.js';
import { memoryStore, type LimiterStore } from '../store/store.js';
import { MemoryIdempotencyStore, type IdempotencyStore } from '../store/idempotency-store.js';
import type { StoreEvents } from '../store/redis.js';

export interface Stores {
  readonly limiter: LimiterStore;
  /** The per-replica buckets: the limiter itself with the memory store, its fallback with Redis. */
  readonly memory: LimiterStore;
  readonly idempotency: IdempotencyStore;
  readonly fleetSemaphore: StackDeps['fleetSemaphore'];
  readonly cacheStore: StackDeps['cacheStore'];
  /** Whether decisions are being made locally because the shared store is unusable. */
  fallingBack(): boolean;
  close(): Promise<void>;
}

export async function openStores(policy: Policy, metrics: Metrics, log: Log, clock: Clock): Promise<Stores> {
  const memory = memoryStore({ maxKeys: policy.clientId.maxClients, idleMs: policy.clientId.idleTimeout, clock });
  const localIdempotency = new MemoryIdempotencyStore(policy.store.idempotencyEntries, clock, policy.store.idempotencyBytes);
  if (policy.store.type !== 'redis') {
    return {
      limiter: memory,
      memory,
      idempotency: localIdempotency,
      fleetSemaphore: undefined,
      cacheStore: undefined,
      fallingBack: () => false,
      close: () => memory.close(),
    };
  }
  // Loaded only when asked for: ioredis and its command table are heap and code that a
  // single-replica sidecar never uses.
  const [{ redisStore, redisConnection }, { redisIdempotencyStore }, { fleetSemaphore }, { RedisCacheStore, VALUE_OVERHEAD_BYTES }] = await Promise.all([
    import('../store/redis.js'),
    import('../store/redis-idempotency.js'),
    import('../store/redis-semaphore.js'),
    import('../cache/redis-store.js'),
  ]);
  const s = policy.store;
  const shared = redisStore({
    connection: redisConnection(s),
    replicas: s.replicas,
    timeoutMs: s.timeout,
    retryMs: s.retryAfter,
    local: memory,
    events: redisStoreEvents(metrics, log),
  });
  // One connection and one health for all: idempotency claims, fleet slots and cache entries
  // ride the rate limiter's client.
  const idempotency = redisIdempotencyStore({
    redis: shared.redis,
    health: shared.health,
    local: localIdempotency,
    // Its own wait, not the limiter's: a keyed create whose record is late must not be sent.
    timeoutMs: s.idempotencyTimeout,
    claimMs: 60_000,
    retryMs: s.retryAfter,
    onReset: () => {
      metrics.idempotencyStoreResets.inc();
      log.error(
        { store: 'redis' },
        'idempotency store came back empty (Redis restarted without persistence?): keys used before the restart may be forwarded again',
      );
    },
  });
  return {
    limiter: shared,
    memory,
    idempotency,
    fleetSemaphore: (cap, leaseMs, maxQueue, prefix) =>
      fleetSemaphore({ redis: shared.redis, cap, leaseMs, maxQueue, replicas: s.replicas, prefix, usable: shared.health.usable }),
    // A cache lookup waits as briefly as a limiter decision: a miss costs only a forward.
    cacheStore: (upstream, local, maxBodyBytes) =>
      new RedisCacheStore({
        redis: shared.redis,
        health: shared.health,
        local,
        clock,
        timeoutMs: s.timeout,
        maxValueBytes: maxBodyBytes + VALUE_OVERHEAD_BYTES,
        prefix: `bw:cache:${upstream}:`,
      }),
    fallingBack: () => !shared.health.usable(),
    close: () => shared.close(),
  };
}

/** The Redis store's reports as metrics and log lines: the store itself imports no telemetry. */
function redisStoreEvents(metrics: Metrics, log: Log): StoreEvents {
  const fallbackGauge = metrics.storeFallback.labels('redis');
  const fallbacks = metrics.storeFallbacks.labels('redis');
  fallbackGauge.set(0);
  return {
    error: (reason) => metrics.storeErrors.labels('redis', reason).inc(),
    fallback(active, reason) {
      fallbackGauge.set(active ? 1 : 0);
      if (active) {
        fallbacks.inc();
        log.warn({ store: 'redis', reason }, 'rate-limit store unavailable: deciding on local buckets');
      } else log.info({ store: 'redis' }, 'rate-limit store back: shared buckets resumed');
    },
  };
}
