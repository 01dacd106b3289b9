// A real redis-server for a test, on a free loopback port, in its own process group so that
// `kill()` takes it down at once (SIGKILL, like a crashed or partitioned Redis) and `start()`
// brings it back on the same port. A missing redis-server is an error, never a skip.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { startProxy, type TestProxy } from './proxy.js';
import { freePort, waitFor } from './wait.mjs';

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly running: boolean;
  /** Starts (or restarts) redis-server on the same port; resolves once it answers PING. */
  start(): Promise<void>;
  /** SIGKILLs the process group and waits for the exit. */
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Sends PING over a raw socket (or TLS, trusting any certificate); true on +PONG within `ms`. */
function ping(port: number, ms = 300, overTls = false): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = overTls ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }) : net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(t);
      sock.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), ms);
    sock.on(overTls ? 'secureConnect' : 'connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      // NOAUTH: alive, only closed to the unauthenticated (an ACL setup without a default user).
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG') || buf.startsWith('-NOAUTH'));
    });
    sock.on('error', () => done(false));
  });
}

export interface StartOptions {
  /** Extra arguments after the defaults (a later flag wins in redis-server). */
  args?: string[];
  /** The program: redis-server, or redis-sentinel with a config file as first argument. */
  bin?: 'redis-server' | 'redis-sentinel';
  /** Whole argument list instead of the defaults (redis-sentinel CONF --port P). */
  argv?: (port: number) => string[];
  /** The port speaks TLS only. */
  tls?: boolean;
}

export async function startRedis(port?: number, opts: StartOptions | string[] = {}): Promise<RedisServer> {
  // A bare array is extra redis-server options (`--enable-debug-command local`, `--appendonly yes`…).
  const o: StartOptions = Array.isArray(opts) ? { args: opts } : opts;
  const p = port ?? (await freePort());
  const bin = o.bin ?? 'redis-server';
  let child: ChildProcess | undefined;
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live)
        if (c.pid !== undefined)
          try {
            process.kill(-c.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
    });
  }

  const server: RedisServer = {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async start() {
      if (server.running) return;
      const argv = o.argv ? o.argv(p) : ['--bind', '127.0.0.1', '--port', String(p), '--save', '', '--appendonly', 'no', ...(o.args ?? [])];
      const c = spawn(bin, argv, {
        detached: true,
        stdio: 'ignore',
      });
      child = c;
      live.add(c);
      c.on('exit', () => live.delete(c));
      const failed = new Promise<never>((_, reject) => {
        c.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new Error(
              err.code === 'ENOENT'
                ? 'redis-server is not installed (apt-get install -y redis-server); Redis tests cannot run without it'
                : `redis-server failed to start: ${err.message}`,
            ),
          ),
        );
        c.once('exit', (code, sig) => reject(new Error(`redis-server exited early (code ${code}, signal ${sig}); port ${p} in use?`)));
      });
      failed.catch(() => {});
      const ready = (async () => {
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline) {
          if (await ping(p, 300, o.tls)) return;
          await new Promise((r) => setTimeout(r, 25));
        }
        throw new Error(`redis-server on port ${p} did not answer PING within 5 s`);
      })();
      await Promise.race([ready, failed]);
    },
    async kill() {
      const c = child;
      if (c === undefined || c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        c.kill('SIGKILL');
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    },
  };
  await server.start();
  return server;
}

/**
 * Records every ioredis client created while active (the proxy's store clients are otherwise
 * private). ioredis calls `connect()` from its constructor (or on first use with lazyConnect),
 * so patching the prototype sees each instance.
 */
export function captureRedisClients(): { clients: Set<Redis>; restore(): void } {
  const clients = new Set<Redis>();
  type Proto = { connect: (...a: unknown[]) => Promise<void> };
  const protos = [Redis.prototype, Cluster.prototype] as unknown as Proto[];
  const originals = protos.map((p) => p.connect);
  protos.forEach((proto, i) => {
    proto.connect = function patchedConnect(this: Redis, ...a: unknown[]) {
      clients.add(this);
      return originals[i]!.apply(this, a);
    };
  });
  return {
    clients,
    restore: () => {
      protos.forEach((proto, i) => {
        proto.connect = originals[i]!;
      });
    },
  };
}

/** Clients connected to the server, from CLIENT LIST over a throwaway connection. */
export async function connectedClients(port: number): Promise<number> {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    const list = (await r.client('LIST')) as string;
    return list.split('\n').filter(Boolean).length - 1; // minus this connection
  } finally {
    r.disconnect();
  }
}

/**
 * Two proxy replicas on one policy and environment (a shared Redis store), with the ioredis
 * clients they created, so a test can wait for them to be ready or count their listeners.
 */
export async function startReplicas(env: Record<string, string>, policyText: string): Promise<{ a: TestProxy; b: TestProxy; clients: Set<Redis> }> {
  const capture = captureRedisClients();
  try {
    const a = await startProxy(env, policyText);
    const b = await startProxy(env, policyText);
    return { a, b, clients: capture.clients };
  } finally {
    capture.restore();
  }
}

const run = promisify(execFile);

/** One redis-cli command against a local port; its stdout. */
export async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 20_000 });
  return stdout;
}

export interface SentinelSetup {
  readonly name: string;
  readonly master: RedisServer;
  readonly replica: RedisServer;
  readonly sentinel: RedisServer;
  /** `REDIS_URL` for REDIS_TYPE=sentinel. */
  readonly url: string;
  /** The port the sentinel names as master now. */
  masterPort(): Promise<number>;
  kill(): Promise<void>;
}

/**
 * A master, one replica and one sentinel (quorum 1) with short timeouts; resolves once the
 * sentinel knows a healthy replica, so `SENTINEL FAILOVER` can succeed.
 */
export async function startSentinel(name = 'bwmaster'): Promise<SentinelSetup> {
  const master = await startRedis();
  const replica = await startRedis(undefined, { args: ['--replicaof', '127.0.0.1', String(master.port)] });
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-sentinel-'));
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      'bind 127.0.0.1',
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 3000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'),
  );
  const sentinel = await startRedis(undefined, { bin: 'redis-sentinel', argv: (p) => [conf, '--port', String(p)] });
  const masterPort = async () => Number((await cli(sentinel.port, 'SENTINEL', 'get-master-addr-by-name', name)).trim().split('\n')[1]);
  const replicaKnown = await waitFor(
    async () => {
      const out = await cli(sentinel.port, 'SENTINEL', 'replicas', name).catch(() => '');
      const link = await cli(replica.port, 'INFO', 'replication').catch(() => '');
      return out.includes(String(replica.port)) && !out.includes('s_down') && link.includes('master_link_status:up');
    },
    { timeoutMs: 20_000, everyMs: 100 },
  );
  if (!replicaKnown) throw new Error('sentinel did not learn the replica within 20 s');
  return {
    name,
    master,
    replica,
    sentinel,
    url: `${name},127.0.0.1:${sentinel.port}`,
    masterPort,
    kill: async () => {
      await sentinel.kill();
      await replica.kill();
      await master.kill();
    },
  };
}

export interface ClusterSetup {
  readonly nodes: RedisServer[];
  /** `REDIS_URL` for REDIS_TYPE=cluster (two seed nodes of three). */
  readonly url: string;
  kill(): Promise<void>;
}

/** Three masters, slots spread by `redis-cli --cluster create`; resolves at cluster_state:ok on every node. */
export async function startCluster(): Promise<ClusterSetup> {
  const nodes: RedisServer[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-cluster-'));
    nodes.push(
      await startRedis(undefined, {
        args: ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--dir', dir, '--cluster-node-timeout', '2000'],
      }),
    );
  }
  await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-yes'], { timeout: 30_000 });
  const ok = await waitFor(
    async () => {
      const infos = await Promise.all(nodes.map((n) => cli(n.port, 'CLUSTER', 'INFO').catch(() => '')));
      return infos.every((t) => t.includes('cluster_state:ok'));
    },
    { timeoutMs: 15_000, everyMs: 100 },
  );
  if (!ok) throw new Error('cluster did not reach cluster_state:ok within 15 s');
  return {
    nodes,
    url: nodes
      .slice(0, 2)
      .map((n) => `127.0.0.1:${n.port}`)
      .join(','),
    kill: async () => {
      for (const n of nodes) await n.kill();
    },
  };
}

export interface TlsRedis {
  readonly server: RedisServer;
  /** `rediss://127.0.0.1:P` */
  readonly url: string;
  readonly caFile: string;
  readonly dir: string;
}

/**
 * redis-server on a TLS-only port with a fresh self-signed certificate (SAN IP:127.0.0.1, so
 * Node's hostname check passes) and an ACL user; the default user is switched off, so only that
 * user gets in.
 */
export async function startTlsRedis(user: string, password: string): Promise<TlsRedis> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await run(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { timeout: 20_000 },
  );
  const server = await startRedis(undefined, {
    tls: true,
    argv: (p) => [
      '--bind',
      '127.0.0.1',
      '--port',
      '0',
      '--tls-port',
      String(p),
      '--tls-cert-file',
      cert,
      '--tls-key-file',
      key,
      '--tls-ca-cert-file',
      cert,
      '--tls-auth-clients',
      'no',
      '--save',
      '',
      '--appendonly',
      'no',
      '--user',
      'default',
      'off',
      '--user',
      user,
      'on',
      `>${password}`,
      '~*',
      '+@all',
    ],
  });
  return { server, url: `rediss://127.0.0.1:${server.port}`, caFile: cert, dir };
}
