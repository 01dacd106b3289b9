// The response cache shared by the fleet through a real redis-server: a copy one replica fetched
// answers the other with no upstream call, two credentials never see each other's copies, an
// unsafe request on one replica invalidates for both, entries expire in Redis, answers over the
// size bound are not stored, and a Redis killed mid-run leaves every request answered (from the
// memory store) without a 5xx, and a stalled one costs a request at most the bounded wait.
// The same sharing on Sentinel and on a Cluster (an entry and its path index share a hash tag).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, type TestProxy } from '../support/proxy.js';
import { cli, startCluster, startRedis, startReplicas, startSentinel, type ClusterSetup, type RedisServer, type SentinelSetup } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const CACHE_POLICY = policyWith((p) => {
  // A loaded test machine can stall Redis replies past the 50 ms default (see rate-limit-redis-shared-budget.test.ts).
  p.store.timeout = 0.5;
  const v = p.upstreams.vapi;
  v.routes.unshift(
    { name: 'assistant.fetch', match: 'GET /assistant/*' },
    { name: 'assistant.list', match: 'GET /assistant' },
    { name: 'squad.fetch', match: 'GET /squad/*' },
  );
  v.cache = {
    routes: [
      { route: 'assistant.fetch', ttl: 60 },
      { route: 'assistant.list', ttl: 60, invalidatedBy: ['POST /assistant'] },
      { route: 'call.fetch', ttl: 0.4 },
      { route: 'phone-number', ttl: 60, maxEntryBytes: 100 },
      { route: 'squad.fetch', ttl: 0.3, staleIfError: 60 },
    ],
  };
});

interface Fleet {
  up: FakeUpstream;
  /** Upstream paths whose requests are reset: a failed exchange, which a stale copy stands in for. */
  failing: Set<string>;
  a: TestProxy;
  b: TestProxy;
  clients: Set<Redis>;
  get(p: TestProxy, path: string, key?: string): ReturnType<typeof request>;
  upstreamGets(path: string): number;
  close(): Promise<void>;
}

/** Two replicas on one Redis (any topology), an upstream that numbers its answers and names the credential. */
async function startFleet(env: Record<string, string>): Promise<Fleet> {
  const up = await fakeUpstream('vapi');
  let n = 0;
  const failing = new Set<string>();
  up.handler = (req, res) => {
    if (failing.has(req.url!)) {
      req.socket.resetAndDestroy();
      return;
    }
    n++;
    const big = req.url!.startsWith('/phone-number') ? 'x'.repeat(500) : '';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: req.url, auth: req.headers.authorization ?? null, n, big }));
  };
  const { a, b, clients } = await startReplicas({ VAPI_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '1000000', RATE_LIMIT_STORE: 'redis', ...env }, CACHE_POLICY);
  const get = (p: TestProxy, path: string, key = 'alice') => request(p.proxyPort, 'GET', path, { headers: { authorization: `Bearer ${key}` } });
  const fleet: Fleet = {
    up,
    failing,
    a,
    b,
    clients,
    get,
    upstreamGets: (path) => up.seen.filter((s) => s.method === 'GET' && s.url === path).length,
    close: async () => {
      await a.close();
      await b.close();
      await up.close();
    },
  };
  // Both replicas have learnt the fleet's key secret once a copy stored through one is a hit on the other.
  let shared = false;
  const deadline = Date.now() + 20_000;
  for (let i = 0; i < 200 && !shared && Date.now() < deadline; i++) {
    const path = `/vapi/assistant/warm-${i}`;
    await get(a, path);
    await landed(fleet, path);
    shared = isHit(await get(b, path));
  }
  expect(shared).toBe(true);
  return fleet;
}

const isHit = (r: { headers: Record<string, unknown> }) => String(r.headers['cache-status']).startsWith('Breakwater; hit');

/**
 * Waits (bounded) until the first replica's write reached Redis: while Redis is up a replica keeps
 * no copy of its own, so its repeat is a hit only from Redis.
 */
async function landed(f: Fleet, path: string, key = 'alice'): Promise<boolean> {
  return true === (await waitFor(async () => isHit(await f.get(f.a, path, key)), { timeoutMs: 2000, everyMs: 10 }));
}

/** Both replicas read and write Redis again: a copy fetched through one is a hit at the other's first request. */
async function bothShared(f: Fleet): Promise<boolean> {
  let i = 0;
  return (
    true ===
    (await waitFor(
      async () => {
        const probe = `/vapi/assistant/probe-${Math.random().toString(36).slice(2)}-${i++}`;
        await f.get(f.b, probe);
        await new Promise((r) => setTimeout(r, 50));
        return isHit(await f.get(f.a, probe));
      },
      { timeoutMs: 15_000, everyMs: 100 },
    ))
  );
}

/** The second replica serves the first one's copy, at its first request, with no upstream call. */
async function sharedHit(f: Fleet, path: string, key = 'alice'): Promise<void> {
  const first = await f.get(f.a, path, key);
  expect(first.headers['cache-status']).toBe('Breakwater; fwd=miss');
  expect(await landed(f, path, key)).toBe(true);
  const second = await f.get(f.b, path, key);
  expect(second.headers['cache-status']).toMatch(/^Breakwater; hit; ttl=\d+$/);
  expect(second.text).toBe(first.text);
  // The whole fleet paid for one upstream request.
  expect(f.upstreamGets(path.replace(/^\/vapi/, ''))).toBe(1);
}

describe('Redis cache store (one node)', () => {
  let redis: RedisServer, f: Fleet;
  beforeAll(async () => {
    redis = await startRedis();
    f = await startFleet({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await f?.close();
    await redis?.kill();
  });

  it('a copy fetched through one replica answers the other with zero upstream calls', async () => {
    await sharedHit(f, '/vapi/assistant/a1');
    // Redis holds no path, credential or phone number in clear: keys are hashes.
    const keys = (await cli(redis.port, '--scan', '--pattern', 'bw:cache:*')).trim().split('\n');
    expect(keys.some((k) => k.startsWith('bw:cache:vapi:{'))).toBe(true);
    expect(keys.join(' ')).not.toMatch(/assistant\/|alice|Bearer/);
  });

  it("never answers one credential with another's copy, across replicas", async () => {
    const ids = ['x1', 'x2'];
    for (let round = 0; round < 3; round++) {
      for (const id of ids) {
        for (const [key, p] of [
          ['alice', f.a],
          ['bob', f.b],
          ['alice', f.b],
          ['bob', f.a],
        ] as const) {
          const r = await f.get(p, `/vapi/assistant/${id}`, key);
          expect(r.status).toBe(200);
          expect(r.json.auth).toBe(`Bearer ${key}`);
        }
      }
    }
    // Each credential paid at most once per resource (a second miss only while its write was in flight).
    for (const id of ids) expect(f.upstreamGets(`/assistant/${id}`)).toBeLessThanOrEqual(4);
    for (const id of ids) expect(f.upstreamGets(`/assistant/${id}`)).toBeGreaterThanOrEqual(2);
  });

  it('an unsafe request through one replica invalidates the copy the other would serve', async () => {
    await sharedHit(f, '/vapi/assistant');
    const created = await request(f.b.proxyPort, 'POST', '/vapi/assistant', {
      headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(created.status).toBeLessThan(400);
    const after = await waitFor(async () => (await f.get(f.a, '/vapi/assistant')).headers['cache-status'] === 'Breakwater; fwd=miss', {
      timeoutMs: 2000,
      everyMs: 25,
    });
    expect(after).toBe(true);
  });

  it('every key expires: an entry after its freshness, and then it is gone from Redis', async () => {
    await f.get(f.a, '/vapi/call/c1');
    const ttls: number[] = [];
    expect(
      await waitFor(
        async () => {
          for (const k of (await cli(redis.port, '--scan', '--pattern', 'bw:cache:vapi:*')).trim().split('\n').filter(Boolean))
            ttls.push(Number((await cli(redis.port, 'PTTL', k)).trim()));
          return ttls.length > 0;
        },
        { timeoutMs: 2000 },
      ),
    ).toBe(true);
    // No key without an expiry (-1), the secret aside; -2 is a key that expired between SCAN and PTTL.
    expect(ttls.filter((t) => t === -1)).toEqual([]);
    expect(ttls.some((t) => t > 0 && t <= 400)).toBe(true);
    const gone = await waitFor(async () => (await f.get(f.b, '/vapi/call/c1')).headers['cache-status'] === 'Breakwater; fwd=miss', {
      timeoutMs: 3000,
      everyMs: 100,
    });
    expect(gone).toBe(true);
    expect(f.upstreamGets('/call/c1')).toBe(2);
  });

  it('serves a stale copy from Redis on the other replica while the upstream fails (stale-if-error)', async () => {
    await sharedHit(f, '/vapi/squad/q1');
    // Past its 0.3 s freshness, within its 60 s stale allowance: the age comes from Redis's TTL.
    // (Waiting out a freshness is waiting on the clock: no request may look, or it would refetch.)
    await new Promise((r) => setTimeout(r, 450));
    f.failing.add('/squad/q1');
    const r = await f.get(f.b, '/vapi/squad/q1');
    expect(r.status).toBe(200);
    expect(r.headers['cache-status']).toMatch(/^Breakwater; fwd=stale; ttl=-\d+; detail=stale-if-error$/);
    expect(Number(r.headers['age'])).toBeLessThan(60);
    expect(r.json.url).toBe('/squad/q1');
  });

  it('does not store an answer larger than the route allows, in Redis or in memory', async () => {
    const before = Number((await cli(redis.port, 'DBSIZE')).trim());
    for (const p of [f.a, f.b, f.a]) expect((await f.get(p, '/vapi/phone-number/p1')).headers['cache-status']).toBe('Breakwater; fwd=miss');
    expect(f.upstreamGets('/phone-number/p1')).toBe(3);
    expect(Number((await cli(redis.port, 'DBSIZE')).trim())).toBeLessThanOrEqual(before);
  });

  it('keeps answering from memory when Redis is killed mid-run: no 5xx, no long wait', async () => {
    const statuses: number[] = [];
    const slowest: number[] = [];
    for (let i = 0; i < 60; i++) {
      if (i === 20) await redis.kill();
      const t = performance.now();
      const r = await f.get(i % 2 === 0 ? f.a : f.b, `/vapi/assistant/k${i % 5}`);
      slowest.push(performance.now() - t);
      statuses.push(r.status);
    }
    expect(redis.running).toBe(false);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // The bounded wait (store.timeout 0.5 s here) is the most a lookup can lose to a dead Redis.
    expect(Math.max(...slowest)).toBeLessThan(2000);
    // With Redis gone, a repeat on one replica is a hit from its memory store.
    await f.get(f.a, '/vapi/assistant/during-outage');
    const again = await f.get(f.a, '/vapi/assistant/during-outage');
    expect(again.headers['cache-status']).toMatch(/^Breakwater; hit/);
    expect(f.upstreamGets('/assistant/during-outage')).toBe(1);

    // Redis back on the same port: shared again (the empty Redis makes a new key secret, learnt by both).
    await redis.start();
    const back = await bothShared(f);
    expect(back).toBe(true);
  });
});

describe('Redis cache store: a stalled Redis', () => {
  let redis: RedisServer, f: Fleet;
  beforeAll(async () => {
    redis = await startRedis(undefined, ['--enable-debug-command', 'local']);
    f = await startFleet({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await f?.close();
    await redis?.kill();
  });

  it('answers within the bounded wait while Redis does not answer, then from memory', async () => {
    await sharedHit(f, '/vapi/assistant/s1');
    // DEBUG SLEEP blocks the server while connections stay up: lookups time out rather than fail.
    const stall = cli(redis.port, 'DEBUG', 'SLEEP', '3');
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      const r = await f.get(i % 2 === 0 ? f.a : f.b, '/vapi/assistant/s1');
      times.push(performance.now() - t);
      expect(r.status).toBe(200);
    }
    // Waiting on Redis would take the whole 3 s stall; store.timeout here is 0.5 s.
    expect(Math.max(...times)).toBeLessThan(1500);
    expect(performance.now() - t0).toBeLessThan(2900);
    await stall;
  });
});

describe('Redis cache store: invalidations made during an outage', () => {
  let redis: RedisServer, f: Fleet;
  beforeAll(async () => {
    // Persistent, so the copy survives the restart and only the kept invalidation can remove it.
    redis = await startRedis(undefined, ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', mkdtempSync(path.join(tmpdir(), 'bw-cache-aof-'))]);
    f = await startFleet({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await f?.close();
    await redis?.kill();
  });

  it('are sent once Redis is back, so the other replica does not serve the old copy', async () => {
    await sharedHit(f, '/vapi/assistant');
    await redis.kill();
    const created = await request(f.b.proxyPort, 'POST', '/vapi/assistant', {
      headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(created.status).toBeLessThan(400);
    await redis.start();
    // Both replicas are back on Redis once a copy fetched through b is a hit at a's first request
    // for it (a replica on its memory store misses a new path). b's first request with Redis
    // usable sent what it kept, ahead of its write on the same connection.
    expect(await bothShared(f)).toBe(true);
    expect((await f.get(f.a, '/vapi/assistant')).headers['cache-status']).toBe('Breakwater; fwd=miss');
  }, 30_000);
});

describe('Redis cache store on Sentinel and Cluster', () => {
  let sentinel: SentinelSetup | undefined, cluster: ClusterSetup | undefined;
  afterAll(async () => {
    await sentinel?.kill();
    await cluster?.kill();
  });

  it('shares copies through the master a sentinel names', async () => {
    sentinel = await startSentinel();
    const f = await startFleet({ REDIS_TYPE: 'sentinel', REDIS_URL: sentinel.url });
    try {
      await sharedHit(f, '/vapi/assistant/sen1');
      const r = await f.get(f.b, '/vapi/assistant/sen1', 'bob');
      expect(r.json.auth).toBe('Bearer bob');
    } finally {
      await f.close();
    }
  }, 60_000);

  it('shares copies and invalidates on a Cluster', async () => {
    cluster = await startCluster();
    const f = await startFleet({ REDIS_TYPE: 'cluster', REDIS_URL: cluster.url });
    try {
      for (const id of ['cl1', 'cl2', 'cl3', 'cl4']) await sharedHit(f, `/vapi/assistant/${id}`);
      await sharedHit(f, '/vapi/assistant');
      // The route's index lives in another slot than the list's entry: both invalidations work.
      const created = await request(f.a.proxyPort, 'POST', '/vapi/assistant', {
        headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
        body: '{}',
      });
      expect(created.status).toBeLessThan(400);
      expect(
        await waitFor(async () => (await f.get(f.b, '/vapi/assistant')).headers['cache-status'] === 'Breakwater; fwd=miss', { timeoutMs: 2000, everyMs: 25 }),
      ).toBe(true);
      expect(f.up.seen.filter((s) => s.method === 'GET' && s.url === '/assistant').length).toBe(2);
    } finally {
      await f.close();
    }
  }, 60_000);
});
