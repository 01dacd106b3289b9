#!/usr/bin/env node
// Soak: does Breakwater's state stay bounded under long, varied, partly hostile traffic?
//
//   npm run soak                       # 60 s
//   SOAK_SECONDS=300 npm run soak      # longer
//   SOAK_CONCURRENCY=64 SOAK_CLIENT_IDS=200000 SOAK_MAX_CLIENTS=20000 SOAK_OUT=bench/results npm run soak
//
// It builds dist/ if src/ is newer, starts the real CLI (`bin/breakwater.js start`) on loopback
// ports in front of an in-process fake upstream that flaps (a 10 s cycle: 8 s healthy with a
// Twilio 429 now and then, 1 s of 503s, 1 s alternating reset / 503 / ok), and drives mixed traffic: Twilio and Vapi
// reads and creates, X-Client-Id cycling through 200 000 distinct ids (more than the 100 000 the
// rate limiter keeps per limit, so eviction is exercised), a few hot clients that hit their rate
// limit, unique Idempotency-Keys on creates (more than the 10 000 answers kept), 429-driven holds
// on 20 000 accounts. Breaker and rate limits are on.
//
// Every 2 s it samples the proxy's RSS (/proc/<pid>/status VmRSS), heap used
// (nodejs_heap_size_used_bytes), open fds (process_open_fds), active handles
// (nodejs_active_handles_total), client connections and the sizes of its bounded tables. After
// the load it lets keep-alive connections expire and samples again: fds and handles must return
// to the pre-load baseline (no leaked sockets or timers). The report (a markdown table and the
// JSON with every sample) goes to bench/results/soak-<timestamp>.{md,json}; exit code 0 when
// the verdict is "flat", 1 otherwise.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/wait.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LOCAL = '127.0.0.1';
const SECONDS = Number(process.env.SOAK_SECONDS ?? 60);
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY ?? 64);
const CLIENT_IDS = Number(process.env.SOAK_CLIENT_IDS ?? 200_000);
const OUT_DIR = process.env.SOAK_OUT ?? join(ROOT, 'bench', 'results');
const SAMPLE_MS = 2000;
const MAX_CLIENTS = Number(process.env.SOAK_MAX_CLIENTS ?? 20_000);
const HOT_CLIENTS = 20;
const ACCOUNTS = 20_000;
// Drift allowed between the first and the last third of the post-warm-up samples.
const MAX_RSS_DRIFT = 0.1;
const MAX_HEAP_DRIFT = 0.25;

if (!Number.isFinite(SECONDS) || SECONDS < 10) throw new Error('SOAK_SECONDS must be a number >= 10');

// ------------------------------------------------------------------------------------------
// Build, ports, upstream

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function ensureBuilt() {
  const cli = join(ROOT, 'dist', 'cli.js');
  if (existsSync(cli) && statSync(cli).mtimeMs >= newest(join(ROOT, 'src'))) return;
  log('building dist/ (src/ is newer)');
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')], {
    cwd: ROOT,
    stdio: 'inherit',
    timeout: 180_000,
  });
}

/**
 * The flapping upstream: behaviour by position in a 10 s cycle. Twilio-shaped paths get a 429
 * (with Retry-After: 1) now and then, which holds that account (20 000 of them) in the proxy.
 */
function startUpstream() {
  const t0 = Date.now();
  let n = 0;
  const stats = { requests: 0, ok: 0, s503: 0, s429: 0, resets: 0 };
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    stats.requests++;
    req.resume();
    req.on('error', () => {});
    req.on('end', () => {
      const phase = ((Date.now() - t0) / 1000) % 10;
      const i = n++;
      let mode = 'ok';
      if (phase >= 8 && phase < 9) mode = '503';
      else if (phase >= 9) mode = ['reset', '503', 'ok'][i % 3];
      else if (i % 50 === 0 && req.url.startsWith('/2010-04-01/')) mode = '429';
      setTimeout(() => answer(req, res, mode), 1 + (i % 4));
    });
  });
  function answer(req, res, mode) {
    if (res.destroyed) return;
    if (mode === 'reset') {
      stats.resets++;
      return req.socket.resetAndDestroy();
    }
    if (mode === '503') {
      stats.s503++;
      res.writeHead(503, { 'content-type': 'application/json' });
      return res.end('{"error":"down"}');
    }
    if (mode === '429') {
      stats.s429++;
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
      return res.end('{"code":20429,"message":"Too Many Requests","status":429}');
    }
    stats.ok++;
    const body = JSON.stringify({ sid: `SM${String(stats.ok).padStart(32, '0')}`, status: 'queued' });
    res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return new Promise((resolve) =>
    server.listen(0, LOCAL, () =>
      resolve({
        url: `http://${LOCAL}:${server.address().port}`,
        stats,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }),
    ),
  );
}

// ------------------------------------------------------------------------------------------
// Probes

function get(port, path, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: LOCAL, port, path, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Sum of every series of a metric (all label sets). */
function metricSum(text, name) {
  let sum;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : undefined;
}

async function sample(pid, adminPort, t0, counters) {
  const text = (await get(adminPort, '/metrics')).text;
  return {
    t: Math.round((Date.now() - t0) / 100) / 10,
    rssBytes: rssBytes(pid),
    heapUsedBytes: metricSum(text, 'nodejs_heap_size_used_bytes'),
    heapTotalBytes: metricSum(text, 'nodejs_heap_size_total_bytes'),
    openFds: metricSum(text, 'process_open_fds'),
    activeHandles: metricSum(text, 'nodejs_active_handles_total'),
    clientConnections: metricSum(text, 'breakwater_client_connections'),
    rateLimitKeys: metricSum(text, 'breakwater_rate_limit_keys'),
    idempotencyEntries: metricSum(text, 'breakwater_idempotency_entries'),
    holdsActive: metricSum(text, 'breakwater_upstream_holds_active'),
    breakerOpens: metricSum(text, 'circuit_breaker_opens_total'),
    requests: counters.sent,
  };
}

// ------------------------------------------------------------------------------------------
// Load

function makeLoad(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const counters = { sent: 0, answered: 0, errors: 0, byStatus: {}, byCode: {}, errorCodes: {} };
  let seq = 0;
  let stop = false;
  const random = prng(20_000_017);
  const next = () => {
    const i = seq++;
    // Ids in order (every id as soon as possible), request kinds at random so that each id meets
    // both upstreams over the run.
    const client = i % 20 === 0 ? `hot-${i % HOT_CLIENTS}` : `client-${i % CLIENT_IDS}`;
    const account = `AC${String(Math.floor(random() * ACCOUNTS)).padStart(32, '0')}`;
    const headers = { 'x-client-id': client, 'x-request-id': `soak-${i}` };
    const kind = Math.floor(random() * 20);
    if (kind < 11) return { method: 'GET', path: `/twilio/2010-04-01/Accounts/${account}/Messages.json?PageSize=20`, headers };
    if (kind < 14) {
      const body = `To=%2B1555${String(i % 10_000_000).padStart(7, '0')}&From=%2B15557650000&Body=soak+${i}`;
      return {
        method: 'POST',
        path: `/twilio/2010-04-01/Accounts/${account}/Messages.json`,
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded', 'idempotency-key': `soak-${i}` },
        body,
      };
    }
    if (kind < 17) return { method: 'GET', path: `/vapi/call/${i % 100_000}`, headers };
    const body = JSON.stringify({ assistantId: 'a1', phoneNumberId: 'p1', customer: { number: `+1555${i % 10_000_000}` } });
    return { method: 'POST', path: '/vapi/call', headers: { ...headers, 'content-type': 'application/json', 'idempotency-key': `soak-v-${i}` }, body };
  };
  const one = () =>
    new Promise((resolve) => {
      const r = next();
      counters.sent++;
      const req = http.request({ host: LOCAL, port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
        res.resume();
        res.on('end', () => {
          counters.answered++;
          counters.byStatus[res.statusCode] = (counters.byStatus[res.statusCode] ?? 0) + 1;
          const code = res.headers['x-breakwater-error'] ?? 'upstream';
          counters.byCode[code] = (counters.byCode[code] ?? 0) + 1;
          resolve();
        });
        res.on('error', () => resolve());
      });
      req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
      req.on('error', (e) => {
        counters.errors++;
        counters.errorCodes[e.code ?? e.message] = (counters.errorCodes[e.code ?? e.message] ?? 0) + 1;
        resolve();
      });
      req.end(r.body);
    });
  const workers = [];
  const start = () => {
    for (let w = 0; w < CONCURRENCY; w++) {
      workers.push(
        (async () => {
          while (!stop) await one();
        })(),
      );
    }
  };
  return {
    counters,
    start,
    stop: async () => {
      stop = true;
      await Promise.all(workers);
      agent.destroy();
    },
  };
}

// ------------------------------------------------------------------------------------------
// Analysis

function mean(xs) {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Least-squares slope of y over t, per minute. */
function slopePerMinute(points) {
  const n = points.length;
  if (n < 2) return 0;
  const mt = mean(points.map((p) => p.t));
  const my = mean(points.map((p) => p.y));
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.y - my);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 60;
}

function analyse(samples, key) {
  const pts = samples.filter((s) => typeof s[key] === 'number').map((s) => ({ t: s.t, y: s[key] }));
  const third = Math.max(1, Math.floor(pts.length / 3));
  const first = mean(pts.slice(0, third).map((p) => p.y));
  const last = mean(pts.slice(-third).map((p) => p.y));
  return {
    min: Math.min(...pts.map((p) => p.y)),
    max: Math.max(...pts.map((p) => p.y)),
    firstThirdMean: first,
    lastThirdMean: last,
    drift: first === 0 ? 0 : (last - first) / first,
    slopePerMinute: slopePerMinute(pts),
  };
}

const MB = (b) => (b === undefined ? '–' : (b / 1024 / 1024).toFixed(1));
const pct = (x) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;

function markdown(report) {
  const { samples, summary } = report;
  const rows = samples.map(
    (s) =>
      `| ${s.t.toFixed(0)} | ${s.phase} | ${MB(s.rssBytes)} | ${MB(s.heapUsedBytes)} | ${s.openFds ?? '–'} | ${s.activeHandles ?? '–'} | ${s.clientConnections ?? '–'} | ${s.rateLimitKeys ?? '–'} | ${s.idempotencyEntries ?? '–'} | ${s.holdsActive ?? '–'} | ${s.requests} |`,
  );
  const a = summary;
  return [
    `# Soak ${report.startedAt}`,
    '',
    `${report.config.seconds} s, ${report.config.concurrency} concurrent keep-alive clients, ${report.config.clientIds} distinct X-Client-Id values (clientId.maxClients ${report.config.maxClients}), flapping upstream; Node ${report.node}, ${report.cpus} CPUs.`,
    '',
    `Requests: ${a.load.sent} sent, ${a.load.answered} answered, ${a.load.errors} client errors (${a.load.rps.toFixed(0)}/s). Statuses: ${JSON.stringify(a.load.byStatus)}. Proxy-made answers by code: ${JSON.stringify(a.load.byCode)}.`,
    '',
    '| t (s) | phase | RSS (MiB) | heap used (MiB) | open fds | active handles | client conns | rate-limit keys | idempotency entries | holds active | requests sent |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    `After warm-up (t ≥ ${a.warmupSeconds} s):`,
    '',
    '| | min | max | first third | last third | drift | slope |',
    '|---|---:|---:|---:|---:|---:|---:|',
    `| RSS (MiB) | ${MB(a.rss.min)} | ${MB(a.rss.max)} | ${MB(a.rss.firstThirdMean)} | ${MB(a.rss.lastThirdMean)} | ${pct(a.rss.drift)} | ${MB(a.rss.slopePerMinute)} MiB/min |`,
    `| heap used (MiB) | ${MB(a.heap.min)} | ${MB(a.heap.max)} | ${MB(a.heap.firstThirdMean)} | ${MB(a.heap.lastThirdMean)} | ${pct(a.heap.drift)} | ${MB(a.heap.slopePerMinute)} MiB/min |`,
    `| open fds | ${a.fds.min} | ${a.fds.max} | ${a.fds.firstThirdMean.toFixed(1)} | ${a.fds.lastThirdMean.toFixed(1)} | ${pct(a.fds.drift)} | ${a.fds.slopePerMinute.toFixed(1)}/min |`,
    '',
    `Idle before load: ${a.baseline.openFds} fds, ${a.baseline.activeHandles} handles, ${MB(a.baseline.rssBytes)} MiB RSS. Idle after load (${a.settleSeconds} s later): ${a.after.openFds} fds, ${a.after.activeHandles} handles, ${a.after.clientConnections} client connections, ${MB(a.after.rssBytes)} MiB RSS.`,
    `Largest tables seen: ${a.maxRateLimitKeys} rate-limit keys (cap ${a.caps.rateLimitKeys}), ${a.maxIdempotencyEntries} idempotency entries (cap ${a.caps.idempotencyEntries}). Breaker opens: ${a.breakerOpens}. MaxListenersExceededWarning: ${a.listenerWarnings}. Exit code after SIGTERM: ${a.exitCode}.`,
    '',
    `Verdict: **${a.verdict}**${a.reasons.length ? ` (${a.reasons.join('; ')})` : ''}.`,
    '',
  ].join('\n');
}

/** Deterministic PRNG (mulberry32), so two runs send the same mix. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The shipped policy with clientId.maxClients set. */
function soakPolicy() {
  const text = readFileSync(join(ROOT, 'config', 'policy.yaml'), 'utf8');
  const out = text.replace(/^clientId:\n/m, `clientId:\n  maxClients: ${MAX_CLIENTS}\n`);
  if (out === text) throw new Error('config/policy.yaml has no clientId: block');
  const file = join(tmpdir(), `breakwater-soak-${process.pid}.yaml`);
  writeFileSync(file, out);
  return file;
}

function log(msg) {
  process.stderr.write(`[soak] ${msg}\n`);
}

// ------------------------------------------------------------------------------------------

async function main() {
  ensureBuilt();
  const upstream = await startUpstream();
  const proxyPort = await freePort();
  const adminPort = await freePort();
  let stderr = '';
  let stdoutLines = 0;
  const policyFile = soakPolicy();
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'breakwater.js'), 'start', '--config', policyFile], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PROXY_HOST: LOCAL,
      PROXY_PORT: String(proxyPort),
      ADMIN_HOST: LOCAL,
      ADMIN_PORT: String(adminPort),
      TWILIO_BASE_URL: upstream.url,
      VAPI_BASE_URL: upstream.url,
      RATE_LIMIT_PER_MINUTE: '30',
      CIRCUIT_BREAKER_THRESHOLD: '5',
      CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '1',
      UPSTREAM_TIMEOUT: '5',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => (stdoutLines += d.toString().split('\n').length - 1));
  child.stderr.on('data', (d) => (stderr += d.toString()));
  const exited = new Promise((r) => child.once('exit', (code) => r(code)));
  const stopChild = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.on('exit', stopChild);

  const readyBy = Date.now() + 20_000;
  for (;;) {
    const ok = await get(adminPort, '/readyz', 1000).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    if (Date.now() > readyBy || child.exitCode !== null) throw new Error(`proxy did not start:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`proxy pid ${child.pid} on ${LOCAL}:${proxyPort} (admin ${adminPort}); ${SECONDS} s of load, ${CONCURRENCY} concurrent, ${CLIENT_IDS} client ids`);

  const t0 = Date.now();
  const load = makeLoad(proxyPort);
  const samples = [];
  const baseline = { ...(await sample(child.pid, adminPort, t0, load.counters)), phase: 'idle' };
  samples.push(baseline);
  load.start();
  const loadEnd = t0 + SECONDS * 1000;
  while (Date.now() < loadEnd) {
    await new Promise((r) => setTimeout(r, Math.min(SAMPLE_MS, loadEnd - Date.now())));
    const s = { ...(await sample(child.pid, adminPort, t0, load.counters)), phase: 'load' };
    samples.push(s);
    log(
      `t=${s.t}s rss=${MB(s.rssBytes)}MiB heap=${MB(s.heapUsedBytes)}MiB fds=${s.openFds} handles=${s.activeHandles} conns=${s.clientConnections} rlKeys=${s.rateLimitKeys} idem=${s.idempotencyEntries} sent=${s.requests}`,
    );
  }
  await load.stop();
  // Let client keep-alive (5 s) and upstream pool keep-alive (4 s) connections expire.
  const settleSeconds = 7;
  for (let waited = 0; waited < settleSeconds * 1000; waited += SAMPLE_MS) {
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
    samples.push({ ...(await sample(child.pid, adminPort, t0, load.counters)), phase: 'settle' });
  }
  const after = samples.at(-1);

  child.kill('SIGTERM');
  const exitCode = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
  await upstream.close();
  rmSync(policyFile, { force: true });

  const warmupSeconds = Math.max(10, Math.round(SECONDS * 0.25));
  const steady = samples.filter((s) => s.phase === 'load' && s.t >= warmupSeconds);
  const rss = analyse(steady, 'rssBytes');
  const heap = analyse(steady, 'heapUsedBytes');
  const fds = analyse(steady, 'openFds');
  const c = load.counters;
  const caps = { rateLimitKeys: MAX_CLIENTS * 2, idempotencyEntries: 10_000 }; // per limit: one default limit per upstream
  const maxRateLimitKeys = Math.max(...samples.map((s) => s.rateLimitKeys ?? 0));
  const maxIdempotencyEntries = Math.max(...samples.map((s) => s.idempotencyEntries ?? 0));
  const listenerWarnings = (stderr.match(/MaxListenersExceededWarning/g) ?? []).length;
  const reasons = [];
  if (Math.abs(rss.drift) > MAX_RSS_DRIFT) reasons.push(`RSS drift ${pct(rss.drift)} > ${MAX_RSS_DRIFT * 100} %`);
  if (Math.abs(heap.drift) > MAX_HEAP_DRIFT) reasons.push(`heap drift ${pct(heap.drift)} > ${MAX_HEAP_DRIFT * 100} %`);
  if (after.openFds > baseline.openFds + 2) reasons.push(`fds after load ${after.openFds} > baseline ${baseline.openFds} + 2`);
  if (after.activeHandles > baseline.activeHandles + 2) reasons.push(`handles after load ${after.activeHandles} > baseline ${baseline.activeHandles} + 2`);
  if (after.clientConnections !== 0) reasons.push(`${after.clientConnections} client connections left open`);
  if (maxRateLimitKeys > caps.rateLimitKeys) reasons.push(`rate-limit keys ${maxRateLimitKeys} over cap`);
  if (maxIdempotencyEntries > caps.idempotencyEntries) reasons.push(`idempotency entries ${maxIdempotencyEntries} over cap`);
  if (listenerWarnings > 0) reasons.push(`${listenerWarnings} MaxListenersExceededWarning`);
  if (exitCode !== 0) reasons.push(`exit code ${exitCode}`);
  if (c.answered === 0) reasons.push('no request answered');

  const report = {
    startedAt: new Date(t0).toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    config: {
      seconds: SECONDS,
      concurrency: CONCURRENCY,
      clientIds: CLIENT_IDS,
      maxClients: MAX_CLIENTS,
      hotClients: HOT_CLIENTS,
      accounts: ACCOUNTS,
      sampleMs: SAMPLE_MS,
      env: { RATE_LIMIT_PER_MINUTE: 30, CIRCUIT_BREAKER_THRESHOLD: 5, CIRCUIT_BREAKER_RECOVERY_TIMEOUT: 1, UPSTREAM_TIMEOUT: 5 },
    },
    summary: {
      verdict: reasons.length === 0 ? 'flat' : 'not flat',
      reasons,
      warmupSeconds,
      settleSeconds,
      rss,
      heap,
      fds,
      baseline: { rssBytes: baseline.rssBytes, heapUsedBytes: baseline.heapUsedBytes, openFds: baseline.openFds, activeHandles: baseline.activeHandles },
      after: {
        rssBytes: after.rssBytes,
        heapUsedBytes: after.heapUsedBytes,
        openFds: after.openFds,
        activeHandles: after.activeHandles,
        clientConnections: after.clientConnections,
      },
      maxRateLimitKeys,
      maxIdempotencyEntries,
      caps,
      breakerOpens: after.breakerOpens,
      listenerWarnings,
      exitCode,
      proxyLogLines: stdoutLines,
      upstream: upstream.stats,
      load: { sent: c.sent, answered: c.answered, errors: c.errors, errorCodes: c.errorCodes, rps: c.sent / SECONDS, byStatus: c.byStatus, byCode: c.byCode },
    },
    samples,
  };
  mkdirSync(OUT_DIR, { recursive: true });
  const stamp = report.startedAt.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const base = join(OUT_DIR, `soak-${stamp}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  const md = markdown(report);
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
  log(`report: ${base}.json, ${base}.md`);
  process.exitCode = reasons.length === 0 ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`[soak] failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
