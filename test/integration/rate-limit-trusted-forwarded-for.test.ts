// Without X-Client-Id the key is the client IP. X-Forwarded-For names that IP only when the peer
// is a configured trusted proxy; from anyone else it is ignored, so a client cannot pick a fresh
// identity per request by spoofing it. (The in-process proxy's peer is always 127.0.0.1.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, request, startProxy, type TestProxy } from '../support/proxy.js';

const PATH = '/twilio/2010-04-01/Accounts.json';

describe('client IP from X-Forwarded-For', () => {
  let up: FakeUpstream, trusted: TestProxy, untrusted: TestProxy;
  beforeAll(async () => {
    up = await fakeUpstream('twilio');
    const env = { TWILIO_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '2' };
    const trustingPolicy = DEFAULT_POLICY.replace('trustedProxies: []', 'trustedProxies: ["127.0.0.1/32"]');
    expect(trustingPolicy).not.toBe(DEFAULT_POLICY);
    trusted = await startProxy(env, trustingPolicy);
    untrusted = await startProxy(env);
  });
  afterAll(async () => {
    await trusted.close();
    await untrusted.close();
    await up.close();
  });

  const send = (p: TestProxy, xff: string, id: string) => request(p.proxyPort, 'GET', PATH, { headers: { 'x-forwarded-for': xff, 'x-request-id': id } });
  const clientOf = (p: TestProxy, id: string) => p.logLines().find((l) => l.reqId === id && l.msg === 'request')?.client;

  it('from an untrusted peer, ignores the header: every spoofed address shares the peer IP budget', async () => {
    const a = await send(untrusted, '203.0.113.1', 'u1');
    const b = await send(untrusted, '203.0.113.2', 'u2');
    const c = await send(untrusted, '203.0.113.3', 'u3');
    expect([a.status, b.status, c.status]).toEqual([200, 200, 429]);
    expect(c.headers['x-breakwater-error']).toBe('rate_limited');
    expect(clientOf(untrusted, 'u2')).toBe('127.0.0.1');
  });

  it('from a trusted peer, keys on the forwarded address', async () => {
    const r1 = await send(trusted, '203.0.113.1', 't1');
    const r2 = await send(trusted, '203.0.113.1', 't2');
    const r3 = await send(trusted, '203.0.113.1', 't3');
    expect([r1.status, r2.status, r3.status]).toEqual([200, 200, 429]);
    expect(clientOf(trusted, 't1')).toBe('203.0.113.1');
    // A different forwarded client has its own budget.
    const other = await send(trusted, '203.0.113.2', 't4');
    expect(other.status).toBe(200);
    expect(clientOf(trusted, 't4')).toBe('203.0.113.2');
  });

  it('from a trusted peer, takes the right-most untrusted hop: a prepended fake address changes nothing', async () => {
    const r = await send(trusted, '198.51.100.7, 203.0.113.1', 't5');
    expect(r.status).toBe(429);
    expect(clientOf(trusted, 't5')).toBe('203.0.113.1');
  });

  it('without the header, keys on the peer IP', async () => {
    const r = await request(trusted.proxyPort, 'GET', PATH, { headers: { 'x-request-id': 't6' } });
    expect(r.status).toBe(200);
    expect(clientOf(trusted, 't6')).toBe('127.0.0.1');
  });
});
