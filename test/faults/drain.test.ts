// Drain under load: the real CLI (child process) serves 32 concurrent keep-alive clients against
// an upstream that takes ~50 ms, gets SIGTERM mid-run, and must finish every request it accepted.
// "Accepted" is read from the proxy's own access log (one line per request it handled, with the
// request id the client chose), so the test can tell a request that was accepted and then lost
// (failure) from one that was never read because the connection was already closing (refused).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { LOCAL } from './support.js';
import { freePort, waitFor } from '../support/wait.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MESSAGES = '/twilio/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json';
const CLIENTS = 32;
const LOAD_BEFORE_SIGTERM_MS = 1000;
const MAX_AFTER_SIGTERM_MS = 10_000;
const MAX_PER_CLIENT = 2000;

/** Newest modification time under a folder (recursively). */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** The CLI runs from dist/: rebuild it when src/ is newer. */
function ensureBuilt(): void {
  const cli = join(ROOT, 'dist', 'cli.js');
  if (existsSync(cli) && statSync(cli).mtimeMs >= newest(join(ROOT, 'src'))) return;
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')], {
    cwd: ROOT,
    stdio: 'ignore',
    timeout: 120_000,
  });
}

interface Outcome {
  id: string;
  status?: number;
  error?: string;
  reused: boolean;
  afterSigterm: boolean;
}

function send(agent: http.Agent, port: number, id: string, afterSigterm: () => boolean): Promise<Outcome> {
  return new Promise((resolve) => {
    let reused = false;
    const req = http.request(
      { host: LOCAL, port, method: 'GET', path: MESSAGES, agent, headers: { 'x-request-id': id, 'x-client-id': id.split('-')[1]! } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ id, status: res.statusCode, reused, afterSigterm: afterSigterm() }));
        res.on('error', (e: NodeJS.ErrnoException) => resolve({ id, error: e.code ?? e.message, reused, afterSigterm: afterSigterm() }));
      },
    );
    req.on('socket', () => (reused = req.reusedSocket));
    req.setTimeout(15_000, () => req.destroy(new Error('client timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ id, error: e.code ?? e.message, reused, afterSigterm: afterSigterm() }));
    req.end();
  });
}

describe('drain under load (real CLI, SIGTERM mid-run)', () => {
  let up: FakeUpstream;
  let child: ChildProcess;
  let stdout = '';
  let stderr = '';

  beforeAll(async () => {
    ensureBuilt();
    up = await fakeUpstream('twilio');
    up.mode = 'slow';
    up.delayMs = 50;
  }, 150_000);

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await up.close();
  });

  it('finishes every accepted request, refuses the rest cleanly, and exits 0', async () => {
    const proxyPort = await freePort();
    const adminPort = await freePort();
    child = spawn(process.execPath, [join(ROOT, 'bin', 'breakwater.js'), 'start'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        PROXY_HOST: LOCAL,
        PROXY_PORT: String(proxyPort),
        ADMIN_HOST: LOCAL,
        ADMIN_PORT: String(adminPort),
        TWILIO_BASE_URL: up.url,
        VAPI_BASE_URL: up.url,
        RATE_LIMIT_PER_MINUTE: '100000000',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));

    const ready = await waitFor(
      () =>
        new Promise<boolean>((r) => {
          const q = http.get({ host: LOCAL, port: adminPort, path: '/readyz', agent: false }, (res) => {
            res.resume();
            r(res.statusCode === 200);
          });
          q.on('error', () => r(false));
        }),
      { timeoutMs: 20_000, everyMs: 100 },
    );
    expect(ready, `proxy did not become ready:\n${stderr}\n${stdout.slice(-2000)}`).toBe(true);

    let sigtermAt = 0;
    const afterSigterm = () => sigtermAt > 0;
    const outcomes: Outcome[] = [];
    const clients = Array.from({ length: CLIENTS }, async (_, c) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let n = 0; n < MAX_PER_CLIENT; n++) {
          if (sigtermAt > 0 && Date.now() - sigtermAt > MAX_AFTER_SIGTERM_MS) break;
          const o = await send(agent, proxyPort, `drain-${c}-${n}`, afterSigterm);
          outcomes.push(o);
          if (o.error === 'ECONNREFUSED') break; // the listener is gone: this client is done
        }
      } finally {
        agent.destroy();
      }
    });

    await new Promise((r) => setTimeout(r, LOAD_BEFORE_SIGTERM_MS));
    sigtermAt = Date.now();
    child.kill('SIGTERM');
    await Promise.all(clients);
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);

    // What the proxy says it handled: one access-log line per accepted request.
    const accepted = new Map<string, number>();
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('{')) continue;
      const l = JSON.parse(line) as { msg?: string; reqId?: string; status?: number };
      if (l.msg === 'request' && l.reqId?.startsWith('drain-')) accepted.set(l.reqId, l.status!);
    }
    const answered = outcomes.filter((o) => o.status !== undefined);
    const refusedAtConnect = outcomes.filter((o) => o.error === 'ECONNREFUSED');
    const broken = outcomes.filter((o) => o.error !== undefined && o.error !== 'ECONNREFUSED');
    const lostAfterAccept = broken.filter((o) => accepted.has(o.id) || up.seen.some((s) => s.headers['x-request-id'] === o.id));
    const notAnsweredButAccepted = [...accepted.keys()].filter((id) => !answered.some((o) => o.id === id));
    const figures = {
      sent: outcomes.length,
      sentAfterSigterm: outcomes.filter((o) => o.afterSigterm).length,
      answered: answered.length,
      answered200: answered.filter((o) => o.status === 200).length,
      answeredAfterSigterm: answered.filter((o) => o.afterSigterm).length,
      acceptedByProxy: accepted.size,
      refusedAtConnect: refusedAtConnect.length,
      closedBeforeRead: broken.length - lostAfterAccept.length,
      closedBeforeReadOnReusedSocket: broken.filter((o) => o.reused).length,
      lostAfterAccept: lostAfterAccept.length,
      exitCode: code,
    };
    console.log(`drain figures: ${JSON.stringify(figures)}`);

    expect(code, `exit: ${stderr}`).toBe(0);
    expect(figures.answered).toBeGreaterThan(CLIENTS); // real load was running when SIGTERM came
    expect(answered.filter((o) => o.status !== 200)).toEqual([]);
    expect(lostAfterAccept, 'requests the proxy accepted but the client never got an answer for').toEqual([]);
    expect(notAnsweredButAccepted).toEqual([]);
    // Every request the upstream saw was answered to its client.
    const answeredIds = new Set(answered.map((o) => o.id));
    expect(up.seen.filter((s) => !answeredIds.has(String(s.headers['x-request-id'])))).toEqual([]);
    // Every client ended because the listener closed (or its bound), none hung.
    expect(refusedAtConnect.length + broken.length).toBeGreaterThan(0);
  }, 60_000);
});
