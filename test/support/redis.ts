// A real redis-server for a test, on a free loopback port, in its own process group so that
// `kill()` takes it down at once (SIGKILL, like a crashed or partitioned Redis) and `start()`
// brings it back on the same port. A missing redis-server is an error, never a skip.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { Redis } from 'ioredis';
import { startProxy, type TestProxy } from './proxy.js';

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

/** A port that was free a moment ago (listen on 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Sends PING over a raw socket; true on +PONG within `ms`. */
function ping(port: number, ms = 300): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(t);
      sock.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), ms);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/** `args` are extra redis-server options (`--enable-debug-command local`, `--appendonly yes`…). */
export async function startRedis(port?: number, args: string[] = []): Promise<RedisServer> {
  const p = port ?? (await freePort());
  let child: ChildProcess | undefined;
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) if (c.pid !== undefined) try { process.kill(-c.pid, 'SIGKILL'); } catch { /* gone */ }
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
      const c = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(p), '--save', '', '--appendonly', 'no', ...args], {
        detached: true,
        stdio: 'ignore',
      });
      child = c;
      live.add(c);
      c.on('exit', () => live.delete(c));
      const failed = new Promise<never>((_, reject) => {
        c.once('error', (err: NodeJS.ErrnoException) =>
          reject(new Error(err.code === 'ENOENT' ? 'redis-server is not installed (apt-get install -y redis-server); Redis tests cannot run without it' : `redis-server failed to start: ${err.message}`)),
        );
        c.once('exit', (code, sig) => reject(new Error(`redis-server exited early (code ${code}, signal ${sig}); port ${p} in use?`)));
      });
      failed.catch(() => {});
      const ready = (async () => {
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline) {
          if (await ping(p)) return;
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
  const proto = Redis.prototype as unknown as { connect: (...a: unknown[]) => Promise<void> };
  const original = proto.connect;
  proto.connect = function patchedConnect(this: Redis, ...a: unknown[]) {
    clients.add(this);
    return original.apply(this, a);
  };
  return {
    clients,
    restore: () => {
      proto.connect = original;
    },
  };
}

/** Waits (bounded) until `check` is true. Returns whether it became true. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return check();
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
