// The status page's data without a browser: /status.json's rolling figures and recent errors,
// the page's headers (CSP, no external assets), and `breakwater status` against a real process.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { RecentErrors, RollingStats } from '../../src/status/stats.js';
import { ROOT } from '../integration/spawned-cli.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const run = promisify(execFile);
const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

describe('rolling stats (pure, injected clock)', () => {
  it('counts the last 60 seconds only, with p50/p99 from the latency bins', () => {
    let now = 1_000_000;
    const s = new RollingStats(() => now);
    for (let i = 0; i < 98; i++) s.record('twilio', 'send', { status: 200, outcome: 'forwarded', seconds: 0.01 });
    s.record('twilio', 'send', { status: 503, outcome: 'circuit_open', seconds: 0.5 });
    s.record('twilio', 'send', { status: 429, outcome: 'rate_limited', seconds: 0.5 });
    const [w] = s.window();
    expect(w).toMatchObject({ upstream: 'twilio', route: 'send', requests: 100, errors: 1, errorPct: 1, rateLimited: 1 });
    expect(w!.p50Ms).toBeGreaterThanOrEqual(10);
    expect(w!.p50Ms).toBeLessThan(13);
    expect(w!.p99Ms).toBeGreaterThanOrEqual(500);
    expect(w!.p99Ms).toBeLessThan(630);
    now += 59_000;
    expect(s.window()[0]!.requests).toBe(100);
    now += 1_000;
    expect(s.window()).toEqual([]);
  });

  it('keeps the newest 50 errors and masks phone numbers in causes', () => {
    const r = new RecentErrors(50);
    for (let i = 0; i < 60; i++)
      r.push({ at: 't', requestId: `id${i}`, upstream: 'u', route: 'r', method: 'POST', status: 503, code: 'circuit_open', cause: 'To=+15558675310 refused' });
    const l = r.list();
    expect(l).toHaveLength(50);
    expect(l[0]!.requestId).toBe('id59');
    expect(l[49]!.requestId).toBe('id10');
    expect(l[0]!.cause).not.toContain('+1555867');
    expect(l[0]!.cause).toContain('5310');
  });
});

describe('status page and summary', () => {
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, p } = harness = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '30', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
  });
  afterAll(() => harness?.close());

  it('GET / is HTML with a strict nonce CSP and no external assets', async () => {
    const r = await request(p.adminPort, 'GET', '/');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
    const csp = String(r.headers['content-security-policy']);
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
    expect(nonce).toBeTruthy();
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(r.text).toContain(`<script nonce="${nonce}">`);
    expect(r.text).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
    // Server-rendered: the breakers are there before any script runs.
    expect(r.text).toContain('data-upstream="twilio"');
    expect(r.text).toContain('data-upstream="vapi"');
    const again = await request(p.adminPort, 'GET', '/');
    expect(again.headers['content-security-policy']).not.toBe(csp);
  });

  it('/status.json has breakers, last-minute traffic per route and recent errors with request ids', async () => {
    for (let i = 0; i < 5; i++) expect((await request(p.proxyPort, 'GET', '/vapi/call')).status).toBe(200);
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) await request(p.proxyPort, 'POST', SEND, { headers: { ...form, 'x-request-id': `fail-${i}` }, body: 'To=%2B15558675310' });
    const refused = await request(p.proxyPort, 'POST', SEND, { headers: { ...form, 'x-request-id': 'refused-by-breaker' }, body: 'To=x' });
    expect(refused.headers['x-breakwater-error']).toBe('circuit_open');
    twilio.mode = 'ok';
    const s = (await request(p.adminPort, 'GET', '/status.json')).json;
    const tw = s.breakers.find((b: { upstream: string }) => b.upstream === 'twilio');
    expect(tw).toMatchObject({ state: 'open', forced: false, trips: 1, failures: 3 });
    expect(tw.openForMs).toBeGreaterThan(20_000);
    const vapiTraffic = s.traffic.find((t: { upstream: string }) => t.upstream === 'vapi');
    expect(vapiTraffic).toMatchObject({ requests: 5, errors: 0, errorPct: 0 });
    expect(vapiTraffic.p50Ms).toBeGreaterThan(0);
    const twTraffic = s.traffic.find((t: { upstream: string }) => t.upstream === 'twilio');
    expect(twTraffic).toMatchObject({ requests: 4 });
    expect(twTraffic.errors).toBeGreaterThanOrEqual(1);
    expect(s.recentErrors[0]).toMatchObject({ requestId: 'refused-by-breaker', code: 'circuit_open', status: 503, upstream: 'twilio' });
    expect(JSON.stringify(s)).not.toContain('15558675310');
    expect(s).toMatchObject({ store: 'memory', storeFallback: false, lastReload: null, policyVersion: expect.stringMatching(/^[0-9a-f]{12}$/) });
    expect((await request(p.adminPort, 'POST', '/breakers/twilio/reset', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
  });

  it('a refused reload shows in the summary, and the policy version stays', async () => {
    const before = (await request(p.adminPort, 'GET', '/status.json')).json;
    // The test proxy's config path is '(test)': reading it fails, as a bad policy file would.
    expect(await p.reload()).toBe(false);
    const after = (await request(p.adminPort, 'GET', '/status.json')).json;
    expect(after.lastReload).toMatchObject({ ok: false, detail: expect.any(String) });
    expect(after.policyVersion).toBe(before.policyVersion);
    expect((await request(p.adminPort, 'GET', '/')).text).toContain('last reload refused');
  });

  it('`breakwater status --admin URL` prints the same summary', async () => {
    const { stdout } = await run(process.execPath, ['bin/breakwater.js', 'status', '--admin', `http://127.0.0.1:${p.adminPort}`], {
      cwd: ROOT,
      timeout: 10_000,
    });
    expect(stdout).toMatch(/^breakwater \S+ {2}store=memory {2}ready/);
    expect(stdout).toMatch(/twilio\s+CLOSED/);
    expect(stdout).toMatch(/vapi\s+CLOSED/);
    expect(stdout).toMatch(/vapi\/\S+\s+[\d.]+\s+0\s/);
    expect(stdout).toContain('refused-by-breaker');
    expect(stdout).toMatch(/^policy [0-9a-f]{12} {2}last reload REFUSED/m);
  });

  it('`breakwater status --watch` redraws every second', async () => {
    const child = execFile(process.execPath, ['bin/breakwater.js', 'status', '--watch', '--admin', `http://127.0.0.1:${p.adminPort}`], {
      cwd: ROOT,
      timeout: 10_000,
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    const deadline = Date.now() + 8000;
    while ((out.match(/^breakwater /gm) ?? []).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const closed = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    child.kill('SIGINT');
    expect((out.match(/^breakwater /gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(await closed).toBe(0);
  });

  it('an upstream 429 hold shows with its time left', async () => {
    twilio.mode = '429';
    twilio.retryAfter = '20';
    await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
    twilio.mode = 'ok';
    twilio.retryAfter = undefined;
    const tw = (await request(p.adminPort, 'GET', '/status.json')).json.breakers.find((b: { upstream: string }) => b.upstream === 'twilio');
    expect(tw.holdsActive).toBe(1);
    expect(tw.holdLeftMs).toBeGreaterThan(10_000);
    expect(tw.holdLeftMs).toBeLessThanOrEqual(30_000); // the hold adds a little jitter
    expect(tw.state).toBe('closed');
  });

  it('`breakwater status` exits 1 when the admin listener is not there', async () => {
    const err = await run(process.execPath, ['bin/breakwater.js', 'status', '--admin', 'http://127.0.0.1:1'], { cwd: ROOT, timeout: 10_000 }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((err as { code: number }).code).toBe(1);
    expect((err as { stderr: string }).stderr).toContain('cannot read status');
  });
});
