// `REDIS_URL` in the forms of Envoy's rate-limit service. Apart from the client module so that
// validating a policy does not load ioredis.
export type RedisType = 'single' | 'sentinel' | 'cluster';

export interface HostPort {
  host: string;
  port: number;
}

/** `host:port` (IPv6 as `[::1]:6379`); the port defaults to `dflt`. */
function hostPort(s: string, dflt: number): HostPort {
  const t = s.trim();
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : dflt };
  const i = t.lastIndexOf(':');
  if (i < 0) return { host: t, port: dflt };
  const port = Number(t.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`REDIS_URL: bad port in "${t}"`);
  return { host: t.slice(0, i), port };
}

/** Splits `REDIS_URL` by type; throws with a message naming the expected form. */
export function parseRedisUrl(type: RedisType, url: string): { master?: string; nodes: HostPort[] } {
  if (type === 'single') return { nodes: [] };
  const parts = url
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (type === 'sentinel') {
    if (parts.length < 2 || parts[0]!.includes(':')) throw new Error('REDIS_URL for REDIS_TYPE=sentinel is <master-name>,<host:port>[,<host:port>...]');
    return { master: parts[0]!, nodes: parts.slice(1).map((p) => hostPort(p, 26379)) };
  }
  if (parts.length < 1 || parts.some((p) => p.includes('//'))) throw new Error('REDIS_URL for REDIS_TYPE=cluster is <host:port>[,<host:port>...]');
  return { nodes: parts.map((p) => hostPort(p, 6379)) };
}
