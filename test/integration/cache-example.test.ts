// config/examples/cache.yaml, the default policy with the cache on for Twilio Lookups and Vapi
// assistant fetches: `validate` passes on it, and a proxy started on it caches exactly those.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, DEFAULT_POLICY, type TestProxy } from '../support/proxy.js';
import { runCli } from '../support/processes.js';
import { parsePolicy } from '../../src/policy/load.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const EXAMPLE = readFileSync(new URL('../../config/examples/cache.yaml', import.meta.url), 'utf8');

describe('config/examples/cache.yaml', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ policy: EXAMPLE }));
  });
  afterAll(() => harness?.close());

  it('passes validate', async () => {
    const r = await runCli(['validate', '--config', 'config/examples/cache.yaml']);
    expect(r.code).toBe(0);
  });

  it('the shipped default caches nothing; the example caches Lookups and Vapi assistants', () => {
    const def = parsePolicy(DEFAULT_POLICY, { env: {} });
    for (const u of Object.values(def.upstreams)) expect(u.cache.routes).toEqual([]);
    const ex = parsePolicy(EXAMPLE, { env: {} });
    expect(ex.upstreams.twilio!.cache.routes.map((r) => r.route)).toEqual(['lookups']);
    expect(ex.upstreams.vapi!.cache.routes.map((r) => r.route)).toEqual(['assistant.fetch']);
  });

  it('answers a repeated assistant fetch and a repeated line-type lookup from the cache', async () => {
    const auth = { authorization: 'Bearer key-1' };
    await request(p.proxyPort, 'GET', '/vapi/assistant/a1', { headers: auth });
    const again = await request(p.proxyPort, 'GET', '/vapi/assistant/a1', { headers: auth });
    expect(again.headers['cache-status']).toMatch(/^Breakwater; hit/);
    expect(vapi.seen.filter((s) => s.url === '/assistant/a1').length).toBe(1);

    const basic = { authorization: `Basic ${Buffer.from('AC1:tok').toString('base64')}` };
    const lookup = '/twilio/v2/PhoneNumbers/+15551230000?Fields=line_type_intelligence';
    await request(p.proxyPort, 'GET', lookup, { headers: basic });
    expect((await request(p.proxyPort, 'GET', lookup, { headers: basic })).headers['cache-status']).toMatch(/^Breakwater; hit/);
    const fraud = '/twilio/v2/PhoneNumbers/+15551230000?Fields=sim_swap';
    await request(p.proxyPort, 'GET', fraud, { headers: basic });
    await request(p.proxyPort, 'GET', fraud, { headers: basic });
    expect(twilio.seen.filter((s) => s.url.includes('sim_swap')).length).toBe(2);
    // Nothing else is cached: a call fetch goes upstream every time.
    await request(p.proxyPort, 'GET', '/vapi/call/c1', { headers: auth });
    const c = await request(p.proxyPort, 'GET', '/vapi/call/c1', { headers: auth });
    expect(c.headers['cache-status']).toBeUndefined();
    expect(vapi.seen.filter((s) => s.url === '/call/c1').length).toBe(2);
  });
});
