// A replica killed with SIGKILL after it forwarded a keyed create and before it stored the answer:
// the create reached the upstream, and its claim in the shared store outlives the process. The
// app's retry on another replica must not send it again: it is told the original is in flight
// (409, Retry-After), and nothing more reaches the upstream. (When the claim's lifetime ends, the
// key answers internal_error "outcome unknown, not re-sent": idempotency-fleet-concurrency and the
// store's unit tests cover that.) Real processes, real Redis, loopback only.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request } from '../support/proxy.js';
import { startCli, type CliProxy } from '../support/processes.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

describe('a replica SIGKILLed between forwarding a keyed create and storing its answer', () => {
  let redis: RedisServer, vapi: FakeUpstream, a: CliProxy | undefined, b: CliProxy | undefined;
  let dir = '';
  const posts = () => vapi.seen.filter((s) => s.method === 'POST').length;
  beforeAll(async () => {
    redis = await startRedis();
    vapi = await fakeUpstream('vapi');
    // The create arrives and is never answered: the replica dies with it in flight.
    vapi.handler = () => {};
    dir = mkdtempSync(join(tmpdir(), 'bw-sigkill-'));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(
      policy,
      policyWith((p) => {
        p.store.timeout = 0.5;
        p.upstreams.vapi.idempotency.waitTimeout = 1;
      }),
    );
    const env = {
      VAPI_BASE_URL: String(vapi.url),
      RATE_LIMIT_PER_MINUTE: '1000',
      RATE_LIMIT_STORE: 'redis',
      REDIS_URL: redis.url,
      VAPI_API_KEY: 'vapi-test-key',
    };
    a = await startCli(env, policy);
    b = await startCli(env, policy);
  }, 40_000);
  afterAll(async () => {
    await a?.stop(1000);
    await b?.stop(1000);
    await vapi?.close();
    await redis?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const create = (port: number) =>
    request(port, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': 'sigkill-1' },
      body: '{"assistantId":"a1","phoneNumberId":"p1","customer":{"number":"+15550001111"}}',
      timeoutMs: 10_000,
    });

  it('the retry on another replica sends nothing and says the original is in flight', async () => {
    const lost = create(a!.proxyPort).then(
      (r) => r.status,
      () => 'connection lost',
    );
    expect(await waitFor(() => posts() === 1, { timeoutMs: 5000, everyMs: 20 })).toBe(true);
    a!.child.kill('SIGKILL');
    expect(await lost).toBe('connection lost');

    const retry = await create(b!.proxyPort);
    expect(retry.status).toBe(409);
    expect(retry.headers['x-breakwater-error']).toBe('idempotency_in_flight');
    expect(Number(retry.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    const again = await create(b!.proxyPort);
    expect(again.status).toBe(409);
    // One create reached the upstream, whatever the app retried.
    expect(posts()).toBe(1);
  }, 30_000);
});
