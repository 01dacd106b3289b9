// Helpers for tests that need more than the in-process proxy: the real CLI as a child process
// (exit codes, stdout/stderr, the RSS of its pid), raw TCP requests the `http` client will not
// send (absolute-form, CONNECT), a "victim" server that records any connection at all.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net, { type AddressInfo, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.mjs';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = fileURLToPath(new URL('../../bin/breakwater.js', import.meta.url));

/** The CLI runs from dist/ (built by `npm ci` through `prepare`); fail loudly when it is missing. */
export function assertBuilt(): void {
  if (!existsSync(new URL('../../dist/cli.js', import.meta.url))) throw new Error('dist/cli.js is missing: run `npm run build` first');
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A clean environment for the child: PATH and HOME only, plus what the test passes. */
function childEnv(env: Record<string, string>): Record<string, string> {
  const base: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'SYSTEMROOT']) if (process.env[k] !== undefined) base[k] = process.env[k]!;
  return { ...base, ...env };
}

/** Runs `node bin/breakwater.js <args>` to completion (killed after `timeoutMs`). */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000): Promise<CliResult> {
  assertBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface CliProxy {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly proxyPort: number;
  readonly adminPort: number;
  output(): string;
  /** Log lines (JSON) written so far. */
  logLines(): Record<string, unknown>[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Starts `breakwater start` on free loopback ports and waits for its "listening" log line (LOG_LEVEL info or lower). */
export async function startCli(env: Record<string, string> = {}, configPath?: string, readyTimeoutMs = 15_000): Promise<CliProxy> {
  assertBuilt();
  const args = [BIN, 'start', ...(configPath ? ['--config', configPath] : [])];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: childEnv({ PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const lines = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const ready = await waitFor(() => lines().find((l) => l.msg === 'breakwater listening'), { timeoutMs: readyTimeoutMs, exited });
  if (!ready) {
    child.kill('SIGKILL');
    throw new Error(`breakwater did not start:\n${out}`);
  }
  const port = (hostPort: unknown) => Number(String(hostPort).split(':').at(-1));
  return {
    child,
    pid: child.pid!,
    proxyPort: port(ready.proxy),
    adminPort: port(ready.admin),
    output: () => out,
    logLines: lines,
    stop: async (graceMs = 5000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Resident set size of a live process in bytes, from /proc (Linux). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Writes raw bytes to `port` and collects what comes back until the peer closes (or `timeoutMs`). */
export function rawExchange(port: number, text: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', done);
    s.on('close', done);
    s.on('error', done);
  });
}

/** Splits a raw HTTP/1.1 response into status, lower-cased headers and body. */
export function parseRaw(raw: string): { status: number; headers: Record<string, string>; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  const head = end < 0 ? raw : raw.slice(0, end);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers, body: end < 0 ? '' : raw.slice(end + 4) };
}

export interface Victim {
  readonly port: number;
  /** Connections accepted so far. */
  connections: number;
  /** Bytes received so far. */
  bytes: number;
  close(): Promise<void>;
}

/** A TCP server that nobody should ever reach: it counts connections and bytes, and answers nothing. */
export async function victimServer(): Promise<Victim> {
  const sockets = new Set<Socket>();
  const v: Victim = { port: 0, connections: 0, bytes: 0, close: async () => {} };
  const server = net.createServer((s) => {
    v.connections++;
    sockets.add(s);
    s.on('data', (c: Buffer) => (v.bytes += c.length));
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  Object.assign(v, {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
  return v;
}
