// Staging parity: with the base URLs and host targets pointing at fakes, no request of any kind is
// dialled at a real provider host. The real CLI runs with a preload (test/support/no-egress.mjs)
// that refuses every non-loopback connect and every name lookup before a packet is sent, and
// writes each one down: the file must stay empty while host-routed requests (api, Verify, a
// regional and a typo'd *.twilio.com name, api.vapi.ai) and prefix requests carrying the
// provider's own Host all reach the fakes. The guard's own proof: without TWILIO_HOST_TARGET the
// same Verify request is a dial it catches, and refuses, so the network is never touched.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { request } from '../support/proxy.js';
import { ROOT, startCli, type Cli } from './spawned-cli.js';

const GUARD = ['--import', join(ROOT, 'test/support/no-egress.mjs')];
const SMS = 'To=%2B15555550100&From=%2B15555550199&Body=hi';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

describe('no request is dialled at a real provider host', () => {
  let dir: string;
  let twBase: FakeUpstream, twHosts: FakeUpstream, vaBase: FakeUpstream, vaHosts: FakeUpstream;
  const clis: Cli[] = [];
  const refusedIn = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bw-no-egress-'));
    [twBase, twHosts, vaBase, vaHosts] = await Promise.all([
      fakeUpstream('twilio'),
      fakeUpstream('twilio-hosts'),
      fakeUpstream('vapi'),
      fakeUpstream('vapi-hosts'),
    ]);
  });
  afterAll(async () => {
    for (const c of clis) c.kill();
    await Promise.all([twBase, twHosts, vaBase, vaHosts].map((u) => u?.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(log: string, env: Record<string, string>): Promise<Cli> {
    writeFileSync(log, '');
    const cli = await startCli(join(ROOT, 'config/policy.yaml'), { NO_EGRESS_LOG: log, RATE_LIMIT_PER_MINUTE: '1000', ...env }, GUARD);
    clis.push(cli);
    return cli;
  }

  it('with base URLs and host targets at fakes: every request reaches a fake, none is dialled elsewhere', async () => {
    const log = join(dir, 'staging.log');
    const cli = await start(log, { TWILIO_BASE_URL: twBase.url, VAPI_BASE_URL: vaBase.url, TWILIO_HOST_TARGET: twHosts.url, VAPI_HOST_TARGET: vaHosts.url });
    const send = (method: string, path: string, host: string, body?: string) =>
      request(cli.proxyPort, method, path, { headers: { host, ...(body === undefined ? {} : form) }, body });

    // Host-routed, as the Twilio SDK with a custom httpClient and apps keeping Vapi's host send them.
    const routed = [
      await send('GET', '/2010-04-01/Accounts/AC1/Messages.json', 'api.twilio.com'),
      await send('POST', '/2010-04-01/Accounts/AC1/Messages.json', 'api.twilio.com', SMS),
      await send('GET', '/v2/Services', 'verify.twilio.com'),
      await send('GET', '/v2/Services', 'verfy.twilio.com'), // a typo'd name: still only the target
      await send('POST', '/2010-04-01/Accounts/AC1/Messages.json', 'api.dublin.ie1.twilio.com', SMS),
      await send('GET', '/call', 'api.vapi.ai'),
    ];
    // Prefix routes carrying the provider's own Host: always the base URL.
    const prefixed = [
      await send('GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json', 'api.twilio.com'),
      await send('POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', 'api.twilio.com', SMS),
      await send('GET', '/vapi/call', 'api.vapi.ai'),
    ];
    // The path ran: every request was answered by a fake (its JSON echo), each by the right one.
    for (const r of [...routed, ...prefixed]) {
      expect(r.headers['x-breakwater-error']).toBeUndefined();
      expect(r.status).toBeLessThan(300);
    }
    expect(twHosts.seen.map((s) => s.headers.host)).toEqual([
      'api.twilio.com',
      'api.twilio.com',
      'verify.twilio.com',
      'verfy.twilio.com',
      'api.dublin.ie1.twilio.com',
    ]);
    expect(vaHosts.seen.map((s) => s.headers.host)).toEqual(['api.vapi.ai']);
    expect(twBase.seen).toHaveLength(2);
    expect(vaBase.seen).toHaveLength(1);
    // And nothing else was dialled or even looked up.
    expect(refusedIn(log)).toEqual([]);
  });

  it('the guard sees a real dial: without a host target, Verify would go to verify.twilio.com, and is refused first', async () => {
    const log = join(dir, 'no-target.log');
    const cli = await start(log, { TWILIO_BASE_URL: twBase.url, VAPI_BASE_URL: vaBase.url, UPSTREAM_TIMEOUT: '3' });
    const before = twBase.seen.length + twHosts.seen.length;
    const r = await request(cli.proxyPort, 'GET', '/v2/Services', { headers: { host: 'verify.twilio.com' } });
    expect(r.headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect(refusedIn(log)).toContain('connect verify.twilio.com:443');
    expect(twBase.seen.length + twHosts.seen.length).toBe(before);
  });
});
