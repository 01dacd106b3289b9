// Breakwater holds the Twilio auth token and the Vapi API key, and sees the app's Authorization
// headers. None of them may appear in any log line, at any level, on success or on any error
// path, in-process and from the real CLI's stdout; nor in anything the proxy answers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, request, startProxy, type TestProxy } from '../support/proxy.js';
import { runCli, startCli } from '../support/processes.js';
import { freePort, waitFor } from '../support/wait.mjs';

const SID = 'AC0123456789abcdef0123456789abcdef';
const TOKEN = 'twilio-auth-token-7d1e9c4b2a';
const VAPI_KEY = 'vapi-private-key-3f8a6e1d5c';
const APP_BEARER = 'app-bearer-secret-94b2e7';
const APP_BASIC_USER = 'ACappuser000000000000000000000000';
const APP_BASIC_PASS = 'app-basic-password-c0ffee';
const REDIS_PASSWORD = 'redis-pass-5a5a5a';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const INJECTED_BASIC = b64(`${SID}:${TOKEN}`);
const APP_BASIC = b64(`${APP_BASIC_USER}:${APP_BASIC_PASS}`);

/** Every form in which a secret could leak: raw, inside Basic credentials, URL-encoded. */
const FORBIDDEN = [TOKEN, VAPI_KEY, APP_BEARER, APP_BASIC_PASS, INJECTED_BASIC, APP_BASIC, REDIS_PASSWORD, encodeURIComponent(REDIS_PASSWORD)];

function expectNoSecrets(text: string, where: string): void {
  for (const s of FORBIDDEN) expect(text.includes(s), `${where} contains ${s}`).toBe(false);
}

/** Drives the proxy through success and every error path that has a request with credentials in it. */
async function exercise(port: number, adminPort: number, twilio: FakeUpstream, vapi: FakeUpstream): Promise<string[]> {
  const answers: string[] = [];
  const keep = async (p: Promise<{ status: number; text: string; headers: Record<string, unknown> }>) => {
    const r = await p;
    answers.push(`${r.status} ${JSON.stringify(r.headers)} ${r.text}`);
    return r;
  };
  const appBearer = { authorization: `Bearer ${APP_BEARER}` };
  const appBasic = { authorization: `Basic ${APP_BASIC}` };
  const form = { 'content-type': 'application/x-www-form-urlencoded' };

  // Success, with injected and with app-sent credentials.
  await keep(request(port, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json'));
  await keep(request(port, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json', { headers: appBasic }));
  await keep(request(port, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{"assistantId":"a"}' }));
  await keep(request(port, 'POST', '/vapi/call', { headers: { ...appBearer, 'content-type': 'application/json' }, body: '{}' }));
  // Proxy-made errors that never reach an upstream.
  await keep(request(port, 'GET', '/unknown/x', { headers: appBearer }));
  await keep(request(port, 'GET', '/twilio/../x', { headers: appBasic }));
  await keep(
    request(port, 'POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', {
      headers: { ...appBasic, 'content-length': String(11 * 1024 * 1024) },
      body: 'x',
    }).catch(() => ({ status: 0, text: '', headers: {} })),
  );
  // Upstream failures: reset, 5xx (opens the breaker), then circuit_open.
  twilio.mode = 'reset';
  await keep(request(port, 'POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', { headers: form, body: 'To=%2B15555550100&Body=hi' }));
  twilio.mode = 'fail';
  for (let i = 0; i < 3; i++)
    await keep(request(port, 'POST', '/twilio/2010-04-01/Accounts/AC1/Calls.json', { headers: { ...appBasic, ...form }, body: 'To=x' }));
  await keep(request(port, 'GET', '/twilio/2010-04-01/Accounts/AC1/Calls.json'));
  twilio.mode = 'ok';
  // An upstream 429 starts a hold keyed on the Vapi API key: the key must be logged hashed.
  vapi.mode = '429';
  vapi.retryAfter = '1';
  await keep(request(port, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{}' }));
  await keep(request(port, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{}' }));
  vapi.mode = 'malformed';
  await keep(request(port, 'GET', '/vapi/call/1', { headers: appBearer }));
  vapi.mode = 'ok';
  vapi.retryAfter = undefined;
  // The admin listener's views.
  await keep(request(adminPort, 'GET', '/breakers'));
  await keep(request(adminPort, 'GET', '/metrics'));
  await keep(request(adminPort, 'POST', '/breakers/twilio/reset', { headers: { 'x-breakwater-admin': '1' } }));
  return answers;
}

describe('keeps secrets out of logs', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream;
  beforeAll(async () => {
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
  });
  afterAll(async () => {
    await twilio.close();
    await vapi.close();
  });

  const env = () => ({
    TWILIO_BASE_URL: twilio.url,
    VAPI_BASE_URL: vapi.url,
    TWILIO_ACCOUNT_SID: SID,
    TWILIO_AUTH_TOKEN: TOKEN,
    VAPI_API_KEY: VAPI_KEY,
    RATE_LIMIT_PER_MINUTE: '100000',
  });

  describe('in-process, at trace level', () => {
    let p: TestProxy;
    let answers: string[];
    beforeAll(async () => {
      twilio.seen.length = 0;
      vapi.seen.length = 0;
      p = await startProxy({ ...env(), LOG_LEVEL: 'trace' });
      answers = await exercise(p.proxyPort, p.adminPort, twilio, vapi);
    });
    afterAll(async () => {
      await p.close();
      twilio.mode = 'ok';
      vapi.mode = 'ok';
    });

    it("really used the secrets: injected when the app sent none, the app's own kept otherwise", () => {
      const auths = [...twilio.seen, ...vapi.seen].map((s) => s.headers.authorization);
      expect(auths).toContain(`Basic ${INJECTED_BASIC}`);
      expect(auths).toContain(`Basic ${APP_BASIC}`);
      expect(auths).toContain(`Bearer ${VAPI_KEY}`);
      expect(auths).toContain(`Bearer ${APP_BEARER}`);
    });

    it('went through the error paths it claims to (so the log really covers them)', () => {
      const outcomes = new Set(
        p
          .logLines()
          .filter((l) => l.msg === 'request')
          .map((l) => l.outcome),
      );
      for (const o of ['forwarded', 'no_route', 'bad_request', 'upstream_unavailable', 'circuit_open']) expect(outcomes, o).toContain(o);
      expect(p.logLines().some((l) => String(l.msg).includes('circuit breaker'))).toBe(true);
    });

    it('writes no secret in any log line', () => {
      expect(p.logs.length).toBeGreaterThan(10);
      expectNoSecrets(p.logs.join(''), 'log');
    });

    it('sends no secret back to the app or out through the admin listener', () => {
      expectNoSecrets(answers.join('\n'), 'responses');
    });
  });

  it('the real CLI writes no secret to stdout or stderr, including a Redis password on connection errors', async () => {
    const redisPort = await freePort();
    const cli = await startCli({
      ...env(),
      LOG_LEVEL: 'trace',
      RATE_LIMIT_STORE: 'redis',
      REDIS_URL: `redis://default:${REDIS_PASSWORD}@127.0.0.1:${redisPort}/0`,
    });
    try {
      const answers = await exercise(cli.proxyPort, cli.adminPort, twilio, vapi);
      // Let asynchronous log writes (and Redis reconnect errors) land before reading stdout.
      await waitFor(() => cli.logLines().filter((l) => l.msg === 'request').length >= 10, { timeoutMs: 5000 });
      const out = cli.output();
      expect(cli.logLines().filter((l) => l.msg === 'request').length).toBeGreaterThanOrEqual(10);
      expectNoSecrets(out, 'CLI output');
      expectNoSecrets(answers.join('\n'), 'responses');
    } finally {
      twilio.mode = 'ok';
      vapi.mode = 'ok';
      expect(await cli.stop()).toBe(0);
    }
    expectNoSecrets(cli.output(), 'CLI output after shutdown');
  });

  it('a policy file with inline secrets does not leak them when it is refused at start', async () => {
    const text = DEFAULT_POLICY.replace('token: ${VAPI_API_KEY:-}', `token: ${VAPI_KEY}\n      colour: blue`);
    expect(text).not.toBe(DEFAULT_POLICY);
    const p = startProxy({ ...env() }, text);
    await expect(p).rejects.toThrow(/colour/);
    await p.catch((err: Error) => expectNoSecrets(err.message, 'policy error'));
  });

  it('validate accepts an all-digit secret as a string and prints it only as "set"', async () => {
    const digits = '80417735260931187745';
    const r = await runCli(['validate'], { VAPI_API_KEY: digits, TWILIO_ACCOUNT_SID: SID, TWILIO_AUTH_TOKEN: '55501234567890123456' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/token=set/);
    expect(r.stdout + r.stderr).not.toContain(digits);
    expect(r.stdout + r.stderr).not.toContain('55501234567890123456');
  });
});
