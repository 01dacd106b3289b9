// Redis Sentinel: two sidecars find the master through a sentinel, share exact budgets, and
// follow a master failover (SENTINEL FAILOVER) that happens under load: no request fails, the
// new master is used once promoted, its empty script cache is filled after NOSCRIPT, and the
// tokens granted per client stay within the bound docs/deployment.md states (the shared budget,
// plus each replica's fallback share while the switch is under way).
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { BUCKET_SCRIPT } from '../../src/store/redis.js';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { cli, startReplicas, startSentinel, type SentinelSetup } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const REPLICAS = 2;
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
  p.store.retryAfter = 0.2;
  p.store.replicas = REPLICAS;
});
const SHA = createHash('sha1').update(BUCKET_SCRIPT).digest('hex');

describe('rate limits shared through Redis Sentinel', () => {
  let s: SentinelSetup, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    s = await startSentinel();
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas(
      { VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '5', RATE_LIMIT_STORE: 'redis', REDIS_TYPE: 'sentinel', REDIS_URL: s.url },
      POLICY,
    ));
    // The captured set also holds the short-lived connections to the sentinel itself.
    const mains = [...clients].filter((c) => (c.options.sentinels?.length ?? 0) > 0);
    expect(mains.length).toBe(2);
    expect(await waitFor(() => mains.every((c) => c.status === 'ready'), { timeoutMs: 10_000 })).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await s?.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });
  const shared = async (p: TestProxy) => metricValue(await metricsText(p.adminPort), 'breakwater_store_fallback_active', { store: 'redis' }) === 0;
  const exactBudget = async (client: string) => {
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push((await get(i % 2 === 0 ? a : b, client)).status);
    return answers;
  };

  it('finds the master through the sentinel and allows exactly the shared budget', async () => {
    expect(await exactBudget('before')).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(Number((await cli(s.master.port, 'DBSIZE')).trim())).toBeGreaterThan(0);
  });

  it('follows a master failover during load, reloading the script on the new master', async () => {
    // A replica has no script cache of its own: the promoted one answers NOSCRIPT at first.
    expect((await cli(s.replica.port, 'SCRIPT', 'EXISTS', SHA)).trim()).toBe('0');
    const ids = Array.from({ length: 20 }, (_, i) => `load-${i}`);
    const statuses = new Map<string, number[]>(ids.map((id) => [id, []]));
    let stop = false;
    let rounds = 0;
    const load = (async () => {
      for (let round = 0; round < 2000 && !stop; round++) {
        await Promise.all(ids.map((id, i) => get((i + round) % 2 === 0 ? a : b, id).then((r) => statuses.get(id)!.push(r.status))));
        rounds++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await waitFor(() => rounds >= 3, { timeoutMs: 5000 });
    expect((await cli(s.sentinel.port, 'SENTINEL', 'FAILOVER', s.name)).trim()).toBe('OK');
    expect(await waitFor(async () => (await s.masterPort()) === s.replica.port, { timeoutMs: 20_000, everyMs: 100 })).toBe(true);
    const atSwitch = rounds;
    // Back on shared buckets on both sidecars, with load still running.
    expect(await waitFor(async () => (await shared(a)) && (await shared(b)) && rounds >= atSwitch + 5, { timeoutMs: 20_000, everyMs: 100 })).toBe(true);
    stop = true;
    await load;

    const all = [...statuses.values()].flat();
    expect(all.every((st) => st === 200 || st === 429)).toBe(true);
    for (const id of ids) {
      const ok = statuses.get(id)!.filter((st) => st === 200).length;
      // Never fewer than the budget; at most the budget plus every replica's fallback share.
      expect(ok).toBeGreaterThanOrEqual(5);
      expect(ok).toBeLessThanOrEqual(5 + REPLICAS * Math.floor(5 / REPLICAS));
    }
    // A fresh client after the switch: one shared bucket again, kept on the new master.
    expect(await exactBudget('after')).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect((await cli(s.replica.port, 'SCRIPT', 'EXISTS', SHA)).trim()).toBe('1');
    expect((await cli(s.replica.port, 'ROLE')).split('\n')[0]).toBe('master');
  }, 90_000);
});
