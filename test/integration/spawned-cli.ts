// Runs the real CLI (`node bin/breakwater.js start --config FILE`) as a child process in its own
// process group, for the behaviours that only a process has: signals, reload from disk, exit
// codes. Ports are 0; the listening log line tells which ones were bound. Needs `npm run build`.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../support/wait.mjs';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Cli {
  readonly child: ChildProcess;
  readonly proxyPort: number;
  readonly adminPort: number;
  /** Parsed JSON log lines so far (stdout). */
  lines(): Record<string, any>[];
  stderr(): string;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  signal(sig: NodeJS.Signals): void;
  /** Kills the whole process group; safe to call twice. */
  kill(): void;
}

/** `nodeArgs` go before the script (e.g. `--import` of a preload). */
export async function startCli(config: string, env: Record<string, string>, nodeArgs: string[] = []): Promise<Cli> {
  const child = spawn(process.execPath, [...nodeArgs, 'bin/breakwater.js', 'start', '--config', config], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  // 'close', not 'exit': 'exit' can come before the last of stdout has been read, and tests read
  // the log lines a process wrote on its way out.
  const exited = new Promise<number | string>((resolve) => child.on('close', (code, sig) => resolve(code ?? sig ?? -1)));
  let alive = true;
  void exited.then(() => (alive = false));
  const lines = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, any>];
        } catch {
          return [];
        }
      });
  const kill = () => {
    if (!alive || child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const listening = await waitFor(() => lines().find((l) => l.msg === 'breakwater listening'), { timeoutMs: 15_000, exited });
  if (!listening) {
    kill();
    throw new Error(alive ? `breakwater did not log "listening" within 15 s: ${err}` : `exited early: ${err}`);
  }
  const port = (addr: string) => Number(addr.slice(addr.lastIndexOf(':') + 1));
  return {
    child,
    proxyPort: port(listening.proxy as string),
    adminPort: port(listening.admin as string),
    lines,
    stderr: () => err,
    exited,
    signal: (sig) => child.kill(sig),
    kill,
  };
}
