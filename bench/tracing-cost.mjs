// CPU per request with tracing off and with 100 % sampling, in one process on loopback:
// `npm run build && node bench/tracing-cost.mjs [requests]`. The OTLP receiver runs in this
// process too, so the "on" figure includes decoding-free receipt of the exports (an over-estimate).
// CPU is process.cpuUsage() (user + system) over the measured requests, client included; the
// difference between the two runs is what tracing costs.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { parsePolicy } from '../dist/policy/load.js';
import { start } from '../dist/server.js';

const N = Number(process.argv[2] ?? 4000);
const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end('{"sid":"SM1"}'));
});
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const receiver = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end());
});
await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${upstream.address().port}`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function send(port) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/twilio/2010-04-01/Accounts/AC1/Messages.json',
        agent,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      },
      (res) => {
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', reject);
    req.end('Body=hi');
  });
}

async function run(label) {
  const policy = parsePolicy(readFileSync('config/policy.yaml', 'utf8'), {
    env: {
      PROXY_HOST: '127.0.0.1',
      PROXY_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      TWILIO_BASE_URL: base,
      RATE_LIMIT_PER_MINUTE: '100000000',
      LOG_LEVEL: 'warn',
    },
  });
  const p = await start({ configPath: '(bench)', policy, log: pino({ level: 'warn' }) });
  const batch = async (n) => {
    for (let i = 0; i < n; i += 8) await Promise.all(Array.from({ length: 8 }, () => send(p.proxyPort)));
  };
  await batch(1000); // warm up
  const c0 = process.cpuUsage();
  await batch(N);
  const c = process.cpuUsage(c0);
  await p.shutdown();
  const us = (c.user + c.system) / N;
  console.log(`${label}: ${us.toFixed(1)} µs CPU per request (N=${N})`);
  return us;
}

const off = await run('tracing off');
Object.assign(process.env, {
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${receiver.address().port}/v1/traces`,
  OTEL_TRACES_SAMPLER: 'always_on',
  OTEL_BSP_SCHEDULE_DELAY: '200',
});
const on = await run('tracing on, 100 % sampled, OTLP/protobuf');
console.log(`tracing cost: ${(on - off).toFixed(1)} µs CPU per request`);
agent.destroy();
upstream.close();
receiver.close();
