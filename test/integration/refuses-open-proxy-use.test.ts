// Breakwater is a reverse proxy for two configured upstreams, never a forward proxy: an
// absolute-form target, CONNECT, an Upgrade, or any header naming another destination must not
// make it contact anything else. A third "victim" server on loopback records every connection;
// it must see none.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, sleep, type TestProxy } from '../support/proxy.js';
import { parseRaw, rawExchange, victimServer, type Victim } from '../support/processes.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('refuses open-proxy use', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, victim: Victim, p: TestProxy, harness: ProxyHarness | undefined;
  let victimHost: string;

  beforeAll(async () => {
    victim = await victimServer();
    victimHost = `127.0.0.1:${victim.port}`;
    ({ twilio, vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '100000' } }));
  });
  afterAll(async () => {
    await harness?.close();
    await victim.close();
  });

  let upstreamBefore = 0;
  beforeEach(() => {
    upstreamBefore = twilio.started + vapi.started;
  });

  /** Nothing reached the victim, even given a moment for a stray connection to land. */
  async function expectVictimUntouched(): Promise<void> {
    await sleep(100);
    expect(victim.connections).toBe(0);
    expect(victim.bytes).toBe(0);
  }

  const send = (lines: string[]) => rawExchange(p.proxyPort, `${lines.join('\r\n')}\r\n\r\n`).then(parseRaw);

  it.each([
    ['plain http to the victim', () => `http://${victimHost}/steal`],
    ['http to a configured upstream host', () => `${twilio.url}/2010-04-01/Accounts.json`],
    ['https to Twilio', () => 'https://api.twilio.com/2010-04-01/Accounts.json'],
    ['a prefix path inside an absolute URL', () => `http://${victimHost}/twilio/2010-04-01/Accounts.json`],
  ])('refuses an absolute-form target (%s) with 400 bad_request and contacts nothing', async (_desc, target) => {
    const r = await send([`GET ${target()} HTTP/1.1`, `Host: ${victimHost}`, 'Connection: close']);
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
    expect(JSON.parse(r.body)).toMatchObject({ code: 'bad_request', status: 400 });
    await expectVictimUntouched();
    expect(twilio.started + vapi.started).toBe(upstreamBefore);
  });

  it('refuses CONNECT to the victim and sends nothing anywhere', async () => {
    const r = await send([`CONNECT ${victimHost} HTTP/1.1`, `Host: ${victimHost}`]);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(r.headers['x-breakwater-error']).toBe('method_not_allowed');
    expect(JSON.parse(r.body)).toMatchObject({ code: 'method_not_allowed' });
    await expectVictimUntouched();
    expect(twilio.started + vapi.started).toBe(upstreamBefore);
  });

  it('refuses CONNECT to a Twilio host name too', async () => {
    const r = await send(['CONNECT api.twilio.com:443 HTTP/1.1', 'Host: api.twilio.com:443']);
    expect(r.status).toBe(405);
    expect(r.headers['x-breakwater-error']).toBe('method_not_allowed');
    expect(twilio.started + vapi.started).toBe(upstreamBefore);
  });

  it('refuses a protocol upgrade (a WebSocket tunnel)', async () => {
    const r = await send([
      'GET /twilio/socket HTTP/1.1',
      `Host: ${victimHost}`,
      'Connection: Upgrade',
      'Upgrade: websocket',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    ]);
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
    await expectVictimUntouched();
    expect(twilio.started + vapi.started).toBe(upstreamBefore);
  });

  it('answers 404 no_route when the Host header names the victim and the path has no prefix', async () => {
    const r = await request(p.proxyPort, 'GET', '/steal', { headers: { host: victimHost } });
    expect(r.status).toBe(404);
    expect(r.headers['x-breakwater-error']).toBe('no_route');
    await expectVictimUntouched();
  });

  it('ignores forwarding headers that name another destination, and does not pass them on', async () => {
    const headers = {
      host: victimHost,
      'x-forwarded-host': victimHost,
      'x-forwarded-port': String(victim.port),
      forwarded: `host=${victimHost};proto=http`,
      'x-forwarded-proto': 'https',
    };
    const r = await request(p.proxyPort, 'GET', '/vapi/call?x=1', { headers });
    expect(r.status).toBe(200);
    await expectVictimUntouched();
    expect(vapi.started + twilio.started).toBe(upstreamBefore + 1);
    const seen = vapi.seen.at(-1)!;
    expect(seen.url).toBe('/call?x=1');
    expect(seen.headers.host).toBe(`127.0.0.1:${vapi.port}`);
    for (const h of ['x-forwarded-host', 'x-forwarded-port', 'forwarded']) expect(seen.headers[h], h).toBeUndefined();
    expect(seen.headers['x-forwarded-proto']).toBe('http');
  });

  it.each([
    ['x-original-url', () => `http://${victimHost}/steal`],
    ['x-rewrite-url', () => '/steal'],
  ])('refuses a request carrying the routing header %s with 400 bad_request', async (name, value) => {
    const r = await request(p.proxyPort, 'GET', '/vapi/call', { headers: { [name]: value() } });
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
    await expectVictimUntouched();
    expect(vapi.started + twilio.started).toBe(upstreamBefore);
  });

  it('does not follow an upstream redirect to the victim', async () => {
    vapi.handler = (_req, res) => {
      res.writeHead(302, { location: `http://${victimHost}/steal` });
      res.end();
    };
    try {
      const r = await request(p.proxyPort, 'GET', '/vapi/call');
      expect(r.status).toBe(302);
      expect(r.headers.location).toBe(`http://${victimHost}/steal`);
      await expectVictimUntouched();
    } finally {
      vapi.handler = undefined;
    }
  });

  it('counts each kind of forward-proxy attempt and logs the host it named, sanitised', async () => {
    const count = async (kind: string) => metricValue(await metricsText(p.adminPort), 'breakwater_open_proxy_refusals_total', { kind });
    const before = { absolute_form: await count('absolute_form'), connect: await count('connect'), foreign_host: await count('foreign_host') };
    // Exported from zero: a first probe is a visible increase.
    for (const v of Object.values(before)) expect(v).toEqual(expect.any(Number));
    await send(['GET http://Evil.Example:8443/steal HTTP/1.1', `Host: ${victimHost}`, 'Connection: close']);
    await send(['CONNECT evil.example:443 HTTP/1.1', 'Host: evil.example:443']);
    await request(p.proxyPort, 'GET', '/steal', { headers: { host: 'attacker.example' } });
    await request(p.proxyPort, 'GET', '/steal', { headers: { host: victimHost } });
    // Not probes: an app that reaches the sidecar by loopback or a service name and gets a path wrong.
    await request(p.proxyPort, 'GET', '/steal', { headers: { host: `127.0.0.1:${p.proxyPort}` } });
    await request(p.proxyPort, 'GET', '/steal', { headers: { host: `breakwater:${p.proxyPort}` } });
    await request(p.proxyPort, 'GET', '/steal', { headers: { host: 'localhost' } });
    expect(await count('absolute_form')).toBe(before.absolute_form! + 1);
    expect(await count('connect')).toBe(before.connect! + 1);
    expect(await count('foreign_host')).toBe(before.foreign_host! + 2);
    await sleep(150); // the access log is written in 50 ms batches
    const lines = p.logLines();
    const probes = lines.filter((l) => l.probeHost !== undefined).map((l) => l.probeHost);
    expect(probes).toEqual(expect.arrayContaining(['evil.example:8443', 'evil.example:443', 'attacker.example', victimHost]));
    expect(probes).not.toContain('localhost');
    expect(lines.some((l) => l.msg === 'open-proxy attempt refused' && l.probeHost === 'evil.example:443')).toBe(true);
  });

  it('logs a hostile Host as inert text', async () => {
    await send(['GET /steal HTTP/1.1', 'Host: a"b\\c\u2028.example', 'Connection: close']);
    await send(['GET /steal HTTP/1.1', `Host: x.example:1${'9'.repeat(300)}`, 'Connection: close']);
    await sleep(150);
    for (const h of p
      .logLines()
      .map((l) => l.probeHost)
      .filter((h): h is string => typeof h === 'string')) {
      expect(h).toMatch(/^[a-z0-9.:[\]?-]{1,100}$/);
    }
  });

  it('still serves ordinary requests on the same listener', async () => {
    const r = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json');
    expect(r.status).toBe(200);
    expect(twilio.started).toBeGreaterThan(0);
    await expectVictimUntouched();
  });
});
