// Graceful drain, against the real CLI: SIGTERM turns readiness to 503 and stops accepting,
// every request already accepted completes, and the process exits 0. A second signal during
// the drain exits at once with a non-zero code.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type Answer } from '../support/proxy.js';
import { ROOT, startCli, type Cli } from './spawned-cli.js';
import { waitFor } from '../support/wait.mjs';

const ACCOUNT = 'AC0123456789abcdef0123456789abcdef';
const IN_FLIGHT = 12;

/** Holds every request the fake upstream receives until `release()`. */
function holdAll(up: FakeUpstream) {
  const held: ServerResponse[] = [];
  up.handler = (req, res) => held.push(Object.assign(res, { url: req.url }));
  return {
    held,
    release: () => {
      for (const res of held.splice(0)) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: true }));
      }
    },
  };
}

/** Sends a mix of Twilio creates and Vapi reads, each from its own client (no rate limit hit). */
function load(cli: Cli, n: number): Promise<Answer>[] {
  return Array.from({ length: n }, (_, i) =>
    i % 2 === 0
      ? request(cli.proxyPort, 'POST', `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`, {
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-client-id': `c${i}` },
          body: `To=%2B1555000${String(i).padStart(4, '0')}&From=%2B15017122661&Body=drain`,
          timeoutMs: 25_000,
        })
      : request(cli.proxyPort, 'GET', `/vapi/call/${i}`, { headers: { 'x-client-id': `c${i}` }, timeoutMs: 25_000 }),
  );
}

describe('graceful drain on SIGTERM', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, dir: string, file: string;
  const clis: Cli[] = [];
  beforeAll(async () => {
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
    dir = mkdtempSync(join(tmpdir(), 'bw-drain-'));
    file = join(dir, 'policy.yaml');
    copyFileSync(join(ROOT, 'config/policy.yaml'), file);
  });
  afterAll(async () => {
    for (const c of clis) c.kill();
    await twilio?.close();
    await vapi?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const launch = async () => {
    const cli = await startCli(file, { TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url });
    clis.push(cli);
    return cli;
  };

  it('goes unready, refuses new connections, completes every accepted request, exits 0', async () => {
    const cli = await launch();
    const t = holdAll(twilio);
    const v = holdAll(vapi);
    const answers = load(cli, IN_FLIGHT);
    expect(await waitFor(() => t.held.length + v.held.length === IN_FLIGHT || undefined, { timeoutMs: 10_000 })).toBeTruthy();
    expect((await request(cli.adminPort, 'GET', '/readyz')).status).toBe(200);

    cli.signal('SIGTERM');
    expect(await waitFor(async () => (await request(cli.adminPort, 'GET', '/readyz')).status === 503 || undefined, { timeoutMs: 10_000 })).toBeTruthy();
    expect(metricValue(await metricsText(cli.adminPort), 'breakwater_draining')).toBe(1);
    // The listener is closed: a new connection is refused rather than accepted and dropped.
    await expect(request(cli.proxyPort, 'GET', '/vapi/call')).rejects.toThrow(/ECONNREFUSED/);

    t.release();
    v.release();
    const results = await Promise.all(answers);
    expect(results.map((r) => r.status)).toEqual(Array(IN_FLIGHT).fill(200));
    expect(results.every((r) => r.json?.ok === true)).toBe(true);
    expect(await cli.exited).toBe(0);
    expect(cli.lines().some((l) => l.msg === 'drained; exiting')).toBe(true);
    // Each create reached Twilio exactly once.
    expect(twilio.seen.filter((s) => s.method === 'POST')).toHaveLength(IN_FLIGHT / 2);
  });

  it('exits at once, non-zero, on a second SIGTERM during the drain', async () => {
    // A long drain timeout: only the second signal can end this process early.
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('drainTimeout: 25');
    writeFileSync(file, text.replace('drainTimeout: 25', 'drainTimeout: 120'));
    const cli = await launch();
    const t = holdAll(twilio);
    const v = holdAll(vapi);
    const answers = load(cli, 3).map((p) => p.catch((e: Error) => e));
    expect(await waitFor(() => t.held.length + v.held.length === 3 || undefined, { timeoutMs: 10_000 })).toBeTruthy();

    cli.signal('SIGTERM');
    expect(await waitFor(async () => (await request(cli.adminPort, 'GET', '/readyz')).status === 503 || undefined, { timeoutMs: 10_000 })).toBeTruthy();
    cli.signal('SIGTERM');
    const code = await Promise.race([cli.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 15_000).unref())]);
    expect(code).not.toBe('still running');
    expect(code).not.toBe(0);
    expect(code).toBe(1);
    expect(cli.lines().some((l) => /second signal/.test(String(l.msg)))).toBe(true);
    // The cut requests fail on the client side; nothing is left hanging.
    t.release();
    v.release();
    await Promise.all(answers);
  });
});
