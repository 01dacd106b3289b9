// Fleet-wide token buckets in Redis: one atomic EVALSHA per decision (ioredis registers the
// script once and falls back to EVAL after a SCRIPT FLUSH or restart). The script runs the same
// maths as the local bucket, on Redis's clock, so every replica agrees. When Redis is down or
// slower than `timeoutMs`, decisions fall back to the local store at once; after `retryMs` the
// next decision tries Redis again. No request ever fails because of Redis.
//
// Each script touches one key, so it runs unchanged on a Cluster (one key is always one slot);
// ioredis's defineCommand sends EVALSHA and re-sends EVAL on NOSCRIPT, which is what a failed-over
// master or a restarted node answers at first.
//
// While falling back, a replica enforces only its share of each limit (limit / replicas), so a
// fleet that loses Redis does not multiply every client's quota by its size.
import type { Policy } from '../policy/schema.js';
import type { BucketLimit, Decision } from '../resilience/token-bucket.js';
import { createRedisClient, type RedisClient, type RedisConnectionConfig } from './redis-connection.js';
import type { Buckets, LimiterStore } from './store.js';
import { withDeadline } from '../resilience/deadline.js';

export const BUCKET_SCRIPT = `
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxDelay = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', key, 'tokens', 'last')
local tokens = tonumber(b[1])
local last = tonumber(b[2])
if tokens == nil then tokens = burst; last = now end
if now > last then tokens = math.min(burst, tokens + (now - last) * rate); last = now end
local allowed = 0
local delay = 0
local reset
if tokens >= 1 then
  tokens = tokens - 1; allowed = 1; reset = (burst - tokens) / rate
else
  local wait = (1 - tokens) / rate
  if wait <= maxDelay then
    tokens = tokens - 1; allowed = 1; delay = wait; reset = (burst - tokens) / rate
  else
    reset = wait
  end
end
if allowed == 1 then
  redis.call('HSET', key, 'tokens', tostring(tokens), 'last', tostring(last))
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate) + 1000)
end
return {allowed, tostring(delay), tostring(math.max(0, math.floor(tokens))), tostring(reset)}
`;

// Gives a token back (capped at the burst) without touching the refill clock.
const REFUND = `
local t = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if t == nil then return 0 end
redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), t + 1)))
return 1
`;

export interface RedisStoreOptions {
  connection: RedisConnectionConfig;
  /** Replicas sharing the limits: the fallback grants each 1/replicas of a limit. */
  replicas?: number;
  timeoutMs: number;
  retryMs: number;
  local: LimiterStore;
  /** How the store reports; the caller turns these into metrics and log lines (stores know no telemetry). */
  events: StoreEvents;
  prefix?: string;
}

export interface StoreEvents {
  /** One failed or timed-out Redis decision. */
  error(reason: string): void;
  /** Deciding on local buckets started (with the reason) or ended. */
  fallback(active: boolean, reason?: string): void;
}

type WithBucket = RedisClient & {
  bwBucket(key: string, rate: number, burst: number, maxDelay: number): Promise<[number, string, string, string]>;
  bwRefund(key: string, burst: number): Promise<number>;
};

export interface RedisHealth {
  /** False while Redis is disconnected or inside the back-off after a failure. */
  usable(): boolean;
  failed(reason: string): void;
  succeeded(): void;
}

/** The connection settings from the policy's `store` section. */
export function redisConnection(s: Policy['store']): RedisConnectionConfig {
  return { type: s.redisType, url: s.redisUrl, username: s.redisUsername, password: s.redisPassword, tls: s.redisTls, caFile: s.redisCaFile };
}

/** One replica's share of a limit: rate and burst divided, at least one token. */
export function shareOf(limit: BucketLimit, replicas: number): BucketLimit {
  if (replicas <= 1) return limit;
  return { ratePerMs: limit.ratePerMs / replicas, burst: Math.max(1, Math.floor(limit.burst / replicas)), maxDelayMs: limit.maxDelayMs };
}

export function redisStore(opts: RedisStoreOptions): LimiterStore & { redis: RedisClient; health: RedisHealth } {
  const redis = createRedisClient(opts.connection) as WithBucket;
  const replicas = Math.max(1, Math.floor(opts.replicas ?? 1));
  // The fallback's tables live in the shared memory store under their own ids, apart from the
  // full-size tables of limits that are always local.
  const shareId = (id: string) => (replicas > 1 ? `${id}|share/${replicas}` : id);
  redis.defineCommand('bwBucket', { numberOfKeys: 1, lua: BUCKET_SCRIPT });
  redis.defineCommand('bwRefund', { numberOfKeys: 1, lua: REFUND });
  const prefix = opts.prefix ?? 'bw:rl:';
  let downUntil = 0;
  let fallingBack = false;

  const markDown = (reason: string) => {
    opts.events.error(reason);
    downUntil = Date.now() + opts.retryMs;
    if (!fallingBack) {
      fallingBack = true;
      opts.events.fallback(true, reason);
    }
  };
  const markUp = () => {
    if (fallingBack) {
      fallingBack = false;
      opts.events.fallback(false);
    }
  };
  // ioredis emits 'error' on every failed reconnect; without a listener Node would throw.
  redis.on('error', () => {});
  redis.on('ready', () => {
    downUntil = 0;
  });

  const health: RedisHealth = {
    usable: () => redis.status === 'ready' && Date.now() >= downUntil,
    failed: markDown,
    succeeded: markUp,
  };

  return {
    kind: 'redis',
    redis,
    health,
    buckets(id, limit: BucketLimit): Buckets {
      const local = opts.local.buckets(shareId(id), shareOf(limit, replicas));
      const key = `${prefix}${id}:`;
      const { ratePerMs, burst, maxDelayMs } = limit;
      // A decision made on the fallback says so, and its refund goes back to the same place.
      // The fallback is the memory store, whose decisions are synchronous.
      const localTake = (k: string): Decision => ({ ...(local.take(k) as Decision), local: true });
      return {
        size: () => local.size(),
        refund(k: string, d: Decision) {
          if (d.local) local.refund(k, d);
          else if (redis.status === 'ready') redis.bwRefund(key + k, burst).catch(() => {});
        },
        take(k: string): Decision | Promise<Decision> {
          if (redis.status !== 'ready' || Date.now() < downUntil) {
            if (redis.status !== 'ready' && !fallingBack) markDown('disconnected');
            return localTake(k);
          }
          const shared = redis
            .bwBucket(key + k, ratePerMs, burst, maxDelayMs)
            .then((r): Decision => ({ allowed: r[0] === 1, delayMs: Number(r[1]), remaining: Number(r[2]), resetMs: Number(r[3]) }));
          return withDeadline(
            shared,
            opts.timeoutMs,
            () => localTake(k),
            (how) => (how === 'ok' ? markUp() : markDown(how)),
          );
        },
      };
    },
    retain: (ids) => opts.local.retain(new Set([...ids, ...[...ids].map(shareId)])),
    close: async () => {
      redis.disconnect();
    },
  };
}
