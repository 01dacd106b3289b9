// Credential custody: the sidecar holds the Twilio and Vapi secrets (from the environment or a
// `*_FILE`), injects them when the app sends no Authorization, keeps an app-sent one unless the
// policy says `replace`, and never lets a secret out: not in logs, /metrics, `validate` output
// or error bodies.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, request, startProxy, type TestProxy } from '../support/proxy.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ACCOUNT_SID = 'AC11111111111111111111111111111111';
const AUTH_TOKEN = 'tok_f00dfeedc0ffee0123456789abcdef01';
const API_KEY_SID = 'SK22222222222222222222222222222222';
const API_KEY_SECRET = 'sec_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d';
const VAPI_KEY = 'vapi-3f1c2e4d-5b6a-4789-8abc-def012345678';
const REDIS_PASSWORD = 'redis-pw-6e1d2c3b4a59';
const APP_AUTH = `Basic ${Buffer.from('ACapp:app-own-token').toString('base64')}`;

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const messages = `/twilio/2010-04-01/Accounts/${ACCOUNT_SID}/Messages.json`;
const form = { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'To=%2B15558675310&From=%2B15017122661&Body=hi' };

/** Every form a secret could leak in: raw, and inside an encoded Authorization value. */
function secretForms(): string[] {
  return [
    AUTH_TOKEN,
    API_KEY_SECRET,
    VAPI_KEY,
    REDIS_PASSWORD,
    basic(ACCOUNT_SID, AUTH_TOKEN).slice(6),
    basic(API_KEY_SID, API_KEY_SECRET).slice(6),
    Buffer.from(AUTH_TOKEN).toString('base64').slice(0, 24),
    Buffer.from(API_KEY_SECRET).toString('base64').slice(0, 24),
  ];
}
function expectNoSecret(text: string, where: string): void {
  for (const s of secretForms()) expect(text.includes(s), `${where} contains a secret (${s.slice(0, 6)}…)`).toBe(false);
}

async function deadPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('credential injection', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, dir: string;
  const proxies: TestProxy[] = [];
  const up = async (env: Record<string, string>, policy = DEFAULT_POLICY) => {
    const p = await startProxy({ TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url, ...env }, policy);
    proxies.push(p);
    return p;
  };
  beforeAll(async () => {
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
    dir = mkdtempSync(join(tmpdir(), 'bw-creds-'));
  });
  afterAll(async () => {
    await Promise.allSettled(proxies.map((p) => p.close()));
    await twilio?.close();
    await vapi?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('injects Basic from TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN and Bearer from VAPI_API_KEY', async () => {
    const p = await up({ TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: AUTH_TOKEN, VAPI_API_KEY: VAPI_KEY });
    expect((await request(p.proxyPort, 'POST', messages, form)).status).toBe(200);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, AUTH_TOKEN));
    expect((await request(p.proxyPort, 'GET', '/vapi/call')).status).toBe(200);
    expect(vapi.seen.at(-1)?.headers.authorization).toBe(`Bearer ${VAPI_KEY}`);
  });

  it('prefers an API key SID + secret over the account auth token', async () => {
    const p = await up({
      TWILIO_ACCOUNT_SID: ACCOUNT_SID,
      TWILIO_AUTH_TOKEN: AUTH_TOKEN,
      TWILIO_API_KEY_SID: API_KEY_SID,
      TWILIO_API_KEY_SECRET: API_KEY_SECRET,
    });
    expect((await request(p.proxyPort, 'POST', messages, form)).status).toBe(200);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(API_KEY_SID, API_KEY_SECRET));
  });

  it('reads each secret from a *_FILE path (trailing newline dropped)', async () => {
    const file = (name: string, value: string) => {
      const f = join(dir, name);
      writeFileSync(f, `${value}\n`, { mode: 0o600 });
      return f;
    };
    const p = await up({
      TWILIO_ACCOUNT_SID_FILE: file('sid', ACCOUNT_SID),
      TWILIO_AUTH_TOKEN_FILE: file('token', AUTH_TOKEN),
      VAPI_API_KEY_FILE: file('vapi', VAPI_KEY),
    });
    await request(p.proxyPort, 'POST', messages, form);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, AUTH_TOKEN));
    await request(p.proxyPort, 'GET', '/vapi/call');
    expect(vapi.seen.at(-1)?.headers.authorization).toBe(`Bearer ${VAPI_KEY}`);

    const q = await up({
      TWILIO_ACCOUNT_SID: ACCOUNT_SID,
      TWILIO_AUTH_TOKEN: AUTH_TOKEN,
      TWILIO_API_KEY_SID_FILE: file('keysid', API_KEY_SID),
      TWILIO_API_KEY_SECRET_FILE: file('keysecret', API_KEY_SECRET),
    });
    await request(q.proxyPort, 'POST', messages, form);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(API_KEY_SID, API_KEY_SECRET));
  });

  it('takes a secret that reads as a YAML number or boolean as the string it is', async () => {
    // An auth token is 32 hex digits and can be all digits; a Vapi-style key could read as hex.
    const digits = '12345678901234567890123456789012';
    const p = await up({ TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: digits, VAPI_API_KEY: '0x1234' });
    await request(p.proxyPort, 'POST', messages, form);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, digits));
    await request(p.proxyPort, 'GET', '/vapi/call');
    expect(vapi.seen.at(-1)?.headers.authorization).toBe('Bearer 0x1234');
  });

  it('refuses a policy whose *_FILE cannot be read, naming the variable but not the content', async () => {
    await expect(up({ TWILIO_AUTH_TOKEN_FILE: join(dir, 'missing'), TWILIO_ACCOUNT_SID: ACCOUNT_SID })).rejects.toThrow(
      /TWILIO_AUTH_TOKEN_FILE: cannot read .*ENOENT/,
    );
  });

  it('keeps an app-sent Authorization', async () => {
    const p = await up({ TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: AUTH_TOKEN, VAPI_API_KEY: VAPI_KEY });
    await request(p.proxyPort, 'POST', messages, { ...form, headers: { ...form.headers, authorization: APP_AUTH } });
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(APP_AUTH);
    await request(p.proxyPort, 'GET', '/vapi/call', { headers: { authorization: 'Bearer app-own-key' } });
    expect(vapi.seen.at(-1)?.headers.authorization).toBe('Bearer app-own-key');
  });

  it('replaces an app-sent Authorization when the policy says credentials.replace: true', async () => {
    const policy = DEFAULT_POLICY.replace('      type: basic ', '      replace: true\n      type: basic ').replace(
      '      type: bearer\n',
      '      type: bearer\n      replace: true\n',
    );
    expect(policy.match(/replace: true/g)).toHaveLength(2);
    const p = await up({ TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: AUTH_TOKEN, VAPI_API_KEY: VAPI_KEY }, policy);
    await request(p.proxyPort, 'POST', messages, { ...form, headers: { ...form.headers, authorization: APP_AUTH } });
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, AUTH_TOKEN));
    await request(p.proxyPort, 'GET', '/vapi/call', { headers: { authorization: 'Bearer app-own-key' } });
    expect(vapi.seen.at(-1)?.headers.authorization).toBe(`Bearer ${VAPI_KEY}`);
  });

  it('replaces the placeholder secret `breakwater` with the held credentials (SPEC)', async () => {
    const p = await up({ TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: AUTH_TOKEN, VAPI_API_KEY: VAPI_KEY });
    const r = await request(p.proxyPort, 'POST', messages, { ...form, headers: { ...form.headers, authorization: basic(ACCOUNT_SID, 'breakwater') } });
    expect(r.status).toBe(200);
    expect(twilio.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, AUTH_TOKEN));
    expect((await request(p.proxyPort, 'GET', '/vapi/call', { headers: { authorization: 'Bearer breakwater' } })).status).toBe(200);
    expect(vapi.seen.at(-1)?.headers.authorization).toBe(`Bearer ${VAPI_KEY}`);
  });

  it('refuses the placeholder with 401 credentials_missing, never sending it, when nothing is held', async () => {
    const p = await up({});
    const before = twilio.seen.length + vapi.seen.length;
    const t = await request(p.proxyPort, 'POST', messages, { ...form, headers: { ...form.headers, authorization: basic(ACCOUNT_SID, 'breakwater') } });
    const v = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { authorization: 'Bearer breakwater' } });
    for (const r of [t, v]) {
      expect(r.status).toBe(401);
      expect(r.headers['x-breakwater-error']).toBe('credentials_missing');
      expect(JSON.parse(r.text)).toMatchObject({ code: 'credentials_missing', status: 401 });
    }
    expect(twilio.seen.length + vapi.seen.length).toBe(before);
  });

  it('forwards no Authorization when no credentials are configured', async () => {
    const p = await up({});
    await request(p.proxyPort, 'GET', '/vapi/call');
    expect(vapi.seen.at(-1)?.headers.authorization).toBeUndefined();
  });
});

describe('secrets never leave the sidecar', () => {
  let twilio: FakeUpstream, p: TestProxy, dead: TestProxy;
  const env = {
    TWILIO_ACCOUNT_SID: ACCOUNT_SID,
    TWILIO_AUTH_TOKEN: AUTH_TOKEN,
    TWILIO_API_KEY_SID: API_KEY_SID,
    TWILIO_API_KEY_SECRET: API_KEY_SECRET,
    VAPI_API_KEY: VAPI_KEY,
    LOG_LEVEL: 'trace',
  };
  beforeAll(async () => {
    twilio = await fakeUpstream('twilio');
    p = await startProxy({ ...env, TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: twilio.url });
    const port = await deadPort();
    dead = await startProxy({ ...env, TWILIO_BASE_URL: `http://127.0.0.1:${port}`, VAPI_BASE_URL: `http://127.0.0.1:${port}` });
  });
  afterAll(async () => {
    await p?.close();
    await dead?.close();
    await twilio?.close();
  });

  it('keeps them out of logs, /metrics and error bodies on success and failure paths', async () => {
    const bodies: string[] = [];
    // Success, an upstream 5xx, a 429, a hang cut by the client, and proxy-made refusals.
    bodies.push((await request(p.proxyPort, 'POST', messages, form)).text);
    twilio.mode = 'fail';
    bodies.push((await request(p.proxyPort, 'GET', messages)).text);
    twilio.mode = '429';
    bodies.push((await request(p.proxyPort, 'POST', messages, form)).text);
    bodies.push((await request(p.proxyPort, 'POST', messages, form)).text); // held: upstream_rate_limited
    twilio.mode = 'ok';
    bodies.push((await request(p.proxyPort, 'GET', '/vapi/call', { headers: { authorization: 'Bearer app-own-key' } })).text);
    bodies.push((await request(p.proxyPort, 'GET', '/nowhere')).text);
    const badKey = await request(p.proxyPort, 'POST', messages, {
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'idempotency-key': 'k'.repeat(300) },
      body: 'To=1',
    });
    expect(badKey.headers['x-breakwater-error']).toBe('bad_request');
    bodies.push(badKey.text);

    // Dead upstream: connection refused, retried, then the breaker opens.
    for (let i = 0; i < 4; i++) bodies.push((await request(dead.proxyPort, 'POST', messages, form)).text);
    for (let i = 0; i < 4; i++) bodies.push((await request(dead.proxyPort, 'GET', '/vapi/call/abc')).text);
    const deadLast = await request(dead.proxyPort, 'GET', '/vapi/call/abc');
    expect(deadLast.headers['x-breakwater-error']).toBe('circuit_open');
    expect(bodies.some((b) => b.includes('upstream_unavailable'))).toBe(true);

    for (const [i, b] of bodies.entries()) expectNoSecret(b, `error body ${i}`);
    const logs = p.logs.join('') + dead.logs.join('');
    expect(logs).toContain('"msg":"request"');
    expect(logs).toContain('circuit breaker');
    expectNoSecret(logs, 'logs');
    expectNoSecret(await metricsText(p.adminPort), '/metrics');
    expectNoSecret(await metricsText(dead.adminPort), '/metrics (dead upstream)');
    const breakers = await request(dead.adminPort, 'GET', '/breakers');
    expectNoSecret(breakers.text, '/breakers');
  });

  it('keeps them out of `breakwater validate` output', async () => {
    const out = await runCli(['validate'], { ...env, RATE_LIMIT_STORE: 'redis', REDIS_URL: `redis://default:${REDIS_PASSWORD}@127.0.0.1:6379/0` });
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('OK');
    expect(out.stdout).toMatch(/basic user=set password=set/);
    expect(out.stdout).toMatch(/bearer token=set/);
    expect(out.stdout).toContain('redis://default:***@127.0.0.1:6379/0');
    expectNoSecret(out.stdout + out.stderr, 'validate output');

    const digits = '98765432109876543210987654321098';
    const numeric = await runCli(['validate'], { TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: digits });
    expect(numeric.code).toBe(0);
    expect(numeric.stdout + numeric.stderr).not.toMatch(/98765|9\.87/);
  });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/breakwater.js', ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
