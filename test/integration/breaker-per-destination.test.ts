// Breakers per destination: a failing host-routed Twilio host (Verify, a regional host, a typo'd
// name) opens its own breaker and never refuses a request to another destination — least of all
// the base URL behind /twilio, which the SPEC's metric series describe. Each test of the first
// suite has its own proxy, so they hold in any order.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/load.js';
import { start } from '../../src/server.js';
import { fakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, request, type TestProxy } from '../support/proxy.js';
import { freePort } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('one breaker per destination', () => {
  let p: TestProxy, h: ProxyHarness | undefined;
  beforeEach(async () => {
    // Every host-routed Twilio request goes to a closed port; the base URL is healthy.
    const dead = await freePort();
    ({ p } = h = await withProxy({ env: { TWILIO_HOST_TARGET: `http://127.0.0.1:${dead}`, CIRCUIT_BREAKER_THRESHOLD: '1', RATE_LIMIT_PER_MINUTE: '1000' } }));
  });
  afterEach(() => h?.close());

  /** Verify fails once and opens, a second request to it is refused, Dublin fails once and opens. */
  async function verifyAndDublinOpened(): Promise<void> {
    const verify = { headers: { host: 'verify.twilio.com' } };
    expect((await request(p.proxyPort, 'GET', '/v2/Services', verify)).headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect((await request(p.proxyPort, 'GET', '/v2/Services', verify)).headers['x-breakwater-error']).toBe('circuit_open');
    // Another host-routed destination has a breaker of its own: tried, not refused.
    const dublin = await request(p.proxyPort, 'GET', '/2010-04-01/Accounts/AC1/Messages.json', { headers: { host: 'api.dublin.ie1.twilio.com' } });
    expect(dublin.headers['x-breakwater-error']).toBe('upstream_unavailable');
  }

  it('an unreachable host opens only its own breaker', async () => {
    await verifyAndDublinOpened();
    // The base URL is served throughout.
    const base = await request(p.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json');
    expect(base.status).toBe(200);

    const list = (await request(p.adminPort, 'GET', '/breakers')).json as { breakers: { name: string; scope: string; state: string }[] };
    const twilio = list.breakers.filter((b) => b.name === 'twilio');
    expect(twilio).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ scope: 'base', state: 'closed' }),
        expect.objectContaining({ scope: 'verify.twilio.com', state: 'open' }),
        expect.objectContaining({ scope: 'api.dublin.ie1.twilio.com', state: 'open' }),
      ]),
    );
    // The SPEC's series describe the base URL's breaker: still closed, no failures.
    const text = await metricsText(p.adminPort);
    expect(text).toMatch(/circuit_breaker_state\{service="twilio"\} 0/);
    expect(text).toMatch(/circuit_breaker_failures_total\{service="twilio"\} 0/);
    // The status page and its JSON show each destination's breaker beside the base one.
    const status = (await request(p.adminPort, 'GET', '/status.json')).json as { destinations: { upstream: string; scope: string; state: string }[] };
    expect(status.destinations).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ upstream: 'twilio', scope: 'verify.twilio.com', state: 'open' }),
        expect.objectContaining({ upstream: 'twilio', scope: 'api.dublin.ie1.twilio.com', state: 'open' }),
      ]),
    );
    const page = (await request(p.adminPort, 'GET', '/')).text;
    expect(page).toMatch(/<td>twilio<\/td><td>verify\.twilio\.com<\/td><td>Open<\/td>/);
  });

  it("exports each destination's breaker beside the base series, with a destination label", async () => {
    await verifyAndDublinOpened();
    const text = await metricsText(p.adminPort);
    const verify = { service: 'twilio', destination: 'verify.twilio.com' };
    // Verify: one failure (the first request), one open, refusals (its retry, the second request).
    expect(series(text, 'circuit_breaker_state', verify)).toBe(2);
    expect(series(text, 'circuit_breaker_failures_total', verify)).toBe(1);
    expect(series(text, 'circuit_breaker_opens_total', verify)).toBe(1);
    expect(series(text, 'circuit_breaker_rejections_total', verify)).toBeGreaterThanOrEqual(1);
    expect(series(text, 'circuit_breaker_transitions_total', { ...verify, from: 'closed', to: 'open' })).toBe(1);
    // Exported from zero when the breaker was built, so the first recovery shows in increase().
    expect(series(text, 'circuit_breaker_closes_total', verify)).toBe(0);
    expect(series(text, 'circuit_breaker_transitions_total', { ...verify, from: 'half_open', to: 'closed' })).toBe(0);
    expect(series(text, 'circuit_breaker_state', { service: 'twilio', destination: 'api.dublin.ie1.twilio.com' })).toBe(2);
    // The base keeps its SPEC series, without the label, untouched by the destinations.
    expect(series(text, 'circuit_breaker_state', { service: 'twilio' })).toBe(0);
    expect(series(text, 'circuit_breaker_failures_total', { service: 'twilio' })).toBe(0);
    expect(series(text, 'circuit_breaker_rejections_total', { service: 'twilio' })).toBe(0);
  });

  it('the destination label is bounded like the breakers: past 64 hosts, one (other) value', async () => {
    for (let i = 0; i < 70; i++) {
      const r = await request(p.proxyPort, 'GET', '/v2/Services', { headers: { host: `h${i}.twilio.com` } });
      expect(r.headers['x-breakwater-error']).toMatch(/^(upstream_unavailable|circuit_open)$/);
    }
    const text = await metricsText(p.adminPort);
    const destinations = new Set(
      parse(text)
        .filter((s) => s.name === 'circuit_breaker_state' && s.labels['service'] === 'twilio' && s.labels['destination'] !== undefined)
        .map((s) => s.labels['destination']),
    );
    expect(destinations.size).toBe(65);
    expect(destinations).toContain('(other)');
    expect(destinations).not.toContain('h69.twilio.com');
  });
});

describe('destination series across a reload', () => {
  it("a reload that rebuilds the breakers drops the old destinations' series; one that keeps them keeps them", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bw-dest-reload-'));
    const tw = await fakeUpstream('twilio');
    const file = join(dir, 'policy.yaml');
    // Literal values: a reload reads the file with this process's environment.
    const policyWith = (threshold: number) =>
      DEFAULT_POLICY.replace('${TWILIO_BASE_URL:-https://api.twilio.com}', tw.url)
        .replace('${VAPI_BASE_URL:-https://api.vapi.ai}', tw.url)
        .replace('${TWILIO_HOST_TARGET:-null}', tw.url)
        .replaceAll('threshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}', `threshold: ${threshold}`)
        .replace('${PROXY_PORT:-8080}', '0')
        .replace('${ADMIN_PORT:-9090}', '0');
    writeFileSync(file, policyWith(3));
    const running = await start({ configPath: file, policy: parsePolicy(policyWith(3), { env: {} }), log: pino({ level: 'silent' }) });
    try {
      const ok = await request(running.proxyPort, 'GET', '/v2/Services', { headers: { host: 'verify.twilio.com' } });
      expect(ok.status).toBe(200);
      const verify = { service: 'twilio', destination: 'verify.twilio.com' };
      expect(series(await metricsText(running.adminPort), 'circuit_breaker_state', verify)).toBe(0);

      expect(await running.reload()).toBe(true); // same breaker settings: same breakers, same series
      expect(series(await metricsText(running.adminPort), 'circuit_breaker_state', verify)).toBe(0);

      writeFileSync(file, policyWith(5));
      expect(await running.reload()).toBe(true); // new settings: new breakers, built on first use
      const after = await metricsText(running.adminPort);
      expect(series(after, 'circuit_breaker_state', verify)).toBeUndefined();
      expect(series(after, 'circuit_breaker_state', { service: 'twilio' })).toBe(0);
    } finally {
      await running.shutdown();
      await tw.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Samples of a Prometheus text exposition: name, labels and value. */
function parse(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one series with exactly these labels (undefined when there is none). */
function series(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return parse(text).find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}
