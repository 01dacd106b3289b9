// Decision latency added by Redis: p50/p99 of one rate-limit decision through the real store
// (dist/store/redis.js: one EVALSHA per decision) against the same decision on the in-memory
// store, and of one fleet-bulkhead lease (acquire + release, dist/store/redis-semaphore.js).
// Starts a redis-server on a free loopback port (or uses REDIS_URL) and, unless --single, a
// three-master Cluster; prints one line per topology. Not part of `npm test`.
//
//   npm run build && node bench/redis-decision.mjs [--single] [--n 20000] [--concurrency 1]
//
// Latency is measured one decision at a time by default (what one request waits); with
// --concurrency C, C decisions are kept in flight (the pipelining a busy replica gets).
import { cluster, fleetSemaphore, flag, memoryStore, opt, redisServer, redisStore } from './redis-harness.mjs';

const N = opt('--n', 20_000);
const CONCURRENCY = Math.max(1, opt('--concurrency', 1));
const WARMUP = Math.min(2000, Math.floor(N / 5));
const KEYS = 1000;

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const us = (ms) => (ms < 0.01 ? `${(ms * 1000).toFixed(1)} µs` : `${Math.round(ms * 1000)} µs`);

/** Runs `op(i)` N + WARMUP times, CONCURRENCY at once; the per-op latencies (ms) after warm-up, sorted. */
async function measure(op) {
  const lat = [];
  let i = 0;
  async function worker() {
    for (;;) {
      const k = i++;
      if (k >= N + WARMUP) return;
      const t0 = performance.now();
      await op(k);
      if (k >= WARMUP) lat.push(performance.now() - t0);
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return lat.sort((a, b) => a - b);
}

const limit = { ratePerMs: 1e6, burst: 1e9, maxDelayMs: 0 }; // never refuses: latency, not policy
const local = () => memoryStore({ maxKeys: 100_000, idleMs: 60_000, clock: () => performance.now() });

async function topology(name, type, url) {
  let fellBack = 0;
  const store = redisStore({
    connection: { type, url, username: '', password: '', tls: false, caFile: '' },
    timeoutMs: 1000,
    retryMs: 1000,
    local: local(),
    events: { error: () => fellBack++, fallback: () => {} },
  });
  for (let i = 0; i < 200 && store.redis.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 25));
  const buckets = store.buckets('bench|decision', limit);
  const mem = local().buckets('bench|decision', limit);
  let localDecisions = 0;
  const redisLat = await measure(async (k) => {
    const d = await buckets.take(`client-${k % KEYS}`);
    if (d.local) localDecisions++;
  });
  const memLat = await measure(async (k) => mem.take(`client-${k % KEYS}`));
  const sem = fleetSemaphore({ redis: store.redis, cap: 1e6, leaseMs: 30_000, maxQueue: 0 });
  const semLat = await measure(async (k) => {
    const lease = await sem.acquire(`AC${k % 16}`, Date.now() + 1000);
    lease?.release();
  });
  await store.close();
  const p = (l) => `p50 ${us(quantile(l, 0.5))} p99 ${us(quantile(l, 0.99))}`;
  console.log(
    `redis-decision ${name}: rate-limit decision ${p(redisLat)} (memory store ${p(memLat)}); fleet lease acquire ${p(semLat)}; n=${N} concurrency=${CONCURRENCY}` +
      (localDecisions + fellBack > 0 ? `; WARNING ${localDecisions} decisions fell back locally` : ''),
  );
}

const given = process.env.REDIS_URL;
if (given) await topology('REDIS_URL', process.env.REDIS_TYPE ?? 'single', given);
else await topology('single', 'single', `redis://127.0.0.1:${await redisServer()}`);
if (!flag('--single') && !given) await topology('cluster(3 masters)', 'cluster', await cluster());
process.exit(0);
