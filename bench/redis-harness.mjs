// What the Redis benches share: the built stores from dist/, `--name value` options, and real
// redis-server processes on free loopback ports (a single node or a three-master Cluster),
// killed when the bench exits. Loopback only.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '../test/support/wait.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (f) => path.join(ROOT, 'dist', f);
if (!existsSync(dist('store/redis.js'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(2);
}
export const { redisStore } = await import(dist('store/redis.js'));
export const { memoryStore } = await import(dist('store/store.js'));
export const { fleetSemaphore } = await import(dist('store/redis-semaphore.js'));

const args = process.argv.slice(2);
export const flag = (name) => args.includes(name);
export const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : def;
};

const run = promisify(execFile);
const children = [];
process.on('exit', () => {
  for (const c of children) {
    try {
      process.kill(-c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** A redis-server (no persistence) on a free loopback port; resolves with the port once it answers PING. */
export async function redisServer(extra = []) {
  const port = await freePort();
  const c = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', ...extra], {
    detached: true,
    stdio: 'ignore',
  });
  children.push(c);
  c.once('error', (err) => {
    console.error(`redis-server: ${err.message}`);
    process.exit(2);
  });
  for (let i = 0; i < 200; i++) {
    const ok = await run('redis-cli', ['-p', String(port), 'PING'], { timeout: 1000 }).then(
      (r) => r.stdout.includes('PONG'),
      () => false,
    );
    if (ok) return port;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`redis-server on ${port} did not answer`);
}

/** A three-master Cluster; resolves with its "host:port,host:port,host:port" once cluster_state is ok. */
export async function cluster() {
  const ports = [];
  for (let i = 0; i < 3; i++) {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-cluster-'));
    ports.push(await redisServer(['--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--dir', dir]));
  }
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { timeout: 30_000 });
  for (let i = 0; i < 150; i++) {
    const infos = await Promise.all(
      ports.map((p) =>
        run('redis-cli', ['-p', String(p), 'CLUSTER', 'INFO']).then(
          (r) => r.stdout,
          () => '',
        ),
      ),
    );
    if (infos.every((t) => t.includes('cluster_state:ok'))) return ports.map((p) => `127.0.0.1:${p}`).join(',');
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('cluster did not reach cluster_state:ok');
}
