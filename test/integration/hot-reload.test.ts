// Hot reload on SIGHUP, against the real CLI and a policy file on disk: a broken policy is
// refused with file:line problems while the old one keeps serving; a good one takes effect
// live, keeps breaker state for unchanged upstreams and lets in-flight requests finish.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request } from '../support/proxy.js';
import { ROOT, startCli, type Cli } from './spawned-cli.js';
import { waitFor } from '../support/wait.mjs';

describe('SIGHUP reload of the real process', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, cli: Cli, dir: string, file: string, original: string;
  const metric = async (name: string, labels: Record<string, string> = {}) => metricValue(await metricsText(cli.adminPort), name, labels);

  beforeAll(async () => {
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
    dir = mkdtempSync(join(tmpdir(), 'bw-reload-'));
    file = join(dir, 'policy.yaml');
    copyFileSync(join(ROOT, 'config/policy.yaml'), file);
    original = readFileSync(file, 'utf8');
    cli = await startCli(file, { TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url });
  });
  afterAll(async () => {
    cli?.kill();
    await twilio?.close();
    await vapi?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a broken policy, says where, counts it, and keeps serving', async () => {
    const broken = original.replace('      halfOpenProbes: 1', '      halfOpenProbes: 0');
    expect(broken).not.toBe(original);
    const line = broken.split('\n').findIndex((l) => l.includes('halfOpenProbes: 0')) + 1;
    writeFileSync(file, broken);
    cli.signal('SIGHUP');

    const refused = await waitFor(() => cli.lines().find((l) => /reload/.test(l.msg) && /refused/.test(l.msg)), { timeoutMs: 10_000 });
    expect(refused, 'a "reload refused" log line').toBeDefined();
    expect(refused!.level).toBe('error');
    const problems = (refused!.problems as string[]).join('\n');
    expect(problems).toContain(`${file}:${line}:`);
    expect(problems).toMatch(/upstreams\.twilio\.breaker\.halfOpenProbes/);

    expect(await metric('breakwater_policy_reloads_total', { result: 'failure' })).toBe(1);
    expect(await metric('breakwater_policy_last_reload_successful')).toBe(0);
    const r = await request(cli.proxyPort, 'GET', '/vapi/call');
    expect(r.status).toBe(200);
    expect((await request(cli.adminPort, 'GET', '/readyz')).status).toBe(200);
  });

  it('swaps in a good policy live: a lower limit applies, breakers and in-flight requests survive', async () => {
    // The app is under the shipped limit (60/min) before the reload.
    for (let i = 0; i < 3; i++) expect((await request(cli.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'before' } })).status).toBe(200);

    // Twilio's breaker is forced open; the reload only touches Vapi, so it must stay open.
    expect((await request(cli.adminPort, 'POST', '/breakers/twilio/open', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);

    // A request in flight on the old pipeline: the fake Vapi holds it until released.
    const held: ServerResponse[] = [];
    vapi.handler = (_req, res) => held.push(res);
    const inFlight = request(cli.proxyPort, 'GET', '/vapi/call/in-flight', { headers: { 'x-client-id': 'inflight' }, timeoutMs: 20_000 });
    expect(await waitFor(() => held.length === 1 || undefined, { timeoutMs: 10_000 })).toBeTruthy();

    const lowered = original.replace(/(\n {2}vapi:[\s\S]*?rateLimits:\n\s+- name: default\n\s+rate: )\$\{RATE_LIMIT_PER_MINUTE:-60\}/, '$12');
    expect(lowered).not.toBe(original);
    writeFileSync(file, lowered);
    cli.signal('SIGHUP');
    expect(
      await waitFor(async () => (await metric('breakwater_policy_reloads_total', { result: 'success' })) === 1 || undefined, { timeoutMs: 10_000 }),
    ).toBeTruthy();
    expect(await metric('breakwater_policy_last_reload_successful')).toBe(1);
    // Log lines reach stdout in batches (up to 50 ms later): wait for it rather than race it.
    expect(await waitFor(() => cli.lines().find((l) => l.msg === 'policy reloaded'), { timeoutMs: 10_000 })).toBeTruthy();

    // The request that started before the reload finishes normally.
    vapi.handler = undefined;
    held[0]!.writeHead(200, { 'content-type': 'application/json' });
    held[0]!.end('{"id":"in-flight"}');
    const done = await inFlight;
    expect(done.status).toBe(200);
    expect(done.json).toEqual({ id: 'in-flight' });

    // The new limit (2 per minute per client) is live.
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(cli.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'after' } })).status);
    expect(statuses).toEqual([200, 200, 429]);
    const limited = await request(cli.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'after' } });
    expect(limited.headers['x-breakwater-error']).toBe('rate_limited');
    expect(limited.headers['retry-after']).toMatch(/^\d+$/);

    // Twilio's breaker state came through the reload.
    const breakers = (await request(cli.adminPort, 'GET', '/breakers')).json as { breakers: { name: string; state: string }[] };
    expect(breakers.breakers.find((b) => b.name === 'twilio')?.state).toBe('open');
    const n = twilio.seen.length;
    const t = await request(cli.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json');
    expect(t.status).toBe(503);
    expect(t.headers['x-breakwater-error']).toBe('circuit_open');
    expect(twilio.seen.length).toBe(n);
    expect(await metric('circuit_breaker_state', { service: 'twilio' })).toBe(2);
    // This reload touched nothing that needs a restart, so no such warning was logged.
    expect(cli.lines().some((l) => /only after a restart/.test(String(l.msg)))).toBe(false);
  });

  it('applies a reload but says which edited settings need a restart (listeners, store)', async () => {
    const edited = readFileSync(file, 'utf8').replace('  drainTimeout: 25', '  drainTimeout: 25\n  maxConnections: 77');
    expect(edited).not.toBe(readFileSync(file, 'utf8'));
    writeFileSync(file, edited);
    const before = (await metric('breakwater_policy_reloads_total', { result: 'success' })) ?? 0;
    cli.signal('SIGHUP');
    expect(
      await waitFor(async () => ((await metric('breakwater_policy_reloads_total', { result: 'success' })) ?? 0) > before || undefined, { timeoutMs: 10_000 }),
    ).toBeTruthy();
    const warned = await waitFor(() => cli.lines().find((l) => /only after a restart/.test(String(l.msg))), { timeoutMs: 10_000 });
    expect(warned!.keys).toEqual(['server.maxConnections']);
    expect((await request(cli.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': 'restart-note' } })).status).toBe(200);
  });
});
