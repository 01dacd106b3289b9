// config/examples/cache.yaml, the default policy with the cache on for Twilio Lookups and Vapi
// assistant fetches: `validate` passes on it, and a proxy started on it caches exactly those.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, DEFAULT_POLICY, type TestProxy } from '../support/proxy.js';
import { runCli } from '../support/processes.js';
import { parsePolicy } from '../../src/policy/load.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';
import type { Policy } from '../../src/policy/schema.js';

const EXAMPLE = readFileSync(new URL('../../config/examples/cache.yaml', import.meta.url), 'utf8');

/** The routes the example declares on top of the default's, so that its cache entries name a route. */
const ADDED_ROUTES: Record<string, string[]> = { twilio: ['lookups'], vapi: ['assistant.fetch'] };

/** Every variable of the default policy set to a valid value other than its default (forms from SPEC.md). */
const FULL_ENV: Record<string, string> = {
  PROXY_HOST: '0.0.0.0',
  PROXY_PORT: '18080',
  ADMIN_HOST: '0.0.0.0',
  ADMIN_PORT: '19090',
  ADMIN_NAMES: 'bw.local, breakwater-admin.internal',
  LOG_LEVEL: 'debug',
  INTEGRATIONS_STUB_MODE: 'true',
  RATE_LIMIT_STORE: 'redis',
  REDIS_TYPE: 'sentinel',
  REDIS_URL: 'mymaster,127.0.0.1:26379,127.0.0.1:26380',
  REDIS_USERNAME: 'breakwater',
  REDIS_PASSWORD: 'redis-secret',
  REDIS_TLS: 'true',
  REDIS_CA_FILE: '/etc/breakwater/redis-ca.pem',
  TWILIO_BASE_URL: 'http://127.0.0.1:9101',
  TWILIO_HOST_TARGET: 'http://127.0.0.1:9999',
  UPSTREAM_TIMEOUT: '7.5',
  TWILIO_ACCOUNT_SID: 'AC00000000000000000000000000000000',
  TWILIO_AUTH_TOKEN: 'twilio-token',
  TWILIO_API_KEY_SID: 'SK00000000000000000000000000000000',
  TWILIO_API_KEY_SECRET: 'twilio-key-secret',
  CIRCUIT_BREAKER_ENABLED: 'false',
  CIRCUIT_BREAKER_THRESHOLD: '5',
  CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '12',
  RATE_LIMIT_PER_MINUTE: '120',
  VAPI_BASE_URL: 'http://127.0.0.1:9102',
  VAPI_HOST_TARGET: 'http://127.0.0.1:9998',
  VAPI_API_KEY: 'vapi-key',
};

/** The example with its cache routes and the routes it adds for them taken out: what the default should be. */
function withoutCaching(p: Policy): Policy {
  const upstreams = Object.fromEntries(
    Object.entries(p.upstreams).map(([name, u]) => {
      const added = ADDED_ROUTES[name] ?? [];
      return [name, { ...u, routes: u.routes.filter((r) => !added.includes(r.name)), cache: { ...u.cache, routes: [] } }];
    }),
  );
  return { ...p, upstreams };
}

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

  it('is config/policy.yaml plus cache routes: equal to the default once they are removed, under an empty and a full environment', () => {
    // A variable the default reads but the test leaves unset would let an example that ignores it pass.
    const values = DEFAULT_POLICY.replace(/(^|\s)#.*$/gm, '');
    const read = new Set([...values.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!));
    expect([...read].filter((v) => !(v in FULL_ENV))).toEqual([]);
    for (const [label, env] of [
      ['empty environment', {}],
      ['full environment', FULL_ENV],
    ] as const) {
      const ex = parsePolicy(EXAMPLE, { env });
      for (const [name, routes] of Object.entries(ADDED_ROUTES)) expect(ex.upstreams[name]!.routes.map((r) => r.name)).toEqual(expect.arrayContaining(routes));
      expect.soft(withoutCaching(ex), label).toEqual(parsePolicy(DEFAULT_POLICY, { env }));
    }
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
