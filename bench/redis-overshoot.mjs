// Limiter accuracy across replicas on a Redis Cluster: four stores (four connections, as four
// replicas would have) share token buckets on a three-master Cluster started here (or the
// cluster in REDIS_URL, "host:port,host:port"). Each replica asks for decisions at a steady pace,
// several times the quota, over several keys spread across the masters, for --seconds (60).
// The quota a key allows in T ms is burst + rate × T; overshoot is what the fleet granted beyond
// it, as a share of it. Not part of `npm test`.
//
//   npm run build && node bench/redis-overshoot.mjs [--seconds 60] [--replicas 4] [--keys 12]
import { cluster, memoryStore, opt, redisStore } from './redis-harness.mjs';

const SECONDS = opt('--seconds', 60);
const REPLICAS = opt('--replicas', 4);
const KEYS = opt('--keys', 12);
const RATE_PER_MIN = 600; // per key
const BURST = 60;
const PACE_PER_REPLICA = 200; // decisions a second, all keys: 4 × 200 = 8 × the 12 keys' 100/s

const url = process.env.REDIS_URL ?? (await cluster());
const limit = { ratePerMs: RATE_PER_MIN / 60_000, burst: BURST, maxDelayMs: 0 };
let errors = 0;
const stores = Array.from({ length: REPLICAS }, () =>
  redisStore({
    connection: { type: 'cluster', url, username: '', password: '', tls: false, caFile: '' },
    replicas: REPLICAS,
    timeoutMs: 500,
    retryMs: 1000,
    local: memoryStore({ maxKeys: 10_000, idleMs: 120_000, clock: () => performance.now() }),
    events: { error: () => errors++, fallback: () => {} },
  }),
);
for (let i = 0; i < 400 && !stores.every((s) => s.redis.status === 'ready'); i++) await new Promise((r) => setTimeout(r, 25));
const buckets = stores.map((s) => s.buckets(`bench|overshoot|${Date.now()}`, limit));
const granted = new Array(KEYS).fill(0);
const asked = new Array(KEYS).fill(0);
const first = new Array(KEYS).fill(Infinity);
const last = new Array(KEYS).fill(0);
let local = 0;

const end = performance.now() + SECONDS * 1000;
const stepMs = 1000 / PACE_PER_REPLICA;
await Promise.all(
  buckets.map(async (b, r) => {
    let next = performance.now() + (r * stepMs) / REPLICAS;
    const pending = new Set();
    for (let i = 0; i < SECONDS * PACE_PER_REPLICA * 2 && performance.now() < end; i++) {
      const k = (i * REPLICAS + r) % KEYS;
      asked[k]++;
      const p = Promise.resolve(b.take(`key-${k}`)).then((d) => {
        if (d.local) local++;
        if (d.allowed) {
          const t = performance.now();
          granted[k]++;
          first[k] = Math.min(first[k], t);
          last[k] = Math.max(last[k], t);
        }
      });
      pending.add(p);
      void p.then(() => pending.delete(p));
      next += stepMs;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((res) => setTimeout(res, wait));
    }
    await Promise.all(pending);
  }),
);

let worst = -Infinity;
let totalGranted = 0;
let totalQuota = 0;
for (let k = 0; k < KEYS; k++) {
  const quota = BURST + limit.ratePerMs * (last[k] - first[k]);
  totalGranted += granted[k];
  totalQuota += quota;
  worst = Math.max(worst, (granted[k] - quota) / quota);
}
// The buckets live on every master (no hash tag: one key, one slot), so each master's clock decides some.
const perMaster = await Promise.all(stores[0].redis.nodes('master').map((n) => n.dbsize()));
const pct = (x) => `${(x * 100).toFixed(2)} %`;
console.log(
  `redis-overshoot cluster(3 masters) replicas=${REPLICAS} keys=${KEYS} ${SECONDS}s: granted ${totalGranted} of quota ${totalQuota.toFixed(0)} ` +
    `(fleet ${pct((totalGranted - totalQuota) / totalQuota)}, worst key ${pct(worst)}); asked ${asked.reduce((a, b) => a + b, 0)}; local fallback decisions ${local}, store errors ${errors}; keys per master ${perMaster.join('/')}`,
);
for (const s of stores) await s.close();
process.exit(0);
