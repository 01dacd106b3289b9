// A fleet-wide concurrency cap (Twilio limits *concurrent requests per account*, not a rate):
// a distributed semaphore whose slots are leases in a sorted set scored by expiry, so the slots
// of a replica killed mid-request come back once its leases lapse. Holders renew their leases
// while the request runs. A 20429 lowers the cap for a while (learned from Twilio), and so does a
// `Twilio-Concurrent-Requests` above what the fleet itself holds (callers outside the fleet share
// the account); a request over the cap waits in a bounded local queue, within its deadline,
// instead of being refused.
//
// Both keys of a semaphore share one `{tag}`, so the scripts run on a Redis Cluster. While Redis
// is unusable, a replica admits its share of the cap (cap / replicas) on a local count.
import { randomUUID } from 'node:crypto';
import type { RedisClient } from './redis-connection.js';
import { slotKey } from './redis-connection.js';
import { sleep } from '../resilience/clock.js';

// KEYS: leases (zset id -> expiry ms), learned cap, recent peak. ARGV: cap, id, ttlMs, peakMs.
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[1])
local learned = tonumber(redis.call('GET', KEYS[2]))
if learned ~= nil and learned < cap then cap = learned end
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
local held = redis.call('ZCARD', KEYS[1])
local peak = tonumber(redis.call('GET', KEYS[3]))
if peak == nil or held >= peak then redis.call('SET', KEYS[3], held, 'PX', tonumber(ARGV[4])) end
return 1
`;

// Renews a held lease; 0 when it had already lapsed (the slot may have gone to someone else).
const RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
`;

// The upstream said "too many concurrent": hold the cap one below what was in use, for ARGV[2] ms.
const LOWER = `
local inUse = redis.call('ZCARD', KEYS[1])
local cur = tonumber(redis.call('GET', KEYS[2])) or tonumber(ARGV[1])
local next = math.max(1, math.min(cur, inUse) - 1)
redis.call('SET', KEYS[2], next, 'PX', tonumber(ARGV[2]))
return next
`;

// The upstream counted ARGV[3] requests in flight on the account, this one included; the rest
// beyond the fleet's own are callers outside the fleet, so the cap is held that much below the
// configured one for ARGV[4] ms, never below 1. Twilio counted when it answered, a moment before
// this runs, and slots were released meanwhile (answers of several replicas arrive out of order):
// the fleet's own is taken as the most it held within the last peakMs, not as it holds now,
// which can undercount the outside callers but never overcounts them. So a figure may lower the
// cap but never raise it (that would follow an undercount into 20429s); one that agrees keeps it
// lowered, and without such answers it lapses back to the configured cap, as a 429 lowering
// does. The lease is released in the same round trip.
const FEEDBACK = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local own = math.max(redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[3])) or 0)
redis.call('ZREM', KEYS[1], ARGV[2])
local outside = tonumber(ARGV[3]) - own
if outside <= 0 then return 0 end
local target = math.max(1, tonumber(ARGV[1]) - outside)
local cur = tonumber(redis.call('GET', KEYS[2]))
if cur == nil or target < cur then
  redis.call('SET', KEYS[2], target, 'PX', tonumber(ARGV[4]))
elseif target == cur then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
end
return target
`;

type WithSem = RedisClient & {
  bwSemAcquire(leases: string, cap: string, peak: string, max: number, id: string, ttlMs: number, peakMs: number): Promise<number>;
  bwSemRenew(leases: string, id: string, ttlMs: number): Promise<number>;
  bwSemLower(leases: string, cap: string, max: number, holdMs: number): Promise<number>;
  bwSemFeedback(leases: string, cap: string, peak: string, max: number, id: string, reported: number, holdMs: number): Promise<number>;
};

export interface SemaphoreOptions {
  redis: RedisClient;
  /** Concurrent slots across the fleet. */
  cap: number;
  /** A lease lapses this long after its last renewal (a killed holder's slot comes back). */
  leaseMs: number;
  /** Waiters kept per replica; beyond it `acquire` refuses at once. */
  maxQueue: number;
  /** Replicas sharing the cap: the local fallback admits cap / replicas. */
  replicas?: number;
  /** How long a lowered cap (after a 20429 or a `Twilio-Concurrent-Requests` over the fleet's own) holds. */
  lowerMs?: number;
  /**
   * How long the fleet's peak holding is remembered (default 1 s): longer than an answer takes
   * from Twilio's count to the feedback script (a network round trip and a busy event loop),
   * short enough that a quieter fleet soon measures its outside callers exactly.
   */
  peakMs?: number;
  prefix?: string;
  usable?: () => boolean;
}

export interface Lease {
  /**
   * `reported`: the upstream's count of the account's requests in flight (Twilio-Concurrent-Requests)
   * on this attempt's answer; above the fleet's own, it lowers the cap by the difference.
   */
  release(reported?: number): void;
}

export interface FleetSemaphore {
  /** A slot for `account` before `deadline` (epoch ms), or undefined (queue full or deadline passed). */
  acquire(account: string, deadline: number): Promise<Lease | undefined>;
  /** Feedback from a 20429. */
  lower(account: string): Promise<void>;
  waiting(): number;
}

export function fleetSemaphore(o: SemaphoreOptions): FleetSemaphore {
  const redis = o.redis as WithSem;
  redis.defineCommand('bwSemAcquire', { numberOfKeys: 3, lua: ACQUIRE });
  redis.defineCommand('bwSemRenew', { numberOfKeys: 1, lua: RENEW });
  redis.defineCommand('bwSemLower', { numberOfKeys: 2, lua: LOWER });
  redis.defineCommand('bwSemFeedback', { numberOfKeys: 3, lua: FEEDBACK });
  const lowerMs = o.lowerMs ?? 60_000;
  const peakMs = Math.max(1, o.peakMs ?? 1000);
  const prefix = o.prefix ?? 'bw:sem:';
  const share = Math.max(1, Math.floor(o.cap / Math.max(1, o.replicas ?? 1)));
  const usable = o.usable ?? (() => o.redis.status === 'ready');
  const localHeld = new Map<string, number>();
  let waiters = 0;
  const keys = (account: string) => [slotKey(prefix, account, ':leases'), slotKey(prefix, account, ':cap'), slotKey(prefix, account, ':peak')] as const;

  function localLease(account: string): Lease | undefined {
    const n = localHeld.get(account) ?? 0;
    if (n >= share) return undefined;
    localHeld.set(account, n + 1);
    let done = false;
    return {
      release() {
        if (done) return;
        done = true;
        localHeld.set(account, (localHeld.get(account) ?? 1) - 1);
      },
    };
  }

  async function tryOnce(account: string): Promise<Lease | undefined> {
    if (!usable()) return localLease(account);
    const [leases, cap, peak] = keys(account);
    const id = randomUUID();
    let got: number;
    try {
      got = await redis.bwSemAcquire(leases, cap, peak, o.cap, id, o.leaseMs, peakMs);
    } catch {
      return localLease(account);
    }
    if (got !== 1) return undefined;
    const renew = setInterval(() => void redis.bwSemRenew(leases, id, o.leaseMs).catch(() => {}), Math.max(50, Math.floor(o.leaseMs / 3)));
    renew.unref();
    let done = false;
    return {
      release(reported) {
        if (done) return;
        done = true;
        clearInterval(renew);
        if (reported === undefined) void redis.zrem(leases, id).catch(() => {});
        else void redis.bwSemFeedback(leases, cap, peak, o.cap, id, reported, lowerMs).catch(() => redis.zrem(leases, id).catch(() => {}));
      },
    };
  }

  return {
    async acquire(account, deadline) {
      const first = await tryOnce(account);
      if (first) return first;
      if (waiters >= o.maxQueue) return undefined;
      waiters++;
      try {
        // Bounded: the deadline ends it; the steps grow to 50 ms so a full fleet is not polled hard.
        for (let i = 1; i < 100_000 && Date.now() < deadline; i++) {
          await sleep(Math.min(50, 5 * i, Math.max(1, deadline - Date.now())));
          const l = await tryOnce(account);
          if (l) return l;
        }
        return undefined;
      } finally {
        waiters--;
      }
    },
    async lower(account) {
      if (!usable()) return;
      const [leases, cap] = keys(account);
      await redis.bwSemLower(leases, cap, o.cap, lowerMs).catch(() => 0);
    },
    waiting: () => waiters,
  };
}
