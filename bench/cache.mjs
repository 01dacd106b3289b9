#!/usr/bin/env node
// What a cache hit costs next to a forward: the sidecar runs as its own process on
// config/examples/cache.yaml in front of bench/upstream.mjs, autocannon drives GETs on a cached
// route (hits after the first) and on an uncached one (every request forwarded), and the
// sidecar's own CPU time per request is read from /proc (user + system).
// Usage: npm run build && node bench/cache.mjs [seconds]
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import autocannon from 'autocannon';

const seconds = Number(process.argv[2] ?? 5);
const root = new URL('..', import.meta.url);
const free = () => new Promise((r) => { const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
const ticks = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };
const HZ = 100;

const upPort = await free();
const proxyPort = await free();
// The upstream counts GETs; it runs here, so the sidecar's CPU figure (its own process) excludes it.
let upstreamGets = 0;
const BODY = Buffer.from(JSON.stringify({ id: 'x'.repeat(36), name: 'bench', model: { provider: 'openai', model: 'gpt-4o' }, voice: { provider: '11labs' }, lineTypeIntelligence: { type: 'mobile' } }));
const up = http.createServer((req, res) => {
  if (req.method === 'GET') upstreamGets++;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
  res.end(BODY);
});
await new Promise((r) => up.listen(upPort, '127.0.0.1', r));
const env = { ...process.env, PROXY_HOST: '127.0.0.1', PROXY_PORT: String(proxyPort), ADMIN_PORT: '0', LOG_LEVEL: 'warn', RATE_LIMIT_PER_MINUTE: '100000000', TWILIO_BASE_URL: `http://127.0.0.1:${upPort}`, VAPI_BASE_URL: `http://127.0.0.1:${upPort}` };
const bw = spawn(process.execPath, ['bin/breakwater.js', 'start', '--config', 'config/examples/cache.yaml'], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
for (let i = 0; i < 100; i++) {
  try { await fetch(`http://127.0.0.1:${proxyPort}/vapi/call/warm`); break; } catch { await new Promise((r) => setTimeout(r, 50)); }
}

async function run(name, path) {
  const opts = { url: `http://127.0.0.1:${proxyPort}${path}`, connections: 10, headers: { authorization: 'Bearer bench-key' } };
  await autocannon({ ...opts, duration: 1 }); // warm-up (and the one miss)
  const t0 = ticks(bw.pid);
  const r = await autocannon({ ...opts, duration: seconds });
  const cpu = (ticks(bw.pid) - t0) / HZ;
  const n = r.requests.total;
  return { name, requests: n, rps: Math.round(r.requests.average), p50ms: r.latency.p50, p99ms: r.latency.p99, non2xx: r.non2xx, cpuUsPerRequest: Math.round((cpu / n) * 1e6) };
}

const hit = await run('cache hit (GET /vapi/assistant/a1)', '/vapi/assistant/a1');
const fwd = await run('forward (GET /vapi/call/c1, not cached)', '/vapi/call/c1');
// Resident memory with the store full: 10,000 distinct assistants (the default maxEntries).
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${bw.pid}/status`, 'utf8'))[1]) * 1024;
const before = rss();
let next = 0;
await Promise.all(Array.from({ length: 20 }, async () => {
  while (next < 10000) {
    const i = next++;
    const r = await fetch(`http://127.0.0.1:${proxyPort}/vapi/assistant/fill-${i}`, { headers: { authorization: 'Bearer bench-key' } });
    await r.arrayBuffer();
  }
}));
const after = rss();
// A replayed workload: 10,000 GETs, each an assistant fetch (20 assistants) or a line-type Lookup
// (500 numbers), skewed as real traffic is (a few hot keys), from 20 concurrent clients.
const gets0 = upstreamGets;
let seed = 42;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const pick = (n) => Math.floor(n * rand() ** 2);
const workload = Array.from({ length: 10000 }, () => (rand() < 0.5 ? `/vapi/assistant/asst-${pick(20)}` : `/twilio/v2/PhoneNumbers/+1555${String(pick(500)).padStart(7, '0')}?Fields=line_type_intelligence`));
let w = 0;
await Promise.all(Array.from({ length: 20 }, async () => {
  while (w < workload.length) {
    const r = await fetch(`http://127.0.0.1:${proxyPort}${workload[w++]}`, { headers: { authorization: 'Bearer bench-key' } });
    await r.arrayBuffer();
  }
}));
const replayGets = upstreamGets - gets0;
console.table([hit, fwd]);
console.log(`replayed workload: ${workload.length} GETs (${new Set(workload).size} distinct) -> ${replayGets} upstream GETs (${(100 * (1 - replayGets / workload.length)).toFixed(1)} % fewer)`);
console.log(`RSS before filling: ${(before / 2 ** 20).toFixed(1)} MiB; with 10,000 entries of ~${(await (await fetch(`http://127.0.0.1:${proxyPort}/vapi/assistant/fill-1`, { headers: { authorization: 'Bearer bench-key' } })).arrayBuffer()).byteLength} B bodies: ${(after / 2 ** 20).toFixed(1)} MiB`);
console.log(`sidecar CPU per request, hit / forward: ${(hit.cpuUsPerRequest / fwd.cpuUsPerRequest).toFixed(2)}`);
bw.kill('SIGTERM');
up.close();
