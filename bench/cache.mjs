#!/usr/bin/env node
// What the response cache saves and costs. The sidecar runs as its own process on
// config/examples/cache.yaml in front of a fake upstream in this process, and is measured for:
//   - a cache hit next to a forward: autocannon drives GETs on a cached route (hits after the
//     first) and on an uncached one (every request forwarded); the sidecar's own CPU time per
//     request is read from /proc (user + system), so the ratio excludes the upstream and the client;
//   - coalescing: 1,000 concurrent identical GETs on a cold key whose upstream takes 200 ms, and
//     how many reached the upstream;
//   - a replayed workload of repeated Lookups and assistant fetches: upstream GETs with the cache
//     against the workload's size;
//   - resident memory with the memory store full (memory variant only).
// Two variants: the memory store (one sidecar), and the Redis store (a real redis-server, two
// sidecars sharing it: hits measured on the replica that did not fetch, the workload spread over
// both). Loopback only.
// Usage: npm run build && node bench/cache.mjs [seconds] [--memory-only | --redis-only]
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import autocannon from 'autocannon';

const args = process.argv.slice(2);
const seconds = Number(args.find((a) => /^\d+(\.\d+)?$/.test(a)) ?? 5);
const root = new URL('..', import.meta.url);
const free = () =>
  new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => r(p));
    });
  });
const ticks = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const HZ = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];
process.on('exit', () => {
  for (const c of children)
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
});

// The upstream counts GETs per path; it runs here, so the sidecar's CPU figure (its own process) excludes it.
const upPort = await free();
let upstreamGets = 0;
const getsByPath = new Map();
const BODY = Buffer.from(
  JSON.stringify({
    id: 'x'.repeat(36),
    name: 'bench',
    model: { provider: 'openai', model: 'gpt-4o' },
    voice: { provider: '11labs' },
    lineTypeIntelligence: { type: 'mobile' },
  }),
);
const up = http.createServer((req, res) => {
  if (req.method === 'GET') {
    upstreamGets++;
    getsByPath.set(req.url, (getsByPath.get(req.url) ?? 0) + 1);
  }
  const answer = () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  };
  if (req.url.startsWith('/assistant/slow-')) setTimeout(answer, 200);
  else answer();
});
up.keepAliveTimeout = 60_000;
await new Promise((r) => up.listen(upPort, '127.0.0.1', r));

async function redisServer() {
  const port = await free();
  const c = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  children.push(c);
  c.once('error', (err) => {
    console.error(`redis-server: ${err.message}`);
    process.exit(2);
  });
  return { port, stop: () => c.kill('SIGKILL') };
}

async function sidecar(extraEnv) {
  const port = await free();
  const adminPort = await free();
  const env = {
    ...process.env,
    PROXY_HOST: '127.0.0.1',
    PROXY_PORT: String(port),
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: String(adminPort),
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_MINUTE: '100000000',
    TWILIO_BASE_URL: `http://127.0.0.1:${upPort}`,
    VAPI_BASE_URL: `http://127.0.0.1:${upPort}`,
    ...extraEnv,
  };
  const c = spawn(process.execPath, ['bin/breakwater.js', 'start', '--config', 'config/examples/cache.yaml'], {
    cwd: root,
    env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(c);
  for (let i = 0; i < 100; i++) {
    try {
      await (await fetch(`http://127.0.0.1:${port}/vapi/call/warm`)).arrayBuffer();
      break;
    } catch {
      await sleep(50);
    }
  }
  return { port, adminPort, pid: c.pid, stop: () => c.kill('SIGTERM') };
}

const auth = { authorization: 'Bearer bench-key' };
const get = async (port, path) => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: auth });
  await r.arrayBuffer();
  return r;
};

async function run(name, bw, path) {
  const opts = { url: `http://127.0.0.1:${bw.port}${path}`, connections: 10, headers: auth };
  await autocannon({ ...opts, duration: 1 }); // warm-up (and the one miss, if any)
  const t0 = ticks(bw.pid);
  const r = await autocannon({ ...opts, duration: seconds });
  const cpu = (ticks(bw.pid) - t0) / HZ;
  const n = r.requests.total;
  return {
    name,
    requests: n,
    rps: Math.round(r.requests.average),
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    non2xx: r.non2xx,
    cpuUsPerRequest: Math.round((cpu / n) * 1e6),
  };
}

/** 1,000 identical GETs at once on a cold key (upstream 200 ms): how many reached the upstream, and how long they took. */
async function coalescing(bw, tag) {
  const path = `/vapi/assistant/slow-${tag}`;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1000 });
  const times = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: 1000 },
      () =>
        new Promise((resolve, reject) => {
          const t = performance.now();
          http
            .get({ host: '127.0.0.1', port: bw.port, path, headers: auth, agent }, (res) => {
              res.resume();
              res.on('end', () => {
                times.push(performance.now() - t);
                resolve();
              });
            })
            .on('error', reject);
        }),
    ),
  );
  const wall = performance.now() - t0;
  agent.destroy();
  times.sort((a, b) => a - b);
  return {
    requests: 1000,
    upstreamGets: getsByPath.get(path.replace('/vapi', '')) ?? 0,
    p50ms: Math.round(times[500]),
    p99ms: Math.round(times[989]),
    wallMs: Math.round(wall),
  };
}

/**
 * A replayed workload: 10,000 GETs, each an assistant fetch (20 assistants) or a line-type Lookup
 * (500 numbers), skewed as real traffic is (a few hot keys), from 20 concurrent clients spread
 * over the replicas.
 */
async function replay(replicas, tag) {
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pick = (n) => Math.floor(n * rand() ** 2);
  const workload = Array.from({ length: 10000 }, () =>
    rand() < 0.5
      ? `/vapi/assistant/${tag}-asst-${pick(20)}`
      : `/twilio/v2/PhoneNumbers/+1555${String(pick(500)).padStart(7, '0')}?Fields=line_type_intelligence&t=${tag}`,
  );
  const gets0 = upstreamGets;
  let w = 0;
  await Promise.all(
    Array.from({ length: 20 }, async (_, c) => {
      while (w < workload.length) await get(replicas[c % replicas.length].port, workload[w++]);
    }),
  );
  const gets = upstreamGets - gets0;
  return { requests: workload.length, distinct: new Set(workload).size, upstreamGets: gets, fewerPct: Number((100 * (1 - gets / workload.length)).toFixed(1)) };
}

async function memoryVariant() {
  const bw = await sidecar({});
  const hit = await run('memory: cache hit (GET /vapi/assistant/a1)', bw, '/vapi/assistant/a1');
  const fwd = await run('memory: forward (GET /vapi/call/c1, not cached)', bw, '/vapi/call/c1');
  const co = await coalescing(bw, 'mem');
  const rp = await replay([bw], 'mem');
  // Resident memory with the store full: 10,000 distinct assistants (the default maxEntries).
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${bw.pid}/status`, 'utf8'))[1]) * 1024;
  const before = rss();
  let next = 0;
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      while (next < 10000) await get(bw.port, `/vapi/assistant/fill-${next++}`);
    }),
  );
  const after = rss();
  bw.stop();
  return { hit, fwd, co, rp, rss: { beforeMiB: Number((before / 2 ** 20).toFixed(1)), fullMiB: Number((after / 2 ** 20).toFixed(1)), bodyBytes: BODY.length } };
}

async function redisVariant() {
  const redis = await redisServer();
  const env = { RATE_LIMIT_STORE: 'redis', REDIS_URL: `redis://127.0.0.1:${redis.port}` };
  const a = await sidecar(env);
  const b = await sidecar(env);
  // Until a replica has connected and learnt the fleet's key secret its copies stay local: wait
  // until a copy fetched through a is a hit on b.
  for (let i = 0; i < 100; i++) {
    await get(a.port, `/vapi/assistant/warm-${i}`);
    await sleep(50);
    if ((await get(b.port, `/vapi/assistant/warm-${i}`)).headers.get('cache-status')?.startsWith('Breakwater; hit')) break;
  }
  // The copy is fetched through a; b's hits come from Redis (b keeps no copy while Redis answers).
  const a1Before = getsByPath.get('/assistant/a1') ?? 0;
  await get(a.port, '/vapi/assistant/a1');
  await sleep(200);
  const hit = await run('redis: cache hit on the other replica (GET /vapi/assistant/a1)', b, '/vapi/assistant/a1');
  const fwd = await run('redis: forward (GET /vapi/call/c1, not cached)', b, '/vapi/call/c1');
  const co = await coalescing(b, 'redis');
  const rp = await replay([a, b], 'redis');
  const fleetGets = (getsByPath.get('/assistant/a1') ?? 0) - a1Before;
  // Lookups that timed out or failed (each sends a replica to its memory store for store.retryAfter).
  const storeErrors = async (bw) => {
    const text = await (await fetch(`http://127.0.0.1:${bw.adminPort}/metrics`)).text();
    return [...text.matchAll(/^breakwater_store_errors_total\{[^}]*\} (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };
  const redisErrors = (await storeErrors(a)) + (await storeErrors(b));
  a.stop();
  b.stop();
  redis.stop();
  return { hit, fwd, co, rp, fleetGetsForA1: fleetGets, redisErrors };
}

const out = {};
if (!args.includes('--redis-only')) out.memory = await memoryVariant();
if (!args.includes('--memory-only')) out.redis = await redisVariant();
console.table(Object.values(out).flatMap((v) => [v.hit, v.fwd]));
for (const [name, v] of Object.entries(out)) {
  console.log(`${name}: sidecar CPU per request, hit / forward: ${(v.hit.cpuUsPerRequest / v.fwd.cpuUsPerRequest).toFixed(2)}`);
  console.log(`${name}: replayed workload: ${v.rp.requests} GETs (${v.rp.distinct} distinct) -> ${v.rp.upstreamGets} upstream GETs (${v.rp.fewerPct} % fewer)`);
  console.log(
    `${name}: coalescing: ${v.co.requests} concurrent identical GETs (upstream 200 ms) -> ${v.co.upstreamGets} upstream GET(s); p50 ${v.co.p50ms} ms, p99 ${v.co.p99ms} ms, all answered in ${v.co.wallMs} ms`,
  );
  if (v.rss) console.log(`${name}: RSS before filling: ${v.rss.beforeMiB} MiB; with 10,000 entries of ~${v.rss.bodyBytes} B bodies: ${v.rss.fullMiB} MiB`);
  if (v.fleetGetsForA1 !== undefined)
    console.log(
      `${name}: upstream GETs for /assistant/a1 across both replicas during the hit run: ${v.fleetGetsForA1}; Redis timeouts/errors over the run (each a fallback spell): ${v.redisErrors}`,
    );
}
console.log(JSON.stringify(out));
up.close();
process.exit(0);
