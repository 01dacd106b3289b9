// The fleet's cache store: entries in Redis, so a copy one replica fetched answers every replica.
// The keys are the memory store's (upstream, URI, the credential's keyed hash, key headers),
// hashed again so Redis never holds a path, a phone number or a credential hash in clear. The
// credential hash must agree across replicas, so its key is one random secret kept in Redis
// (SET NX: the first replica to ask makes it) instead of the memory store's per-process one.
//
// Redis never slows or fails a request: a lookup waits at most `timeoutMs`, then (and while the
// shared connection is down or backing off) the memory store answers in its place. Writes and
// invalidations are sent in the background. Every key expires: an entry after its freshness
// plus its stale allowance (so Redis's own clock ages it, the same for every replica), an index
// with its longest member. A fallback spell's memory copies are dropped once Redis is back: they
// may predate an invalidation another replica made meanwhile. Invalidations made while Redis was
// away are kept (bounded) and sent when it returns.
//
// Cluster: an entry and its path index share a hash tag (the path's hash), so a write and a
// path invalidation are one script in one slot; a route's index has its own tag and its members
// are dropped one command each.
import { createHash, randomBytes } from 'node:crypto';
import type { Clock } from '../resilience/clock.js';
import { withDeadline } from '../resilience/deadline.js';
import type { RedisClient } from '../store/redis-connection.js';
import type { RedisHealth } from '../store/redis.js';
import type { CacheEntry, CacheStore, MemoryCacheStore } from './memory-store.js';
import type { Freshness } from './freshness.js';
import { keyPath } from './key.js';

export interface RedisCacheOptions {
  redis: RedisClient;
  /** The shared connection's health: a failure here backs every Redis user off, as theirs do. */
  health: RedisHealth;
  /** Answers while Redis cannot. */
  local: MemoryCacheStore;
  clock: Clock;
  /** Longest wait for a lookup before the memory store answers instead. */
  timeoutMs: number;
  /** Largest encoded entry (body, headers and metadata) written to Redis. */
  maxValueBytes: number;
  /** Per upstream, e.g. `bw:cache:vapi:`. */
  prefix: string;
  /** Where the fleet's credential-hash secret lives (one for every upstream). */
  secretKey?: string;
  /** Background writes in flight past which new ones are dropped (a stalled Redis must not queue memory). */
  maxInFlight?: number;
  /** Invalidations kept while Redis is away, oldest dropped. */
  maxPending?: number;
}

// Stores the entry with its expiry and indexes it under its path (same slot: the path's tag).
const SET = `
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
`;

// Adds a member to an index scored by its expiry, trimming members already expired.
const INDEX = `
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`;

// The entry and how long it has left: the age is Redis's to keep, not a replica's clock.
const GET = `return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}`;

// Drops every entry indexed under a path (members share the index's slot) and the index.
const DROP_PATH = `
local m = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #m, 500 do redis.call('DEL', unpack(m, i, math.min(i + 499, #m))) end
redis.call('DEL', KEYS[1])
return #m
`;

// Takes a route's index whole (read and delete at once, so a concurrent write is not lost from it).
const TAKE_INDEX = `
local m = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return m
`;

const SECRET = `redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])`;

type WithCache = RedisClient & {
  bwCacheSet(entry: string, pathIndex: string, value: Buffer, ttlMs: number): Promise<number>;
  bwCacheIndex(index: string, member: string, ttlMs: number): Promise<number>;
  bwCacheGetBuffer(entry: string): Promise<[Buffer | null, number]>;
  bwCacheDropPath(pathIndex: string): Promise<number>;
  bwCacheTakeIndex(index: string): Promise<string[]>;
  bwCacheSecret(key: string, candidate: string): Promise<string>;
};

/** Headers and metadata allowed beside the largest body a route stores. */
export const VALUE_OVERHEAD_BYTES = 64 * 1024;

interface WireMeta {
  s: number;
  h: Record<string, string | string[]>;
  /** Freshness: lifetime, initial age, stale allowance (ms). */
  f: [number, number, number];
  y: (readonly [string, string])[];
  p: string;
  r: string;
}

/** How long Redis should keep an entry: what is left of its freshness plus its stale allowance. */
export function expiryMs(e: Pick<CacheEntry, 'freshness' | 'storedAt'>, now: number): number {
  const f = e.freshness;
  const age = f.initialAgeMs + Math.max(0, now - e.storedAt);
  return Math.ceil(f.lifetimeMs + f.staleIfErrorMs - age);
}

/** An entry as one Redis value: its metadata as a JSON line, then the body's bytes. */
export function encodeEntry(e: CacheEntry): Buffer {
  const f = e.freshness;
  const meta: WireMeta = {
    s: e.status,
    h: e.headers as Record<string, string | string[]>,
    f: [f.lifetimeMs, f.initialAgeMs, f.staleIfErrorMs],
    y: e.vary as (readonly [string, string])[],
    p: e.path,
    r: e.route,
  };
  // JSON escapes every newline, so the first one ends the metadata.
  return Buffer.concat([Buffer.from(JSON.stringify(meta) + '\n'), e.body]);
}

/**
 * The entry back from Redis. `pttlMs` is what Redis says is left of it; its age follows from
 * that, and `storedAt` is placed on this process's clock so the freshness maths work unchanged.
 */
export function decodeEntry(value: Buffer, pttlMs: number, now: number): CacheEntry | undefined {
  const nl = value.indexOf(0x0a);
  if (nl < 0 || pttlMs < 0) return undefined;
  let meta: WireMeta;
  try {
    meta = JSON.parse(value.subarray(0, nl).toString()) as WireMeta;
  } catch {
    return undefined;
  }
  if (typeof meta.s !== 'number' || !Array.isArray(meta.f) || meta.f.length !== 3) return undefined;
  const freshness: Freshness = { lifetimeMs: meta.f[0], initialAgeMs: meta.f[1], staleIfErrorMs: meta.f[2] };
  const age = Math.max(freshness.initialAgeMs, freshness.lifetimeMs + freshness.staleIfErrorMs - pttlMs);
  return {
    status: meta.s,
    headers: meta.h,
    // A copy, not a view into Redis's reply buffer: entries outlive the reply.
    body: Buffer.from(value.subarray(nl + 1)),
    freshness,
    storedAt: now - (age - freshness.initialAgeMs),
    vary: meta.y,
    path: meta.p,
    route: meta.r,
  };
}

const hash = (s: string) => createHash('sha256').update(s).digest('base64url');

/** Redis key names: an entry and its path index share the path's hash tag. */
export function redisKeys(prefix: string, key: string, path: string): { entry: string; pathIndex: string } {
  const tag = `${prefix}{${hash(path).slice(0, 22)}}`;
  return { entry: `${tag}e:${hash(key)}`, pathIndex: `${tag}p` };
}

export function routeIndexKey(prefix: string, route: string): string {
  return `${prefix}{r:${route}}`;
}

const FAILED = Symbol('failed');

export class RedisCacheStore implements CacheStore {
  readonly kind = 'redis' as const;
  private readonly redis: WithCache;
  private readonly local: MemoryCacheStore;
  private fleetSecret: Buffer | undefined;
  private readonly ownSecret = randomBytes(32);
  private fetchingSecret = false;
  /**
   * Set by every failure: a Redis that restarted empty makes a new secret, so it is asked for
   * again once Redis answers (the old one serves meanwhile).
   */
  private secretStale = false;
  /** The memory store answered since Redis last did: its copies are dropped on Redis's return. */
  private localUsed = false;
  private inFlight = 0;
  private readonly pendingPaths = new Set<string>();
  private readonly pendingRoutes = new Set<string>();
  private readonly maxInFlight: number;
  private readonly maxPending: number;
  private readonly secretKey: string;

  constructor(private readonly o: RedisCacheOptions) {
    this.redis = o.redis as WithCache;
    this.local = o.local;
    this.maxInFlight = o.maxInFlight ?? 1000;
    this.maxPending = o.maxPending ?? 10_000;
    this.secretKey = o.secretKey ?? 'bw:cache:secret';
    // defineCommand is per client and idempotent for one name and script: every upstream's store may call it.
    this.redis.defineCommand('bwCacheSet', { numberOfKeys: 2, lua: SET });
    this.redis.defineCommand('bwCacheIndex', { numberOfKeys: 1, lua: INDEX });
    this.redis.defineCommand('bwCacheGet', { numberOfKeys: 1, lua: GET });
    this.redis.defineCommand('bwCacheDropPath', { numberOfKeys: 1, lua: DROP_PATH });
    this.redis.defineCommand('bwCacheTakeIndex', { numberOfKeys: 1, lua: TAKE_INDEX });
    this.redis.defineCommand('bwCacheSecret', { numberOfKeys: 1, lua: SECRET });
    // Learnt as soon as the connection is up, so the first requests already share. One listener
    // at most per store, gone once it fires (stores are rebuilt on reloads; the connection is shared).
    if (this.redis.status === 'ready') this.learnSecret();
    else this.redis.once('ready', () => this.learnSecret());
  }

  /** The credential-hash key: the fleet's once known (kept through outages), else this process's own. */
  get secret(): Buffer {
    return this.fleetSecret ?? this.ownSecret;
  }

  get size(): number {
    return this.local.size;
  }

  get bytes(): number {
    return this.local.bytes;
  }

  /** Pending invalidations and background writes, for tests and the curious. */
  get backlog(): { invalidations: number; writes: number } {
    return { invalidations: this.pendingPaths.size + this.pendingRoutes.size, writes: this.inFlight };
  }

  get(key: string): CacheEntry | undefined | Promise<CacheEntry | undefined> {
    if (!this.usable()) return this.fromLocal(key);
    this.back();
    return this.bounded(this.redis.bwCacheGetBuffer(this.keysFor(key).entry)).then((r) => {
      if (r === FAILED) return this.fromLocal(key);
      const [value, pttl] = r;
      return value === null ? undefined : decodeEntry(value, pttl, this.o.clock());
    });
  }

  set(key: string, entry: CacheEntry): boolean {
    const value = encodeEntry(entry);
    if (value.length > this.o.maxValueBytes) return false;
    if (!this.usable()) {
      this.localUsed = true;
      return this.local.set(key, entry);
    }
    this.back();
    const ttl = expiryMs(entry, this.o.clock());
    // Nothing left to keep: the answer still serves the requests waiting on it.
    if (ttl <= 0) return true;
    const keys = redisKeys(this.o.prefix, key, entry.path);
    this.background(() =>
      Promise.all([
        this.redis.bwCacheSet(keys.entry, keys.pathIndex, value, ttl),
        this.redis.bwCacheIndex(routeIndexKey(this.o.prefix, entry.route), keys.entry, ttl),
      ]),
    );
    return true;
  }

  delete(key: string): void {
    this.local.delete(key);
    if (!this.usable()) return;
    // The path is not known here; the index member left behind expires with its score.
    this.background(() => this.redis.del(this.keysFor(key).entry));
  }

  invalidatePath(path: string): void {
    this.local.invalidatePath(path);
    if (!this.usable()) return this.keep(this.pendingPaths, path);
    this.back();
    this.background(
      () => this.dropPath(path),
      () => this.keep(this.pendingPaths, path),
    );
  }

  invalidateRoute(route: string): void {
    this.local.invalidateRoute(route);
    if (!this.usable()) return this.keep(this.pendingRoutes, route);
    this.back();
    this.background(
      () => this.dropRoute(route),
      () => this.keep(this.pendingRoutes, route),
    );
  }

  private keysFor(key: string): { entry: string } {
    return redisKeys(this.o.prefix, key, keyPath(key));
  }

  private fromLocal(key: string): CacheEntry | undefined {
    this.localUsed = true;
    return this.local.get(key);
  }

  private usable(): boolean {
    if (!this.o.health.usable()) return false;
    if (this.fleetSecret === undefined || this.secretStale) this.learnSecret();
    return this.fleetSecret !== undefined;
  }

  /** Redis answers again: drop the fallback's copies and send what was invalidated meanwhile. */
  private back(): void {
    if (this.localUsed) {
      this.localUsed = false;
      this.local.clear();
    }
    if (this.pendingPaths.size + this.pendingRoutes.size === 0) return;
    const paths = [...this.pendingPaths];
    const routes = [...this.pendingRoutes];
    this.pendingPaths.clear();
    this.pendingRoutes.clear();
    for (const p of paths)
      this.background(
        () => this.dropPath(p),
        () => this.keep(this.pendingPaths, p),
      );
    for (const r of routes)
      this.background(
        () => this.dropRoute(r),
        () => this.keep(this.pendingRoutes, r),
      );
  }

  private keep(set: Set<string>, name: string): void {
    set.delete(name);
    set.add(name);
    if (set.size > this.maxPending) set.delete(set.values().next().value as string);
  }

  private dropPath(path: string): Promise<unknown> {
    return this.redis.bwCacheDropPath(redisKeys(this.o.prefix, '', path).pathIndex);
  }

  private async dropRoute(route: string): Promise<unknown> {
    const members = await this.redis.bwCacheTakeIndex(routeIndexKey(this.o.prefix, route));
    // One command each: on a Cluster the members live in many slots.
    return Promise.all(members.map((m) => this.redis.del(m)));
  }

  private learnSecret(): void {
    if (this.fetchingSecret || this.redis.status !== 'ready') return;
    this.fetchingSecret = true;
    this.redis.bwCacheSecret(this.secretKey, randomBytes(32).toString('base64url')).then(
      (s) => {
        this.fetchingSecret = false;
        this.secretStale = false;
        this.fleetSecret = Buffer.from(s);
      },
      () => {
        this.fetchingSecret = false;
      },
    );
  }

  /** `lost` keeps what must not be lost (an invalidation) for Redis's return. */
  private background(op: () => Promise<unknown>, lost?: () => void): void {
    // A write dropped here is only a later miss; the connection's health is judged by answers.
    if (this.inFlight >= this.maxInFlight) return lost?.();
    this.inFlight++;
    op().then(
      () => {
        this.inFlight--;
        this.o.health.succeeded();
      },
      () => {
        this.inFlight--;
        this.failed('error');
        lost?.();
      },
    );
  }

  private failed(reason: string): void {
    this.secretStale = true;
    this.o.health.failed(reason);
  }

  private bounded<T>(op: Promise<T>): Promise<T | typeof FAILED> {
    return withDeadline(
      op,
      this.o.timeoutMs,
      () => FAILED,
      (how) => (how === 'ok' ? this.o.health.succeeded() : this.failed(how)),
    );
  }
}
