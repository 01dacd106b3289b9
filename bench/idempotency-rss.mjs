#!/usr/bin/env node
// Resident memory of the idempotency store under its worst everyday load: N keyed creates whose
// answers are large (a 60 KiB call or message resource), 16 at a time, on the default policy and
// its default byte budget (store.idempotencyBytes). Samples the proxy's RSS every 100 ms and
// prints before / peak / after, with the heap and external memory from /metrics at the end.
// Usage: npm run build && node bench/idempotency-rss.mjs [creates=11000] [answerKiB=60] [-- node flags…]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { freePort } from '../test/support/wait.mjs';

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const nodeFlags = dash < 0 ? [] : argv.slice(dash + 1);
const [creates = 11000, answerKiB = 60] = (dash < 0 ? argv : argv.slice(0, dash)).map(Number);
const CONCURRENCY = 16;

const item = JSON.stringify({ sid: `CA${'d'.repeat(32)}`, status: 'queued', transcript: 'x'.repeat(200) });
let text = '{"calls":[';
while (text.length + item.length + 3 < answerKiB * 1024) text += (text.endsWith('[') ? '' : ',') + item;
const ANSWER = Buffer.from(`${text}]}`.padEnd(answerKiB * 1024, ' '));
let created = 0;
const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    created++;
    res.writeHead(201, { 'content-type': 'application/json', 'content-length': ANSWER.length });
    res.end(ANSWER);
  });
});
const upPort = await freePort();
await new Promise((r) => upstream.listen(upPort, '127.0.0.1', r));

const [proxyPort, adminPort] = [await freePort(), await freePort()];
const proxy = spawn(process.execPath, [...nodeFlags, 'bin/breakwater.js', 'start'], {
  env: {
    ...process.env,
    PROXY_PORT: String(proxyPort),
    ADMIN_PORT: String(adminPort),
    TWILIO_BASE_URL: `http://127.0.0.1:${upPort}`,
    RATE_LIMIT_PER_MINUTE: '100000000',
    LOG_LEVEL: 'warn',
  },
  stdio: ['ignore', 'ignore', 'inherit'],
});
process.on('exit', () => proxy.kill('SIGKILL'));
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proxy.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
for (let i = 0; i < 200; i++) {
  const up = await new Promise((r) =>
    http
      .get({ port: adminPort, host: '127.0.0.1', path: '/readyz' }, (res) => {
        res.resume();
        r(res.statusCode === 200);
      })
      .on('error', () => r(false)),
  );
  if (up) break;
  await new Promise((r) => setTimeout(r, 50));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
const body = 'To=%2B15558675310&From=%2B15017122661&Body=hello';
const auth = `Basic ${Buffer.from(`AC${'1'.repeat(32)}:token`).toString('base64')}`;
function post(i) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: '127.0.0.1',
        port: proxyPort,
        method: 'POST',
        path: `/twilio/2010-04-01/Accounts/AC${'1'.repeat(32)}/Calls.json`,
        headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded', 'content-length': body.length, 'idempotency-key': `bench-${i}` },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const before = rss();
let peak = before;
const sampler = setInterval(() => (peak = Math.max(peak, rss())), 100);
const started = performance.now();
const statuses = new Map();
let next = 0;
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < creates) {
      const s = await post(next++);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
  }),
);
const seconds = (performance.now() - started) / 1000;
await new Promise((r) => setTimeout(r, 1000));
clearInterval(sampler);
const after = rss();
peak = Math.max(peak, after);
const metrics = await new Promise((r) =>
  http.get({ port: adminPort, host: '127.0.0.1', path: '/metrics' }, (res) => {
    let t = '';
    res.on('data', (c) => (t += c));
    res.on('end', () => r(t));
  }),
);
const metric = (name) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(metrics)?.[1] ?? Number.NaN) / 2 ** 20;
const result = {
  creates,
  answerKiB,
  nodeFlags,
  seconds: Number(seconds.toFixed(1)),
  statuses: Object.fromEntries(statuses),
  upstreamCreates: created,
  rssMiB: { before: Number(before.toFixed(1)), peak: Number(peak.toFixed(1)), after: Number(after.toFixed(1)) },
  heapUsedMiB: Number(metric('nodejs_heap_size_used_bytes').toFixed(1)),
  externalMiB: Number(metric('nodejs_external_memory_bytes').toFixed(1)),
  heapTotalMiB: Number(metric('nodejs_heap_size_total_bytes').toFixed(1)),
};
console.log(JSON.stringify(result));
proxy.kill('SIGTERM');
agent.destroy();
upstream.close();
await new Promise((r) => proxy.once('exit', r));
