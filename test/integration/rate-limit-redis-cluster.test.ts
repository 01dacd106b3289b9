// A three-master Redis Cluster: two sidecars seeded with two of its nodes share exact budgets,
// clients' buckets land on every master (MOVED followed), and a slot migration under load
// (redis-cli --cluster reshard: ASK, then MOVED) loses no request and grants no extra token.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, type Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { cli, startCluster, startReplicas, type ClusterSetup } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const run = promisify(execFile);
const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
});

describe('rate limits shared through a Redis Cluster', () => {
  let cluster: ClusterSetup, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    cluster = await startCluster();
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas(
      { VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '5', RATE_LIMIT_STORE: 'redis', REDIS_TYPE: 'cluster', REDIS_URL: cluster.url },
      POLICY,
    ));
    // The captured set also holds the per-node connections a Cluster makes; the Cluster objects say when routing works.
    const clusters = [...clients].filter((c) => (c as unknown) instanceof Cluster);
    expect(clusters.length).toBe(2);
    expect(await waitFor(() => clusters.every((c) => c.status === 'ready'), { timeoutMs: 10_000 })).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await cluster?.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });
  /** Slots a node owns, from CLUSTER NODES ("0-5460 5461"...). */
  const slotsOf = async (id: string) => {
    const line = (await cli(cluster.nodes[0]!.port, 'CLUSTER', 'NODES')).split('\n').find((l) => l.startsWith(id))!;
    return line
      .split(' ')
      .slice(8)
      .filter((r) => /^\d/.test(r))
      .reduce((n, r) => {
        const [lo, hi] = r.split('-').map(Number);
        return n + (hi === undefined ? 1 : hi - lo! + 1);
      }, 0);
  };
  const fallbacks = async () => {
    let n = 0;
    for (const p of [a, b]) n += metricValue(await metricsText(p.adminPort), 'breakwater_store_fallbacks_total', { store: 'redis' }) ?? 0;
    return n;
  };

  it('allows exactly the shared budget for many clients, whose buckets spread over all three masters', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `cl-${i}`);
    const answers = await Promise.all(
      ids.flatMap((id) => Array.from({ length: 7 }, (_, j) => get(j % 2 === 0 ? a : b, id).then((r) => ({ id, status: r.status })))),
    );
    for (const id of ids) {
      const mine = answers.filter((x) => x.id === id);
      expect(mine.filter((x) => x.status === 200).length).toBe(5);
      expect(mine.filter((x) => x.status === 429).length).toBe(2);
    }
    // Rate-limit buckets only: the idempotency store keeps a generation marker beside them.
    const sizes = await Promise.all(cluster.nodes.map(async (n) => (await cli(n.port, 'KEYS', 'bw:rl:*')).split('\n').filter((k) => k.trim() !== '').length));
    expect(sizes.every((s) => s > 0)).toBe(true);
    expect(sizes.reduce((x, y) => x + y, 0)).toBe(30);
    expect(await fallbacks()).toBe(0);
  }, 30_000);

  it('keeps exact budgets through a slot migration under load', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `mig-${i}`);
    const from = (await cli(cluster.nodes[0]!.port, 'CLUSTER', 'MYID')).trim();
    const to = (await cli(cluster.nodes[1]!.port, 'CLUSTER', 'MYID')).trim();
    const statuses = new Map<string, number[]>(ids.map((id) => [id, []]));
    let stop = false;
    let rounds = 0;
    // Two requests per client per round, rounds until the reshard is done: 5 granted, the rest refused.
    const load = (async () => {
      for (let round = 0; round < 400 && !stop; round++) {
        await Promise.all(ids.map((id, i) => get((i + round) % 2 === 0 ? a : b, id).then((r) => statuses.get(id)!.push(r.status))));
        rounds++;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const before = await slotsOf(to);
    const r0 = rounds;
    await run(
      'redis-cli',
      ['--cluster', 'reshard', `127.0.0.1:${cluster.nodes[0]!.port}`, '--cluster-from', from, '--cluster-to', to, '--cluster-slots', '2000', '--cluster-yes'],
      { timeout: 60_000 },
    );
    const roundsDuring = rounds - r0;
    stop = true;
    await load;
    const all = [...statuses.values()].flat();
    expect(all.length).toBeGreaterThan(ids.length * 6);
    expect(all.every((s) => s === 200 || s === 429)).toBe(true);
    // ioredis follows ASK during the migration and MOVED after it: no decision fell back, so
    // every client got exactly its shared budget.
    expect(await fallbacks()).toBe(0);
    for (const id of ids) expect(statuses.get(id)!.filter((s) => s === 200).length).toBe(5);
    // The slots really moved, while requests were being decided.
    expect(await slotsOf(to)).toBe(before + 2000);
    expect(roundsDuring).toBeGreaterThanOrEqual(1);
  }, 90_000);
});
