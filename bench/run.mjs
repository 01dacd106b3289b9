#!/usr/bin/env node
// Breakwater's benchmark matrix (issue 7). Every target runs in the same session, interleaved
// over several rounds, so a slow minute on the machine hits all of them alike; medians and
// spread (min/max) are reported, never a best run.
//
//   npm run bench              3 rounds, 5 s per run, wrk cross-check when wrk is installed
//   npm run bench:quick        small GET and fast fail only, the headline targets, 2 rounds × 2 s,
//                              no wrk (a before/after check, < 60 s); --only picks other
//                              scenarios, but a quick run never starts the stage-off variants
//   node bench/run.mjs --only=get,post --rounds=2 --duration=3 --wrk --no-nginx --keep
//   node bench/run.mjs --render=bench/results/<date>.json   re-derive goals and markdown of a run
// Scenario ids for --only: get post large fastfail redis clients routes bodies.
//
// Targets: the upstream direct; Breakwater on its default policy (every stage on, access log
// written to a file) and with each stage switched off in turn; node-http-proxy
// (bench/baseline-http-proxy.mjs); a minimal undici proxy (bench/baseline-undici.mjs); nginx
// when installed (bench/nginx.conf). Proxies are pinned to CPU 0, the upstream, Redis and the
// load generator (this process, autocannon) to CPU 1, when taskset exists.
//
// Per run: req/s, p50/p99, errors/timeouts/non-2xx, RSS peak (VmRSS sampled from
// /proc/<pid>/status), CPU µs per request (utime+stime from /proc/<pid>/stat), the share of
// core 0 used by other processes during the run (noise), and how busy core 1 was (when it is
// saturated the load generator, not the proxy, set the pace).
import autocannon from 'autocannon';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { spawn, execFileSync, execSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = join(ROOT, 'bench');

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? def : a.slice(name.length + 3);
};
const QUICK = flag('quick');
const ROUNDS = Number(opt('rounds', QUICK ? 2 : 3));
// autocannon counts time in whole seconds: a run shorter than 1 s still lasts 1 s.
const DURATION = Math.max(1, Math.round(Number(opt('duration', QUICK ? 2 : 5)))); // seconds per measured run
const WARMUP = Math.round(Number(opt('warmup', 0))); // extra seconds of warm-up before each measured run
const CONNECTIONS = Number(opt('connections', 50));
// A quick run measures what a before/after check needs, warmed as well as a full run: the small
// GET against the baselines and the two fast-fail paths. Eighteen targets cannot all be warmed
// on one core in a minute, and a cold one reads two to five times slower than it is.
const ONLY = opt('only', '') ? new Set(opt('only', '').split(',')) : QUICK ? new Set(['get', 'fastfail']) : undefined;
const USE_WRK = flag('wrk') || (!QUICK && !flag('no-wrk'));
const USE_NGINX = !flag('no-nginx');
const KEEP = flag('keep');
const OUT_DIR = opt('out', join(BENCH, 'results'));

const has = (cmd) => {
  try {
    execSync(`command -v ${cmd}`, { stdio: 'ignore', shell: '/bin/bash' });
    return true;
  } catch {
    return false;
  }
};
const CPUS = os.cpus().length;
const PIN = has('taskset') && CPUS >= 2;
const HAVE = { wrk: has('wrk'), nginx: has('nginx'), redis: has('redis-server') };
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

// ---------------------------------------------------------------- child processes
// Every child is started detached (its own process group) and killed by group on any exit path.
const children = [];
function startChild(name, cmd, args, { cpu, env, log, pinLater = false } = {}) {
  const [c, a] = PIN && cpu !== undefined && !pinLater ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
  const out = log ? openSync(log, 'a') : 'ignore';
  const child = spawn(c, a, { detached: true, stdio: ['ignore', out, out], env: { ...process.env, ...env }, cwd: ROOT });
  child.on('exit', (code, signal) => {
    child.exited = { code, signal };
  });
  children.push(child);
  child.benchName = name;
  return child;
}
function killAll() {
  for (const c of children) {
    if (c.exited) continue;
    try {
      process.kill(-c.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

// ---------------------------------------------------------------- small helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 0) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function httpRequest(port, method, path, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 2000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

async function waitHttp(port, path, child, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child?.exited) throw new Error(`${child.benchName} exited early (${JSON.stringify(child.exited)})`);
    try {
      const r = await httpRequest(port, 'GET', path);
      if (r.status < 500 || path === '/') return r;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${child?.benchName ?? port} not answering on ${port}${path} in ${ms} ms`);
    await sleep(50);
  }
}

async function waitTcp(port, child, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child?.exited) throw new Error(`${child.benchName} exited early (${JSON.stringify(child.exited)})`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${child?.benchName ?? port} not listening on ${port}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------- /proc sampling
function cpuTicks(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15)
  } catch {
    return NaN;
  }
}
function rssKb(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}
/** Busy and total ticks of one core from /proc/stat. */
function coreTicks(cpu) {
  try {
    const line = readFileSync('/proc/stat', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`cpu${cpu} `));
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = v[3] + (v[4] ?? 0);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}
/**
 * Waits until core 0 has been nearly idle for half a second, or `maxMs`. After a warm-up every
 * proxy still has optimising-compiler jobs and a garbage collection to finish, all on core 0,
 * and a run measured during that tail charges them to whichever target runs first.
 */
async function quietCore0(maxMs) {
  if (!PIN) return { quiet: true, ms: 0 };
  const started = Date.now();
  let quiet = 0;
  let last = coreTicks(0);
  while (Date.now() - started < maxMs && quiet < 2) {
    await sleep(250);
    const now = coreTicks(0);
    const share = (now.busy - last.busy) / Math.max(1, now.total - last.total);
    quiet = share < 0.1 ? quiet + 1 : 0;
    last = now;
  }
  return { quiet: quiet >= 2, ms: Date.now() - started };
}
/** The process and every descendant (nginx master + worker). */
function processTree(pid) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {
      /* gone */
    }
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const k of kids.get(p) ?? []) walk(k);
  };
  walk(pid);
  return out;
}
const sum = (pids, f) => pids.reduce((a, p) => a + f(p), 0);

/** Runs `work` while sampling the target's RSS; returns CPU, RSS and core-busy figures. */
async function measure(pids, work) {
  const c0 = coreTicks(0);
  const c1 = coreTicks(1);
  const cpu0 = sum(pids, cpuTicks);
  const self0 = cpuTicks(process.pid);
  let peak = sum(pids, rssKb);
  const timer = setInterval(() => {
    const r = sum(pids, rssKb);
    if (r > peak) peak = r;
  }, 50);
  let result;
  try {
    result = await work();
  } finally {
    clearInterval(timer);
  }
  const r = sum(pids, rssKb);
  if (r > peak) peak = r;
  const cpu = sum(pids, cpuTicks) - cpu0;
  const self = cpuTicks(process.pid) - self0;
  const d0 = coreTicks(0);
  const d1 = coreTicks(1);
  const core0Total = d0.total - c0.total;
  return {
    result,
    cpuSeconds: cpu / CLK_TCK,
    loadgenSeconds: self / CLK_TCK,
    rssPeakMb: peak / 1024,
    // Core 0 time not spent by the target: other processes competing with the proxy.
    core0Foreign: PIN ? Math.max(0, (d0.busy - c0.busy - cpu) / core0Total) : NaN,
    core1Busy: (d1.busy - c1.busy) / (d1.total - c1.total),
  };
}

// ---------------------------------------------------------------- load generators
/**
 * One autocannon run. Latencies are recorded here from every response, in µs precision and
 * whatever the status (autocannon's own histogram keeps whole milliseconds of 2xx answers only,
 * which says nothing about a fast-fail path).
 */
async function cannon(url, req, { duration = DURATION, connections = CONNECTIONS, amount } = {}) {
  const inst = autocannon({
    url,
    connections,
    pipelining: 1,
    timeout: 10,
    ...(amount ? { amount } : { duration }),
    requests: [req],
  });
  const lat = [];
  inst.on('response', (_client, _status, _bytes, ms) => lat.push(ms));
  const result = await inst;
  const sorted = Float64Array.from(lat).sort();
  const pct = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
  result.exact = { p50: pct(0.5), p99: pct(0.99), max: sorted.length ? sorted[sorted.length - 1] : NaN, n: sorted.length };
  return result;
}

function wrk(url, seconds) {
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${Math.max(1, Math.round(seconds))}s`, '--latency', url];
  const [cmd, a] = PIN ? ['taskset', ['-c', '1', 'wrk', ...args]] : ['wrk', args];
  const out = execFileSync(cmd, a, { encoding: 'utf8' });
  const unit = { us: 0.001, ms: 1, s: 1000 };
  const lat = (pct) => {
    const m = new RegExp(`${pct}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    return m ? Number(m[1]) * unit[m[2]] : NaN;
  };
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50: lat(50),
    p99: lat(99),
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
    errors: (/Socket errors: (.*)/.exec(out)?.[1] ?? '').trim() || undefined,
  };
}

// ---------------------------------------------------------------- workload shapes
const ACCOUNT = 'AC123';
const MESSAGES = `/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
/** A Twilio message create, form-encoded, padded to exactly 4 KiB (real bodies cap at 1600 characters; the size is what is measured). */
function twilioForm(size) {
  const base = new URLSearchParams({ To: '+15558675310', From: '+15017122661', StatusCallback: 'https://app.example.com/twilio/status', Body: '' }).toString();
  return Buffer.from(base + 'x'.repeat(size - base.length));
}
const FORM = twilioForm(4096);
const SHAPES = {
  get: { method: 'GET', path: MESSAGES },
  post: { method: 'POST', path: MESSAGES, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: FORM },
  large: { method: 'GET', path: `/2010-04-01/Accounts/${ACCOUNT}/Media/Large.json` },
};
function clientsRequest(distinct) {
  let n = 0;
  return {
    method: 'GET',
    path: MESSAGES,
    // A fresh header object per request: autocannon rebuilds the request from it.
    setupRequest: (req) => ({ ...req, headers: { 'x-client-id': `client-${n++ % distinct}` } }),
  };
}

// ---------------------------------------------------------------- policies
const DEFAULT_POLICY = join(ROOT, 'config', 'policy.yaml');
function policyVariant(tmp, name, edit) {
  const doc = parseDocument(readFileSync(DEFAULT_POLICY, 'utf8'));
  const set = (path, value) => doc.setIn(path, doc.createNode(value));
  edit(set, doc);
  const file = join(tmp, `${name}.yaml`);
  writeFileSync(file, doc.toString());
  return file;
}
const bothUpstreams = (set, path, value) => {
  for (const u of ['twilio', 'vapi']) set(['upstreams', u, ...path], value);
};
function routes(n) {
  const real = [
    { name: 'messages.list', match: 'GET /2010-04-01/Accounts/*/Messages.json' },
    { name: 'accounts', match: '/2010-04-01/Accounts/**' },
  ];
  const out = [];
  const verbs = ['GET', 'POST', 'DELETE'];
  for (let i = 0; out.length < n - real.length; i++) {
    const res = `Resource${i}`;
    out.push({ name: `r${i}.list`, match: `${verbs[i % 3]} /2010-04-01/Accounts/*/${res}.json` });
    if (out.length < n - real.length) out.push({ name: `r${i}.fetch`, match: `GET /2010-04-01/Accounts/*/${res}/{Sid}.json` });
  }
  // The matching route last: a list scan would pay for every entry before it.
  return [...out, ...real];
}

// ---------------------------------------------------------------- targets
const HUGE = 1e9; // RATE_LIMIT_PER_MINUTE: nothing is limited

async function main() {
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
    console.error('bench: building first (npm run build)');
    execSync('npm run build', { cwd: ROOT, stdio: 'inherit' });
  }
  if (PIN) execSync(`taskset -a -p -c 1 ${process.pid}`, { stdio: 'ignore' });
  const tmp = mkdtempSync(join(os.tmpdir(), 'bw-bench-'));
  const startedAt = new Date();
  const t0 = Date.now();
  const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);
  log(`tmp ${tmp}; pinning ${PIN ? 'on (proxies on CPU 0; upstream, redis, load generator on CPU 1)' : 'off'}; ${ROUNDS} round(s) × ${DURATION}s runs`);

  const upPort = await freePort();
  const upstream = startChild('upstream', process.execPath, [join(BENCH, 'upstream.mjs'), String(upPort)], { cpu: 1, log: join(tmp, 'upstream.log') });
  const upOrigin = `http://127.0.0.1:${upPort}`;
  let redisPort;
  let redis;
  if (HAVE.redis) {
    redisPort = await freePort();
    redis = startChild('redis', 'redis-server', ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no'], {
      cpu: 1,
      log: join(tmp, 'redis.log'),
    });
  }

  /** name → { port, pids, prefix, kind, child, admin } */
  const targets = {};
  const bwEnv = (extra) => ({
    PROXY_HOST: '127.0.0.1',
    ADMIN_HOST: '127.0.0.1',
    TWILIO_BASE_URL: upOrigin,
    VAPI_BASE_URL: upOrigin,
    RATE_LIMIT_PER_MINUTE: String(HUGE),
    LOG_LEVEL: 'info',
    ...extra,
  });
  async function breakwater(name, { env = {}, config, what }) {
    const port = await freePort();
    const admin = await freePort();
    const args = [join(ROOT, 'bin', 'breakwater.js'), 'start', ...(config ? ['--config', config] : [])];
    // Started on any core (start-up is the costly part of a quick run), pinned once ready.
    const child = startChild(name, process.execPath, args, {
      cpu: 0,
      pinLater: true,
      env: bwEnv({ PROXY_PORT: String(port), ADMIN_PORT: String(admin), ...env }),
      log: join(tmp, `${name}.log`),
    });
    targets[name] = { name, kind: 'breakwater', what, port, admin, child, prefix: '/twilio', log: join(tmp, `${name}.log`) };
  }

  // Policies for the stage-off variants and the scenario-specific instances.
  const P = {
    noAccessLog: policyVariant(tmp, 'no-access-log', (set) => set(['logging', 'accessLog'], false)),
    noRateLimit: policyVariant(tmp, 'no-rate-limits', (set) => bothUpstreams(set, ['rateLimits'], [])),
    retries0: policyVariant(tmp, 'retries-0', (set) => bothUpstreams(set, ['retry', 'attempts'], 0)),
    noIdempotency: policyVariant(tmp, 'no-idempotency', (set) => bothUpstreams(set, ['idempotency', 'enabled'], false)),
    noHold: policyVariant(tmp, 'no-hold', (set) => bothUpstreams(set, ['holdOn429', 'enabled'], false)),
    routes2: policyVariant(tmp, 'routes-2', (set) => set(['upstreams', 'twilio', 'routes'], routes(2))),
    routes500: policyVariant(tmp, 'routes-500', (set) => set(['upstreams', 'twilio', 'routes'], routes(500))),
    large: policyVariant(tmp, 'large-bodies', (set) => set(['server', 'maxBodyBytes'], 64 * 1024 * 1024)),
  };

  const want = (scenario) => !ONLY || ONLY.has(scenario);
  await breakwater('bw-default', { what: 'default policy: every stage on, access log to a file' });
  if (want('get') && !QUICK) {
    await breakwater('bw-no-access-log', { config: P.noAccessLog, what: 'logging.accessLog: false' });
    await breakwater('bw-no-rate-limit', { config: P.noRateLimit, what: 'rateLimits: [] (stage removed)' });
    await breakwater('bw-breaker-disabled', { env: { CIRCUIT_BREAKER_ENABLED: 'false' }, what: 'CIRCUIT_BREAKER_ENABLED=false (metrics-only: still counts)' });
    await breakwater('bw-retries-0', { config: P.retries0, what: 'retry.attempts: 0 (stage still counts for the budget)' });
    await breakwater('bw-no-idempotency', { config: P.noIdempotency, what: 'idempotency.enabled: false (stage removed)' });
    await breakwater('bw-no-hold', { config: P.noHold, what: 'holdOn429.enabled: false (stage removed)' });
  }
  if (want('fastfail')) {
    await breakwater('bw-open', { what: 'default policy, breaker forced open (POST /breakers/twilio/open)' });
    await breakwater('bw-limited', { env: { RATE_LIMIT_PER_MINUTE: '1' }, what: 'RATE_LIMIT_PER_MINUTE=1: everything after the first request is 429' });
  }
  if (want('redis') && HAVE.redis)
    await breakwater('bw-redis', { env: { RATE_LIMIT_STORE: 'redis', REDIS_URL: `redis://127.0.0.1:${redisPort}` }, what: 'RATE_LIMIT_STORE=redis' });
  if (want('clients')) await breakwater('bw-clients', { what: 'default policy; X-Client-Id from a population of 1 or 100k' });
  if (want('routes')) {
    await breakwater('bw-routes-2', { config: P.routes2, what: '2 twilio routes' });
    await breakwater('bw-routes-500', { config: P.routes500, what: '500 twilio routes (the matching one last)' });
  }
  if (want('bodies')) await breakwater('bw-large', { config: P.large, what: 'default policy, maxBodyBytes 64 MiB' });

  // Baselines.
  const basePort = await freePort();
  targets['http-proxy'] = {
    name: 'http-proxy',
    kind: 'baseline',
    what: 'node-http-proxy 1.18, keep-alive agent',
    port: basePort,
    prefix: '/twilio',
    child: startChild('http-proxy', process.execPath, [join(BENCH, 'baseline-http-proxy.mjs'), String(basePort), upOrigin], {
      cpu: 0,
      log: join(tmp, 'http-proxy.log'),
    }),
  };
  const undiciPort = await freePort();
  targets.undici = {
    name: 'undici',
    kind: 'baseline',
    what: 'minimal undici Agent.dispatch proxy',
    port: undiciPort,
    prefix: '/twilio',
    child: startChild('undici', process.execPath, [join(BENCH, 'baseline-undici.mjs'), String(undiciPort), upOrigin], { cpu: 0, log: join(tmp, 'undici.log') }),
  };
  if (HAVE.nginx && USE_NGINX) {
    const port = await freePort();
    const prefix = join(tmp, 'nginx');
    mkdirSync(join(prefix, 'tmp'), { recursive: true });
    const root = process.getuid?.() === 0;
    const conf = readFileSync(join(BENCH, 'nginx.conf'), 'utf8')
      .replace('__USER__', root ? 'user root;' : '')
      .replace('__UPSTREAM_PORT__', String(upPort))
      .replace('__PORT__', String(port));
    writeFileSync(join(prefix, 'nginx.conf'), conf);
    const child = startChild('nginx', 'nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-g', 'daemon off;'], { cpu: 0, log: join(tmp, 'nginx.out') });
    targets.nginx = {
      name: 'nginx',
      kind: 'baseline',
      what: 'nginx 1 worker, upstream keepalive, access log buffered to a file',
      port,
      prefix: '/twilio',
      child,
    };
  }
  targets.direct = { name: 'direct', kind: 'direct', what: 'the upstream itself (its CPU is the upstream’s)', port: upPort, prefix: '', child: upstream };

  // Wait for everything, then fix the pid sets measured per target.
  await waitTcp(upPort, upstream);
  if (redis) await waitTcp(redisPort, redis);
  await Promise.all(
    Object.values(targets).map(async (t) => {
      if (t.kind === 'breakwater') await waitHttp(t.admin, '/healthz', t.child);
      else await waitTcp(t.port, t.child);
    }),
  );
  for (const t of Object.values(targets)) {
    t.pids = t.name === 'nginx' ? processTree(t.child.pid) : [t.child.pid];
    if (PIN && t.kind === 'breakwater') execFileSync('taskset', ['-a', '-p', '-c', '0', String(t.child.pid)], { stdio: 'ignore' });
  }
  const check = await httpRequest(targets['bw-default'].port, 'GET', `/twilio${MESSAGES}`);
  if (check.status !== 200) throw new Error(`bw-default answered ${check.status} before the benchmark: ${check.body}`);
  if (targets['bw-open']) {
    const r = await httpRequest(targets['bw-open'].admin, 'POST', '/breakers/twilio/open', { headers: { 'x-breakwater-admin': '1' } });
    if (r.status !== 200) throw new Error(`could not force the breaker open: ${r.status}`);
  }
  if (targets['bw-limited']) await httpRequest(targets['bw-limited'].port, 'GET', `/twilio${MESSAGES}`); // spend the one token
  log(`started ${Object.keys(targets).length} targets`);

  // ------------------------------------------------------------ the matrix
  // Each scenario: which targets, which request, and which target its ratios are taken against.
  const scenarios = [];
  const add = (id, title, targetNames, req, extra = {}) => {
    const names = targetNames.filter((n) => targets[n]);
    if (want(id.split(':')[0]) && names.length) scenarios.push({ id, title, targets: names, req, ...extra });
  };
  const proxies = ['direct', 'bw-default', 'http-proxy', 'undici', 'nginx'];
  add(
    'get',
    'small GET (228 B JSON answer)',
    [
      'direct',
      'bw-default',
      'bw-no-access-log',
      'bw-no-rate-limit',
      'bw-breaker-disabled',
      'bw-retries-0',
      'bw-no-idempotency',
      'bw-no-hold',
      'http-proxy',
      'undici',
      'nginx',
    ],
    SHAPES.get,
  );
  add('post', '4 KiB form POST (Twilio message create)', proxies, SHAPES.post);
  add('large', '64 KiB response', proxies, SHAPES.large);
  add('fastfail:open', 'open breaker fast fail (503)', ['bw-open'], SHAPES.get, { expect: 503 });
  add('fastfail:429', 'rate-limited (429)', ['bw-limited'], SHAPES.get, { expect: 429 });
  add('redis', 'Redis limiter store, small GET', ['bw-redis'], SHAPES.get);
  add('clients:1', '1 client (X-Client-Id)', ['bw-clients'], () => clientsRequest(1));
  add('clients:100k', '100k distinct clients (X-Client-Id rotating)', ['bw-clients'], () => clientsRequest(100_000));
  add('routes:2', '2 routes', ['bw-routes-2'], SHAPES.get);
  add('routes:500', '500 routes', ['bw-routes-500'], SHAPES.get);

  const urlOf = (t, path) => `http://127.0.0.1:${t.port}${t.prefix}${path}`;
  /** A fresh request object (setupRequest closures keep their own counter) and its URL. */
  const requestFor = (sc, t) => {
    const base = typeof sc.req === 'function' ? sc.req() : { ...sc.req };
    return { url: urlOf(t, base.path), req: { ...base, path: `${t.prefix}${base.path}` } };
  };
  const runs = [];
  async function one(sc, t, roundNo, warm) {
    if (warm > 0) {
      const w = requestFor(sc, t);
      await cannon(w.url, w.req, { duration: warm });
    }
    const { url, req: r } = requestFor(sc, t);
    const m = await measure(t.pids, () => cannon(url, r, { duration: DURATION }));
    const a = m.result;
    const requests = a.requests.total;
    const run = {
      scenario: sc.id,
      target: t.name,
      round: roundNo,
      tool: 'autocannon',
      rps: requests / a.duration,
      p50: a.exact.p50,
      p99: a.exact.p99,
      requests,
      errors: a.errors,
      timeouts: a.timeouts,
      non2xx: a.non2xx,
      statusCodes: Object.fromEntries(Object.entries(a.statusCodeStats ?? {}).map(([k, v]) => [k, v.count])),
      // Requests sent but never answered beyond the ones in flight when the run stopped.
      unanswered: Math.max(0, a.requests.sent - requests - CONNECTIONS),
      rssPeakMb: m.rssPeakMb,
      cpuUsPerReq: (m.cpuSeconds * 1e6) / requests,
      cpuShare: m.cpuSeconds / a.duration,
      loadgenUsPerReq: (m.loadgenSeconds * 1e6) / requests,
      core0Foreign: m.core0Foreign,
      core1Busy: m.core1Busy,
    };
    runs.push(run);
    log(
      `${sc.id.padEnd(13)} ${t.name.padEnd(20)} r${roundNo} ${String(Math.round(run.rps)).padStart(6)} req/s p99 ${String(run.p99).padStart(4)} ms ${run.cpuUsPerReq.toFixed(1).padStart(6)} µs/req rss ${run.rssPeakMb.toFixed(0)} MB${run.non2xx ? ` non2xx ${run.non2xx}` : ''}${run.errors ? ` errors ${run.errors}` : ''} noise ${(run.core0Foreign * 100).toFixed(0)}% core1 ${(run.core1Busy * 100).toFixed(0)}%`,
    );
  }

  // Warm-up (JIT, pools) of every target on every request shape it will see, one after the
  // other. A Node proxy needs about 3 s of full load before its figures settle: measured after
  // 1–2 s, a round-1 run read 20–60 % more CPU a request than the same target's later rounds
  // (and a target warmed on GET, then on the 64 KiB shape, re-optimises when GET comes back). So
  // each (target, shape) gets 3 s (nginx and the upstream need none to speak of), and in a full
  // run every pair gets a second, 1 s pass once all shapes have been seen. And 100k client ids are
  // seeded once so the "100k clients" runs meet a full bucket table.
  const pairs = scenarios.flatMap((sc) => sc.targets.map((name) => ({ name, ...requestFor(sc, targets[name]) })));
  const warmSeconds = (name) => (name === 'direct' || name === 'nginx' ? 1 : 3);
  for (const { name, url, req } of pairs) await cannon(url, req, { duration: warmSeconds(name) });
  if (!QUICK) for (const { url, req } of pairs) await cannon(url, req, { duration: 1 });
  if (targets['bw-clients'] && !QUICK) {
    const { url, req } = requestFor({ req: () => clientsRequest(100_000) }, targets['bw-clients']);
    await cannon(url, req, { amount: 100_000 });
  }
  log('warm-up done');
  const settled = await quietCore0(QUICK ? 6000 : 15000);
  log(`core 0 ${settled.quiet ? 'quiet' : 'still busy'} after ${(settled.ms / 1000).toFixed(1)} s`);

  const wrkRuns = [];
  for (let rd = 1; rd <= ROUNDS; rd++) {
    for (const sc of scenarios) {
      // Rotate the target order each round so no target always runs first or last.
      const order = sc.targets.slice((rd - 1) % sc.targets.length).concat(sc.targets.slice(0, (rd - 1) % sc.targets.length));
      for (const name of order) await one(sc, targets[name], rd, WARMUP);
    }
    if (USE_WRK && HAVE.wrk && want('get')) {
      for (const name of ['direct', 'bw-default', 'http-proxy', 'undici', 'nginx', 'bw-open', 'bw-limited']) {
        const t = targets[name];
        if (!t) continue;
        const m = await measure(t.pids, async () => wrk(urlOf(t, MESSAGES), DURATION));
        const w = {
          scenario: name === 'bw-open' ? 'fastfail:open' : name === 'bw-limited' ? 'fastfail:429' : 'get',
          target: name,
          round: rd,
          tool: 'wrk',
          ...m.result,
          cpuUsPerReq: (m.cpuSeconds * 1e6) / (m.result.rps * DURATION),
          rssPeakMb: m.rssPeakMb,
          core0Foreign: m.core0Foreign,
        };
        wrkRuns.push(w);
        log(
          `wrk ${w.scenario.padEnd(13)} ${name.padEnd(16)} r${rd} ${String(Math.round(w.rps)).padStart(6)} req/s p99 ${w.p99.toFixed(2)} ms${w.non2xx ? ` non2xx ${w.non2xx}` : ''}`,
        );
      }
    }
  }

  // ------------------------------------------------------------ large bodies (flat memory)
  // Streaming means memory does not follow body size. Breakwater and the minimal undici proxy
  // each relay the same transfers (4 in flight) with 2 MiB and with 20 MiB bodies, both ways,
  // and their RSS peaks over idle are compared. A proxy that buffered would need 4 × 20 MiB more.
  // Some growth is expected from any Node proxy: relayed chunks wait in the heap for the next
  // garbage collection, which V8 paces by the amount of such external memory.
  let bodies;
  if (targets['bw-large']) {
    const n = QUICK ? 8 : 24;
    const concurrent = 4;
    const rows = [];
    for (const name of ['bw-large', 'undici']) {
      const t = targets[name];
      if (!t) continue;
      const down = (mib) => {
        const path = `/2010-04-01/Accounts/${ACCOUNT}/Media/Huge.json?mib=${mib}`;
        return cannon(urlOf(t, path), { method: 'GET', path: `/twilio${path}` }, { connections: concurrent, amount: n });
      };
      const up = (mib) => {
        const path = `/2010-04-01/Accounts/${ACCOUNT}/Upload.json`;
        return cannon(
          urlOf(t, path),
          { method: 'POST', path: `/twilio${path}`, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(mib * 1024 * 1024, 'z') },
          { connections: concurrent, amount: n },
        );
      };
      await down(2); // first use: pools, buffers, JIT
      if (!QUICK) await up(2);
      const idle = sum(t.pids, rssKb) / 1024;
      for (const mib of QUICK ? [20] : [2, 20]) {
        for (const [dir, run] of [
          ['response', down],
          ['upload', up],
        ]) {
          const m = await measure(t.pids, () => run(mib));
          rows.push({
            target: name,
            direction: dir,
            mib,
            requests: m.result.requests.total,
            ok: m.result['2xx'],
            errors: m.result.errors + m.result.timeouts,
            mibPerSecond: (m.result.requests.total * mib) / m.result.duration,
            idleRssMb: idle,
            rssPeakMb: m.rssPeakMb,
            growthMb: m.rssPeakMb - idle,
          });
        }
      }
    }
    bodies = { concurrent, perSize: n, rows };
    log(`bodies: ${rows.map((r) => `${r.target} ${r.direction} ${r.mib} MiB +${r.growthMb.toFixed(0)} MB (${r.ok}/${r.requests})`).join('; ')}`);
  }

  // Access-log evidence: the default target really wrote a line per request.
  const logLines = (file) => {
    try {
      return readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"msg":"request"')).length;
    } catch {
      return NaN;
    }
  };
  const accessLogLines = logLines(targets['bw-default'].log);

  // ------------------------------------------------------------ summary
  const summary = {};
  for (const sc of scenarios) {
    const rows = {};
    for (const name of sc.targets) {
      const rs = runs.filter((r) => r.scenario === sc.id && r.target === name);
      const pick = (k) => rs.map((r) => r[k]);
      rows[name] = {
        rps: median(pick('rps')),
        rpsMin: Math.min(...pick('rps')),
        rpsMax: Math.max(...pick('rps')),
        p50: median(pick('p50')),
        p99: median(pick('p99')),
        p99Min: Math.min(...pick('p99')),
        p99Max: Math.max(...pick('p99')),
        cpuUsPerReq: median(pick('cpuUsPerReq')),
        cpuMin: Math.min(...pick('cpuUsPerReq')),
        cpuMax: Math.max(...pick('cpuUsPerReq')),
        rssPeakMb: Math.max(...pick('rssPeakMb')),
        errors: pick('errors').reduce((a, b) => a + b, 0) + pick('timeouts').reduce((a, b) => a + b, 0) + pick('unanswered').reduce((a, b) => a + b, 0),
        non2xx: pick('non2xx').reduce((a, b) => a + b, 0),
        expectedStatusOnly: sc.expect ? rs.every((r) => Object.keys(r.statusCodes).every((c) => Number(c) === sc.expect)) : undefined,
        noise: median(pick('core0Foreign')),
        core1Busy: median(pick('core1Busy')),
      };
    }
    summary[sc.id] = { title: sc.title, rows };
  }
  // Ratios against direct and http-proxy in the same scenario (or the small GET for one-target scenarios).
  for (const [id, s] of Object.entries(summary)) {
    const ref = (name) => s.rows[name] ?? summary.get?.rows[name];
    for (const row of Object.values(s.rows)) {
      row.vsDirect = ref('direct') ? row.rps / ref('direct').rps : NaN;
      row.vsHttpProxy = ref('http-proxy') ? row.rps / ref('http-proxy').rps : NaN;
      row.cpuVsHttpProxy = ref('http-proxy') ? row.cpuUsPerReq / ref('http-proxy').cpuUsPerReq : NaN;
    }
    s.id = id;
  }
  const wrkSummary = {};
  for (const w of wrkRuns) {
    const k = `${w.scenario}/${w.target}`;
    wrkSummary[k] ??= { scenario: w.scenario, target: w.target, rps: [], p99: [], non2xx: 0, cpu: [] };
    wrkSummary[k].rps.push(w.rps);
    wrkSummary[k].p99.push(w.p99);
    wrkSummary[k].cpu.push(w.cpuUsPerReq);
    wrkSummary[k].non2xx += w.non2xx;
  }
  for (const v of Object.values(wrkSummary)) {
    v.rpsMedian = median(v.rps);
    v.p99Median = median(v.p99);
    v.cpuMedian = median(v.cpu);
  }

  const goals = evaluateGoals(summary, wrkSummary, bodies);
  const meta = machine(startedAt);
  const result = {
    meta,
    settings: {
      quick: QUICK,
      rounds: ROUNDS,
      durationSeconds: DURATION,
      warmupSeconds: WARMUP,
      connections: CONNECTIONS,
      pinning: PIN,
      loadGenerator: 'autocannon (in-process, CPU 1)',
      wrk: USE_WRK && HAVE.wrk,
      clockTicks: CLK_TCK,
    },
    targets: Object.fromEntries(Object.values(targets).map((t) => [t.name, { kind: t.kind, what: t.what }])),
    accessLogLines,
    summary,
    wrk: Object.values(wrkSummary),
    bodies,
    goals,
    runs,
    wrkRuns,
  };
  mkdirSync(OUT_DIR, { recursive: true });
  const stamp = startedAt.toISOString().slice(0, 16).replace(':', '-') + (QUICK ? '-quick' : '');
  const jsonFile = join(OUT_DIR, `${stamp}.json`);
  const mdFile = join(OUT_DIR, `${stamp}.md`);
  writeFileSync(jsonFile, JSON.stringify(result, (k, v) => (typeof v === 'number' && !Number.isInteger(v) ? round(v, 3) : v), 2) + '\n');
  writeFileSync(mdFile, markdown(result));
  console.log(readFileSync(mdFile, 'utf8'));
  log(`wrote ${jsonFile} and ${mdFile}`);
  if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  else log(`kept ${tmp}`);
}

// ---------------------------------------------------------------- goals of issue 7
function evaluateGoals(summary, wrkSummary, bodies) {
  const g = [];
  const get = summary.get?.rows ?? {};
  const d = get['bw-default'];
  const goal = (name, value, target, met, note) => g.push({ goal: name, value, target, met, note });
  if (d && get['http-proxy']) {
    const wd = wrkSummary['get/bw-default'];
    const wh = wrkSummary['get/http-proxy'];
    goal(
      'default ≥ 2.0× http-proxy (req/s)',
      round(d.rps / get['http-proxy'].rps, 2),
      2,
      d.rps / get['http-proxy'].rps >= 2,
      wd && wh ? `wrk: ${round(wd.rpsMedian / wh.rpsMedian, 2)}×` : undefined,
    );
  }
  if (d && get.nginx) {
    // autocannon needs about as much CPU as nginx itself, so it cannot saturate nginx: judge
    // this ratio by wrk when it ran.
    const wd = wrkSummary['get/bw-default'];
    const wn = wrkSummary['get/nginx'];
    const ac = d.rps / get.nginx.rps;
    const wr = wd && wn ? wd.rpsMedian / wn.rpsMedian : undefined;
    goal(
      'default ≥ 40 % of nginx (req/s)',
      round(wr ?? ac, 2),
      0.4,
      (wr ?? ac) >= 0.4,
      wr === undefined ? 'autocannon' : `wrk; autocannon says ${round(ac, 2)}`,
    );
  }
  if (d) goal('default ≤ 45 µs CPU per request', round(d.cpuUsPerReq, 1), 45, d.cpuUsPerReq <= 45);
  if (d && get.undici)
    goal(
      'default p99 ≤ 1.5× minimal undici proxy',
      round(d.p99 / get.undici.p99, 2),
      1.5,
      d.p99 <= 1.5 * get.undici.p99,
      `${round(d.p99, 2)} vs ${round(get.undici.p99, 2)} ms`,
    );
  if (d) {
    // bw-default serves every shape, the 64 KiB responses too, and memory once resident stays so:
    // its peak is the worst of all of them. The stage-off instances run the same code and only
    // ever see small GETs, and the minimal undici proxy serves the same mix as bw-default, so
    // both are named beside it.
    const peak = (name) => Math.max(...Object.values(summary).map((s) => s.rows[name]?.rssPeakMb ?? 0));
    const worst = peak('bw-default');
    const getOnly = Object.keys(get)
      .filter((n) => n.startsWith('bw-no-') || n === 'bw-retries-0' || n === 'bw-breaker-disabled')
      .map((n) => get[n].rssPeakMb);
    const notes = [];
    if (getOnly.length) notes.push(`instances that only serve small GETs: ${round(Math.min(...getOnly), 0)}–${round(Math.max(...getOnly), 0)} MB`);
    if (get.undici) notes.push(`minimal undici proxy, same mix: ${round(peak('undici'), 0)} MB`);
    goal('default RSS under load ≤ 120 MB', round(worst, 0), 120, worst <= 120, notes.join('; ') || undefined);
  }
  for (const [id, label] of [
    ['fastfail:open', 'open breaker'],
    ['fastfail:429', '429'],
  ]) {
    const r = summary[id]?.rows;
    const row = r && Object.values(r)[0];
    if (row && d) {
      const cpuRatio = d.cpuUsPerReq / row.cpuUsPerReq;
      const w = wrkSummary[`${id}/${id === 'fastfail:open' ? 'bw-open' : 'bw-limited'}`];
      const wd = wrkSummary['get/bw-default'];
      const wrkRatio = w && wd ? w.rpsMedian / wd.rpsMedian : undefined;
      const ratio = row.rps / d.rps;
      goal(
        `fast fail (${label}) ≥ 3× forwarding rate`,
        round(ratio, 2),
        3,
        ratio >= 3 || (wrkRatio ?? 0) >= 3,
        `CPU per request ${round(cpuRatio, 2)}× cheaper${wrkRatio ? `; wrk ${round(wrkRatio, 2)}×` : ''}; core 1 (load generator) ${round(row.core1Busy * 100, 0)} % busy`,
      );
    }
  }
  if (bodies) {
    // Flat: every transfer completed, and with 20 MiB bodies Breakwater's peak is within 10 MB
    // of the minimal undici proxy's, i.e. it holds nothing per body that a bare relay does not.
    for (const dir of ['response', 'upload']) {
      const row = (target, mib) => bodies.rows.find((r) => r.target === target && r.direction === dir && r.mib === mib);
      const bw = row('bw-large', 20);
      const ref = row('undici', 20);
      const allOk = bodies.rows.filter((r) => r.target === 'bw-large' && r.direction === dir).every((r) => r.ok === r.requests && r.errors === 0);
      const extra = ref ? bw.growthMb - ref.growthMb : NaN;
      const small = row('bw-large', 2);
      goal(
        `20 MiB ${dir} streamed with flat memory`,
        round(bw.growthMb, 1),
        'peak over idle within 10 MB of the minimal undici proxy',
        allOk && (ref ? extra <= 10 : bw.growthMb < 20),
        `${bodies.concurrent} in flight; undici +${round(ref?.growthMb, 0)} MB${small ? `; with 2 MiB bodies +${round(small.growthMb, 0)} MB` : ''}; ${bw.ok}/${bw.requests} ok`,
      );
    }
  }
  const pair = (a, b, label) => {
    const x = summary[a]?.rows;
    const y = summary[b]?.rows;
    if (!x || !y) return;
    const rx = Object.values(x)[0];
    const ry = Object.values(y)[0];
    const ratio = ry.rps / rx.rps;
    goal(label, round(ratio, 3), '≥ 0.90', ratio >= 0.9, `CPU ${round(ry.cpuUsPerReq, 1)} vs ${round(rx.cpuUsPerReq, 1)} µs/req`);
  };
  pair('clients:1', 'clients:100k', '100k clients within 10 % of 1 client (req/s)');
  pair('routes:2', 'routes:500', '500 routes within 10 % of 2 routes (req/s)');
  return g;
}

// ---------------------------------------------------------------- machine and versions
function machine(startedAt) {
  const sh = (cmd) => {
    try {
      return execSync(cmd, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], shell: '/bin/bash' }).trim();
    } catch {
      return undefined;
    }
  };
  const pkg = (name) => {
    try {
      return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
    } catch {
      return undefined;
    }
  };
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
  return {
    date: startedAt.toISOString(),
    cpu: cpuModel,
    cores: CPUS,
    kernel: os.release(),
    os: sh('. /etc/os-release && echo "$PRETTY_NAME"'),
    memoryGb: round(os.totalmem() / 2 ** 30, 1),
    loadAverageAtStart: os.loadavg().map((x) => round(x, 2)),
    node: process.version,
    breakwater: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version,
    packages: Object.fromEntries(['undici', 'pino', 'prom-client', 'zod', 'yaml', 'ioredis', 'autocannon', 'http-proxy'].map((n) => [n, pkg(n)])),
    tools: {
      nginx: sh('nginx -v 2>&1')?.replace('nginx version: ', ''),
      wrk: sh('wrk -v 2>&1 | head -1'),
      redis: sh('redis-server --version')?.split(' ')[2]?.replace('v=', ''),
      taskset: PIN,
    },
    git: { commit: sh('git rev-parse HEAD'), dirty: (sh('git status --porcelain -- src bench config') ?? '') !== '' },
  };
}

// ---------------------------------------------------------------- markdown
function markdown(r) {
  const f = (x, d = 0) =>
    x === null || x === undefined || Number.isNaN(x) ? '—' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)} %` : '—');
  const x = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');
  const m = r.meta;
  const lines = [];
  lines.push(`# Breakwater benchmark — ${m.date.slice(0, 16).replace('T', ' ')} UTC${r.settings.quick ? ' (quick)' : ''}`);
  lines.push('');
  lines.push(
    `${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node}; undici ${m.packages.undici}, pino ${m.packages.pino}, prom-client ${m.packages['prom-client']}; nginx ${m.tools.nginx ?? '—'}; commit ${m.git.commit?.slice(0, 10) ?? '—'}${m.git.dirty ? ' (+ local changes)' : ''}.`,
  );
  lines.push(
    `${r.settings.rounds} round(s) × ${r.settings.durationSeconds} s per run, ${r.settings.connections} connections, autocannon on CPU 1 with the upstream${r.settings.pinning ? ', proxies pinned to CPU 0' : ', no CPU pinning'}. Medians over rounds, [min–max] spread. "noise": share of core 0 used by other processes during the run; "core 1": how busy the load generator's core was (near 100 % means the client, not the proxy, set the pace). Load average at start: ${m.loadAverageAtStart.join(', ')}.`,
  );
  lines.push('');
  for (const s of Object.values(r.summary)) {
    lines.push(`## ${s.title}`);
    lines.push('');
    lines.push(
      '| target | req/s [min–max] | vs direct | vs http-proxy | p50 ms | p99 ms [min–max] | CPU µs/req [min–max] | RSS peak MB | errors | non-2xx | noise | core 1 |',
    );
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const [name, row] of Object.entries(s.rows)) {
      lines.push(
        `| ${name} | ${f(row.rps)} [${f(row.rpsMin)}–${f(row.rpsMax)}] | ${pct(row.vsDirect)} | ${x(row.vsHttpProxy)} | ${f(row.p50, 2)} | ${f(row.p99, 2)} [${f(row.p99Min, 2)}–${f(row.p99Max, 2)}] | ${f(row.cpuUsPerReq, 1)} [${f(row.cpuMin, 1)}–${f(row.cpuMax, 1)}] | ${f(row.rssPeakMb)} | ${f(row.errors)} | ${f(row.non2xx)}${row.expectedStatusOnly === true ? ' (all expected)' : ''} | ${pct(row.noise)} | ${pct(row.core1Busy)} |`,
      );
    }
    lines.push('');
  }
  if (r.wrk.length) {
    lines.push('## wrk cross-check (small GET and fast-fail paths, wrk -t1 -c50)');
    lines.push('');
    lines.push('| scenario | target | req/s (median) | p99 ms | CPU µs/req | non-2xx |');
    lines.push('|---|---|---|---|---|---|');
    for (const w of r.wrk) lines.push(`| ${w.scenario} | ${w.target} | ${f(w.rpsMedian)} | ${f(w.p99Median, 2)} | ${f(w.cpuMedian, 1)} | ${f(w.non2xx)} |`);
    lines.push('');
  }
  if (r.bodies) {
    const b = r.bodies;
    lines.push(`## Large bodies: ${b.concurrent} in flight, ${b.perSize} transfers per size`);
    lines.push('');
    lines.push('| target | direction | body | ok | MiB/s | RSS idle MB | RSS peak MB | growth MB |');
    lines.push('|---|---|---|---|---|---|---|---|');
    for (const d of b.rows)
      lines.push(
        `| ${d.target} | ${d.direction} | ${d.mib} MiB | ${d.ok}/${d.requests} | ${f(d.mibPerSecond)} | ${f(d.idleRssMb)} | ${f(d.rssPeakMb)} | ${f(d.growthMb, 1)} |`,
      );
    lines.push('');
  }
  lines.push('## Goals (issue 7)');
  lines.push('');
  lines.push('| goal | measured | target | met | note |');
  lines.push('|---|---|---|---|---|');
  for (const g of r.goals) lines.push(`| ${g.goal} | ${g.value} | ${g.target} | ${g.met ? 'yes' : '**no**'} | ${g.note ?? ''} |`);
  lines.push('');
  lines.push(`Access log lines written by bw-default: ${f(r.accessLogLines)}.`);
  lines.push('');
  return lines.join('\n');
}

// `--render=<results.json>`: recompute the goals and rewrite the markdown of an earlier run.
async function render(file) {
  const r = JSON.parse(readFileSync(file, 'utf8'));
  const wrkSummary = Object.fromEntries((r.wrk ?? []).map((w) => [`${w.scenario}/${w.target}`, w]));
  r.goals = evaluateGoals(r.summary, wrkSummary, r.bodies);
  writeFileSync(file, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(file.replace(/\.json$/, '.md'), markdown(r));
  console.log(markdown(r));
}

(opt('render', '') ? render(opt('render', '')) : main()).then(
  () => {
    killAll();
    process.exit(0);
  },
  (err) => {
    console.error(`bench failed: ${err.stack ?? err}`);
    killAll();
    process.exit(1);
  },
);
