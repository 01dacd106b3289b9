// The one place an ioredis client is made, for every topology the SPEC names: a single node
// (`redis://` / `rediss://`), Sentinel (`<master>,<host:port>,...`) and Cluster
// (`<host:port>,...`) — the `REDIS_URL` forms of Envoy's rate-limit service, so a fleet that
// already runs it can reuse its settings. Every client fails fast instead of queueing while
// disconnected: the caller's local fallback answers instead.
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { parseRedisUrl, type RedisType } from '../policy/redis-url.js';

export type { RedisType } from '../policy/redis-url.js';
export type RedisClient = Redis | Cluster;

export interface RedisConnectionConfig {
  type: RedisType;
  url: string;
  /** ACL user; empty: the URL's, or the default user. */
  username: string;
  /** Empty: the URL's, or none. */
  password: string;
  /** TLS for every connection (implied by `rediss://`). */
  tls: boolean;
  /** PEM CA bundle that signed the servers' certificates; empty: the system store. */
  caFile: string;
}

function tlsOptions(cfg: RedisConnectionConfig): ConnectionOptions | undefined {
  if (!cfg.tls && !cfg.url.startsWith('rediss://')) return undefined;
  return cfg.caFile === '' ? {} : { ca: [readFileSync(cfg.caFile)] };
}

// Shared by every topology: a decision must never wait on a reconnect.
const failFast = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  connectTimeout: 1000,
} as const;

const backoff = (times: number) => Math.min(times * 200, 2000);

export function createRedisClient(cfg: RedisConnectionConfig): RedisClient {
  const tls = tlsOptions(cfg);
  const auth: RedisOptions = {};
  if (cfg.username !== '') auth.username = cfg.username;
  if (cfg.password !== '') auth.password = cfg.password;
  if (cfg.type === 'single') {
    return new Redis(cfg.url, { ...failFast, ...auth, ...(tls ? { tls } : {}), retryStrategy: backoff });
  }
  const { master, nodes } = parseRedisUrl(cfg.type, cfg.url);
  if (cfg.type === 'sentinel') {
    return new Redis({
      ...failFast,
      ...auth,
      sentinels: nodes,
      name: master!,
      // Sentinels are asked for the master on every reconnect, so a failover is followed;
      // they take no AUTH here (Envoy's rate-limit service does the same by default).
      sentinelRetryStrategy: backoff,
      // Subscribes to +switch-master, so a failover is seen at once rather than on the next error.
      failoverDetector: true,
      retryStrategy: backoff,
      // After a failover the old master may come back as a replica: a READONLY reply means
      // "reconnect and ask the sentinels again".
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    });
  }
  return new Cluster(nodes, {
    enableOfflineQueue: false,
    clusterRetryStrategy: backoff,
    // MOVED and ASK are followed by ioredis (up to 16 hops); a failed-over slot is retried soon.
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    slotsRefreshTimeout: 1000,
    redisOptions: { ...auth, maxRetriesPerRequest: 0, connectTimeout: failFast.connectTimeout, ...(tls ? { tls } : {}) },
  });
}

/** Keys for multi-key scripts: the `{tag}` puts all of one bucket's keys in one Cluster slot. */
export function slotKey(prefix: string, tag: string, suffix = ''): string {
  return `${prefix}{${tag}}${suffix}`;
}
