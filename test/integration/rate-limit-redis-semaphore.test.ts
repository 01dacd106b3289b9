// The fleet-wide concurrency cap against real Redis: four "replicas" (four clients) never hold
// more than the cap at once and every waiter gets a slot within its deadline; a replica that
// dies holding slots gives them back when its leases lapse; a 20429 lowers the cap; and the
// two-key scripts run on a three-master Cluster (hash-tagged keys, else CROSSSLOT).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisClient, type RedisClient, type RedisConnectionConfig } from '../../src/store/redis-connection.js';
import { fleetSemaphore, type FleetSemaphore } from '../../src/store/redis-semaphore.js';
import { startCluster, startRedis, type ClusterSetup, type RedisServer } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const conn = (type: RedisConnectionConfig['type'], url: string): RedisConnectionConfig => ({ type, url, username: '', password: '', tls: false, caFile: '' });

async function fleet(cfg: RedisConnectionConfig, n: number, cap: number, leaseMs = 2000): Promise<{ clients: RedisClient[]; sems: FleetSemaphore[] }> {
  const clients = Array.from({ length: n }, () => createRedisClient(cfg));
  for (const c of clients) c.on('error', () => {});
  expect(await waitFor(() => clients.every((c) => c.status === 'ready'), { timeoutMs: 10_000 })).toBe(true);
  return { clients, sems: clients.map((redis) => fleetSemaphore({ redis, cap, leaseMs, maxQueue: 1000, replicas: n })) };
}

/** 10× the cap in tasks at once, each holding its slot 30 ms; the highest concurrency seen and the tasks that got none. */
async function burst(sems: FleetSemaphore[], account: string, cap: number): Promise<{ max: number; refused: number }> {
  let inUse = 0;
  let max = 0;
  let refused = 0;
  await Promise.all(
    Array.from({ length: cap * 10 }, async (_, i) => {
      const lease = await sems[i % sems.length]!.acquire(account, Date.now() + 15_000);
      if (!lease) return void refused++;
      inUse++;
      max = Math.max(max, inUse);
      await new Promise((r) => setTimeout(r, 30));
      inUse--;
      lease.release();
    }),
  );
  return { max, refused };
}

describe('fleet-wide concurrency cap on one Redis', () => {
  let redis: RedisServer;
  const clients: RedisClient[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.kill();
  });

  it('never exceeds the cap across four replicas and serves every waiter within its deadline', async () => {
    const f = await fleet(conn('single', redis.url), 4, 5);
    clients.push(...f.clients);
    const r = await burst(f.sems, 'AC-burst', 5);
    expect(r.refused).toBe(0);
    expect(r.max).toBe(5);
  }, 30_000);

  it('gives a dead replica’s slots back once its leases lapse', async () => {
    const f = await fleet(conn('single', redis.url), 2, 3, 400);
    clients.push(...f.clients);
    const held = await Promise.all([0, 1, 2].map(() => f.sems[0]!.acquire('AC-dead', Date.now() + 1000)));
    expect(held.every(Boolean)).toBe(true);
    f.clients[0]!.disconnect(); // renewals stop, nothing is released: a killed replica
    const t0 = Date.now();
    const lease = await f.sems[1]!.acquire('AC-dead', Date.now() + 5000);
    const waited = Date.now() - t0;
    expect(lease).toBeDefined();
    expect(waited).toBeGreaterThanOrEqual(200);
    expect(waited).toBeLessThan(4000);
  }, 30_000);

  it('lowers the cap after a 20429 and refuses beyond a full queue', async () => {
    const f = await fleet(conn('single', redis.url), 1, 4);
    clients.push(...f.clients);
    const sem = f.sems[0]!;
    const held = await Promise.all([0, 1, 2].map(() => sem.acquire('AC-low', Date.now() + 1000)));
    await sem.lower('AC-low'); // 3 in use → cap 2
    for (const l of held) l?.release();
    const again = [await sem.acquire('AC-low', Date.now() + 500), await sem.acquire('AC-low', Date.now() + 500)];
    expect(again.every(Boolean)).toBe(true);
    expect(await sem.acquire('AC-low', Date.now() + 100)).toBeUndefined();
    const small = fleetSemaphore({ redis: f.clients[0]!, cap: 1, leaseMs: 2000, maxQueue: 0, prefix: 'bw:sem2:' });
    expect(await small.acquire('AC-q', Date.now() + 1000)).toBeDefined();
    const t0 = Date.now();
    expect(await small.acquire('AC-q', Date.now() + 1000)).toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(500); // refused at once: no room to wait
  }, 30_000);
});

describe('Twilio-Concurrent-Requests fed back into the cap', () => {
  let redis: RedisServer;
  let clients: RedisClient[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.kill();
  });

  /** How many slots can be held at once now (each acquire is given 60 ms), all released after. */
  async function room(sem: FleetSemaphore, account: string, most: number): Promise<number> {
    const held = [];
    for (let i = 0; i < most; i++) {
      const l = await sem.acquire(account, Date.now() + 60);
      if (!l) break;
      held.push(l);
    }
    for (const l of held) l.release();
    return held.length;
  }

  it('lowers the cap by the callers outside the fleet, never below 1, never back up until it lapses', async () => {
    clients = [createRedisClient(conn('single', redis.url))];
    clients[0]!.on('error', () => {});
    expect(await waitFor(() => clients[0]!.status === 'ready', { timeoutMs: 5000 })).toBe(true);
    // One client: its commands run in order, so a release's script has run before the next acquire.
    const sem = fleetSemaphore({ redis: clients[0]!, cap: 6, leaseMs: 2000, maxQueue: 10, lowerMs: 600, peakMs: 20 });
    // What the fleet held a moment ago counts as its own (the peak): let it lapse, so the answer
    // below is compared with this one lease.
    const answered = async (account: string, reported: number) => {
      await new Promise((r) => setTimeout(r, 40));
      (await sem.acquire(account, Date.now() + 100))!.release(reported);
    };
    expect(await room(sem, 'AC-fb', 8)).toBe(6);
    // Twilio counts 4 in flight while the fleet holds this one: 3 outside callers, cap 6 − 3.
    await answered('AC-fb', 4);
    expect(await room(sem, 'AC-fb', 8)).toBe(3);
    // A figure that would raise the held cap is not taken (1 outside → 5): it lapses instead.
    await answered('AC-fb', 2);
    expect(await room(sem, 'AC-fb', 8)).toBe(3);
    // Any number of outside callers leaves one slot.
    await answered('AC-fb', 1000);
    expect(await room(sem, 'AC-fb', 8)).toBe(1);
    // No more than the fleet holds: nothing outside, nothing learned.
    await answered('AC-other', 1);
    expect(await room(sem, 'AC-other', 8)).toBe(6);
    // The lowering lapses back to the configured cap, never above it.
    expect(await waitFor(async () => (await room(sem, 'AC-fb', 8)) === 6, { timeoutMs: 5000 })).toBe(true);
  }, 30_000);

  it('does not count as outside the slots the fleet released a moment before the answer', async () => {
    const sem = fleetSemaphore({ redis: clients[0]!, cap: 6, leaseMs: 2000, maxQueue: 10, lowerMs: 5000 });
    // Five in flight, Twilio counts them all (5) on the first answer; by the time that answer's
    // feedback runs the other four were released: 5 − 1 would be 4 "outside".
    const held = await Promise.all(Array.from({ length: 5 }, () => sem.acquire('AC-peak', Date.now() + 100)));
    for (const l of held.slice(1)) l!.release();
    held[0]!.release(5);
    expect(await room(sem, 'AC-peak', 8)).toBe(6);
  }, 30_000);
});

describe('fleet-wide concurrency cap without Redis', () => {
  it('admits only this replica’s share of the cap while Redis is unusable', async () => {
    const redis = createRedisClient(conn('single', 'redis://127.0.0.1:1'));
    redis.on('error', () => {});
    try {
      const sem = fleetSemaphore({ redis, cap: 8, leaseMs: 1000, maxQueue: 10, replicas: 4, usable: () => false });
      const leases = await Promise.all(Array.from({ length: 4 }, () => sem.acquire('AC-x', Date.now() + 100)));
      expect(leases.filter(Boolean).length).toBe(2);
      leases[0]!.release();
      expect(await sem.acquire('AC-x', Date.now() + 100)).toBeDefined();
    } finally {
      redis.disconnect();
    }
  });
});

describe('fleet-wide concurrency cap on a Redis Cluster', () => {
  let cluster: ClusterSetup;
  let clients: RedisClient[] = [];
  beforeAll(async () => {
    cluster = await startCluster();
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await cluster?.kill();
  });

  it('runs its two-key scripts in one slot and keeps the cap across four replicas', async () => {
    const f = await fleet(conn('cluster', cluster.url), 4, 5);
    clients = f.clients;
    // Fallback would show as more than the cap in use; the cluster path must decide alone.
    const r = await burst(f.sems, 'AC-cluster', 5);
    expect(r.refused).toBe(0);
    expect(r.max).toBe(5);
  }, 30_000);
});
