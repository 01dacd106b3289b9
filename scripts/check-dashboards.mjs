#!/usr/bin/env node
// Proves the Grafana dashboards and Prometheus alerts against real parts:
//   1. each grafana/dashboards/*.json is a well-formed dashboard (JSON schema + the rules every
//      Breakwater dashboard follows: ${datasource} everywhere, every selector filtered by $upstream);
//   2. `promtool check rules` and `promtool test rules` pass, and every dashboard expression
//      type-checks offline (written as a recording rule for promtool);
//   3. a real proxy (bin/breakwater.js, in front of fake upstreams on loopback) is scraped every
//      second by a real Prometheus that loads the alert rules; after a short load (successes,
//      429s, an open breaker and its recovery) every dashboard expression must return data and
//      every alert expression must parse and name only metrics Prometheus has seen.
// `npm run check:dashboards` runs it all; test/integration/dashboards-against-prometheus.test.ts
// and test/unit/alerts.test.ts use the exported functions. Exit code 0 only when all holds.
import http from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv from 'ajv';
import YAML from 'yaml';
import { freePort } from '../test/support/wait.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DASHBOARD_DIR = join(ROOT, 'grafana', 'dashboards');
export const RULES_FILE = join(ROOT, 'prometheus', 'alerts.yml');
export const RULES_TEST_FILE = join(ROOT, 'prometheus', 'alerts.test.yml');
const SCHEMA_FILE = join(ROOT, 'scripts', 'dashboard.schema.json');

// What Grafana would put in place of its variables for a 5-minute view with every upstream selected.
export const GRAFANA_VARS = {
  __rate_interval: '1m',
  __interval: '15s',
  __interval_ms: '15000',
  __range: '5m',
  __range_s: '300',
  __range_ms: '300000',
  upstream: '.*',
  datasource: 'prometheus',
};

// Histograms, counters and gauges of the proxy; `up` etc. come from Prometheus itself.
const PROXY_METRIC = /^(breakwater_|circuit_breaker_)/;
// Where the load goes (fake upstreams answer any path).
const TWILIO_MESSAGES = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const VAPI_CALL = '/vapi/call';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// 1. Structure

let validateSchema;
function schemaValidator() {
  if (!validateSchema) {
    const ajv = new Ajv({ allErrors: true, strict: false });
    validateSchema = ajv.compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')));
  }
  return validateSchema;
}

/** Every dashboard JSON file under `dir`: [{ file, name, dashboard }]. */
export function loadDashboards(dir = DASHBOARD_DIR) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: join(dir, f), name: f, dashboard: JSON.parse(readFileSync(join(dir, f), 'utf8')) }));
}

function* walkPanels(panels) {
  for (const p of panels ?? []) {
    yield p;
    yield* walkPanels(p.panels);
  }
}

/** Structural problems of one dashboard, as readable strings (empty when it is fine). */
export function validateDashboard(dashboard, name = dashboard?.title ?? 'dashboard') {
  const errors = [];
  const validate = schemaValidator();
  if (!validate(dashboard)) {
    for (const e of validate.errors) {
      // per-item noise of a failed `contains`: the summary below says what is missing
      if (e.schemaPath.includes('/contains/') || /^#\/definitions\/(datasource|upstream)Variable\//.test(e.schemaPath)) continue;
      const message =
        e.keyword === 'contains'
          ? `must contain the ${/allOf\/0/.test(e.schemaPath) ? 'datasource (type datasource, query prometheus)' : 'upstream (label_values(breakwater_requests_total, upstream), multi, includeAll, allValue .*)'} variable`
          : `${e.message}${e.params?.allowedValue !== undefined ? ` (${JSON.stringify(e.params.allowedValue)})` : ''}`;
      errors.push(`${name}: ${e.instancePath || '/'} ${message}`);
    }
    return errors; // the checks below assume the shape
  }
  const ids = new Set();
  const cells = new Map();
  for (const p of walkPanels(dashboard.panels)) {
    const where = `${name}: panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) errors.push(`${where}: duplicate panel id`);
    ids.add(p.id);
    const { x, y, w, h } = p.gridPos;
    if (x + w > 24) errors.push(`${where}: gridPos x+w = ${x + w} > 24`);
    for (let cx = x; cx < x + w; cx++) {
      for (let cy = y; cy < y + h; cy++) {
        const other = cells.get(`${cx},${cy}`);
        if (other !== undefined && other !== p.id) {
          errors.push(`${where}: overlaps panel ${other}`);
          cx = x + w;
          break;
        }
        cells.set(`${cx},${cy}`, p.id);
      }
    }
    if (p.type === 'row' || p.type === 'text') continue;
    if (p.datasource?.uid !== '${datasource}') errors.push(`${where}: datasource must be \${datasource}, is ${JSON.stringify(p.datasource)}`);
    for (const t of p.targets) {
      const at = `${where} target ${t.refId}`;
      if (t.datasource && t.datasource.uid !== '${datasource}') errors.push(`${at}: datasource must be \${datasource}`);
      errors.push(...selectorProblems(t.expr).map((m) => `${at}: ${m}`));
      errors.push(...meaningProblems(p, t).map((m) => `${at}: ${m}`));
    }
  }
  return errors;
}

// The seed's latency thresholds, one per percentile (ms).
const PERCENTILE_LIMITS = { 0.5: 200, 0.95: 500, 0.99: 1000 };

/** The red step of a thresholds object, if any. */
const redAt = (th) => th?.steps?.find((st) => st.color === 'red')?.value;

// What an operator reads into a panel must be what it shows in an outage: latency of forwarded
// requests only (Breakwater's own refusals are sub-millisecond), failures counted on the
// zero-initialised breakwater_responses_total (which includes Breakwater-made 5xx), the budget
// clamped, and each percentile against its own threshold.
function meaningProblems(p, t) {
  const problems = [];
  const e = t.expr;
  if (/breakwater_request_duration_seconds_bucket\{/.test(e) && !/breakwater_request_duration_seconds_bucket\{[^}]*source="upstream"/.test(e)) {
    problems.push('request latency must be read with source="upstream" (local refusals would pull the percentiles down)');
  }
  if (/breakwater_requests_total\{[^}]*status=~"5\.\."/.test(e))
    problems.push('count 5xx on breakwater_responses_total{class="5xx"} (exported from zero, includes Breakwater-made 5xx)');
  if (/circuit_breaker_failures_total/.test(e) && /\//.test(e))
    problems.push('a failure ratio counts 5xx answers (breakwater_responses_total), not breaker failures, which miss rejected calls');
  if (/budget remaining/i.test(p.title) && !/^clamp\(.*, 0, 100\)$/.test(e)) problems.push('error budget remaining must be clamped to 0..100');
  const q = /^(?:topk\(\d+, )?histogram_quantile\((0\.\d+),\s*[^]*breakwater_request_duration_seconds_bucket/.exec(e)?.[1];
  if (q !== undefined && PERCENTILE_LIMITS[q] !== undefined && (p.type === 'stat' || /percentile/i.test(p.title))) {
    const override = (p.fieldConfig?.overrides ?? []).find((o) => o.matcher?.id === 'byFrameRefID' && o.matcher.options === t.refId);
    const th = override?.properties?.find((x) => x.id === 'thresholds')?.value ?? (p.targets.length === 1 ? p.fieldConfig?.defaults?.thresholds : undefined);
    const red = redAt(th);
    if (red !== PERCENTILE_LIMITS[q]) problems.push(`p${Number(q) * 100} must turn red at ${PERCENTILE_LIMITS[q]} ms (its own threshold), is ${red}`);
  }
  return problems;
}

// Every selector of a proxy metric must honour the upstream variable (service= for the breaker
// metrics, upstream= for the rest), and rates must not use the scrape-blind $__interval.
function selectorProblems(expr) {
  const problems = [];
  const body = expr.replace(/"(?:[^"\\]|\\.)*"/g, (s) => s.replace(/[{}]/g, '')); // braces inside strings are not selectors
  for (const m of body.matchAll(/([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?/g)) {
    const [, id, matchers] = m;
    if (!PROXY_METRIC.test(id)) continue;
    const label = id.startsWith('circuit_breaker_') ? 'service' : 'upstream';
    const wanted = `${label}=~"$upstream"`;
    if (!matchers || !matchers.replace(/\s+/g, '').includes(wanted)) problems.push(`${id} is not filtered by ${wanted}`);
  }
  if (/\[\$__interval\]/.test(expr)) problems.push('use $__rate_interval, not $__interval, as a rate window');
  return problems;
}

/** The queries of one dashboard: [{ source, panel, title, refId, expr }] (expr as written). */
export function dashboardQueries(dashboard, source = dashboard.uid) {
  const out = [];
  for (const p of walkPanels(dashboard.panels)) {
    for (const t of p.targets ?? []) if (t.expr) out.push({ source, panel: p.id, title: p.title, refId: t.refId, expr: t.expr });
  }
  return out;
}

/** Grafana's variables replaced as Grafana would for a 5-minute, all-upstreams view. */
export function substituteGrafanaVars(expr, vars = GRAFANA_VARS) {
  return expr.replace(/\$\{(\w+)(?::[^}]*)?\}|\$(\w+)/g, (all, braced, bare) => {
    const v = vars[braced ?? bare];
    return v === undefined ? all : v;
  });
}

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2']);

/** Metric names a PromQL expression selects (function names, labels and keywords left out). */
export function metricNames(expr) {
  const s = substituteGrafanaVars(expr)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(offset\s+-?|@\s*)[\w.:()]+/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/(?<![\w:.])(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?(?![\w:])/g, ' ');
  const names = new Set();
  for (const m of s.matchAll(/([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] || PROMQL_WORDS.has(m[1].toLowerCase())) continue;
    names.add(m[1]);
  }
  return [...names];
}

// ---------------------------------------------------------------------------------------------
// 2. promtool

/** Runs promtool; a missing binary is a failure with a message that says so. */
export function promtool(args, { input } = {}) {
  const r = spawnSync('promtool', args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000, input });
  if (r.error)
    return { ok: false, code: null, output: `promtool could not run (${r.error.code ?? r.error.message}): install it (Debian: apt-get install prometheus)` };
  return { ok: r.status === 0, code: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

export const checkRules = (file = RULES_FILE) => promtool(['check', 'rules', file]);
export const testRules = (file = RULES_TEST_FILE) => promtool(['test', 'rules', file]);

/** Type-checks every query offline by writing it as a recording rule (catches rate() of a gauge vector etc.). */
export function lintQueriesOffline(queries) {
  const dir = mkdtempSync(join(tmpdir(), 'bw-lint-'));
  try {
    const file = join(dir, 'queries.rules.json'); // JSON is YAML
    const rules = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: substituteGrafanaVars(q.expr) }));
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard-queries', rules }] }));
    const r = promtool(['check', 'rules', file]);
    return { ...r, output: r.output.replace(new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g'), 'dashboard queries') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The alert rules of a rules file: [{ alert, expr, group }]. */
export function alertRules(file = RULES_FILE) {
  const doc = YAML.parse(readFileSync(file, 'utf8'));
  return (doc.groups ?? []).flatMap((g) => (g.rules ?? []).filter((r) => r.alert).map((r) => ({ alert: r.alert, expr: String(r.expr), group: g.name })));
}

// ---------------------------------------------------------------------------------------------
// 3. Real parts: fake upstreams, the proxy, Prometheus

export { freePort };

function fakeUpstream(name) {
  const state = { name, mode: 'ok', delayMs: 0, hits: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', async () => {
      state.hits++;
      if (state.delayMs) await sleep(state.delayMs + Math.floor(Math.random() * state.delayMs));
      if (state.mode === 'fail') {
        res.writeHead(503, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ upstream: name, error: 'down' }));
      }
      res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ upstream: name, method: req.method, url: req.url }));
    });
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => {
      state.url = `http://127.0.0.1:${server.address().port}`;
      state.close = () =>
        new Promise((r) => {
          server.closeAllConnections();
          server.close(() => r());
        });
      res(state);
    });
  });
}

function httpRequest(port, method, path, { headers = {}, body, timeoutMs = 5000 } = {}) {
  return new Promise((res, rej) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode, headers: r.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', rej);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// The runner's environment must not steer the proxy: drop every variable SPEC.md names.
const SPEC_VARS = /^(PROXY_|ADMIN_|TWILIO_|VAPI_|CIRCUIT_BREAKER_|RATE_LIMIT_|REDIS_URL|INTEGRATIONS_STUB_MODE|UPSTREAM_TIMEOUT|LOG_LEVEL)/;
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !SPEC_VARS.test(k)));

// Children run in their own process group so the whole group can be killed, even on a crash.
const live = new Set();
const liveDirs = new Set();
function killGroupSync(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    /* already gone */
  }
}
// Last resort on any exit (a crash, process.exit in a signal handler): nothing outlives us.
function cleanupSync() {
  for (const c of live) killGroupSync(c, 'SIGKILL');
  if (!process.env.KEEP_CHECK_DIR) for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanupSync);

function startChild(cmd, args, { env, logFile, cwd = ROOT }) {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.exitInfo = null;
  child.exited = new Promise((r) =>
    child.once('exit', (code, signal) => {
      child.exitInfo = { code, signal };
      live.delete(child);
      r();
    }),
  );
  child.once('error', (e) => {
    child.exitInfo = { error: e.message };
    live.delete(child);
  });
  live.add(child);
  return child;
}

async function stopChild(child) {
  if (!child || child.exitInfo) return;
  killGroupSync(child, 'SIGTERM');
  await Promise.race([child.exited, sleep(3000)]);
  if (!child.exitInfo) {
    killGroupSync(child, 'SIGKILL');
    await Promise.race([child.exited, sleep(2000)]);
  }
}

const tail = (file, n = 1500) => {
  try {
    return readFileSync(file, 'utf8').slice(-n);
  } catch {
    return '';
  }
};

async function waitFor(what, fn, { timeoutMs, intervalMs = 200, child, logFile }) {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    if (child?.exitInfo) throw new Error(`${what}: process exited (${JSON.stringify(child.exitInfo)})\n${tail(logFile)}`);
    try {
      if (await fn()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${logFile ? tail(logFile) : ''}`);
    await sleep(intervalMs);
  }
}

/** Prometheus HTTP API call on loopback: { ok, status, body, error }. */
export async function promApi(promUrl, path, params = {}) {
  const form = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const x of [].concat(v)) form.append(k, x);
  let res;
  try {
    res = await fetch(`${promUrl}${path}?${form}`, { signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    return { ok: false, status: 0, error: `request failed: ${e.message}` };
  }
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, status: res.status, error: `HTTP ${res.status}: ${text.slice(0, 200)}` };
  }
  if (!res.ok || body.status !== 'success')
    return { ok: false, status: res.status, body, error: `HTTP ${res.status} ${body.errorType ?? ''}: ${body.error ?? text.slice(0, 200)}` };
  return { ok: true, status: res.status, body };
}

const instantQuery = (promUrl, query) => promApi(promUrl, '/api/v1/query', { query });

/**
 * Starts fake Twilio and Vapi upstreams, the proxy (`node bin/breakwater.js start`, default policy,
 * steered by environment) and Prometheus scraping its admin port every second with the alert
 * rules loaded. Everything listens on 127.0.0.1 only. Call stop() in a finally.
 */
export async function startStack({ rulesFile = RULES_FILE, log = () => {} } = {}) {
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npm run build` first');
  const version = spawnSync('prometheus', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (version.error)
    throw new Error(`prometheus could not run (${version.error.code ?? version.error.message}): install it (Debian: apt-get install prometheus)`);

  const dir = mkdtempSync(join(tmpdir(), 'bw-dashboards-'));
  liveDirs.add(dir);
  const stack = { dir, children: [], upstreams: {} };
  stack.stop = async () => {
    await Promise.all(stack.children.map(stopChild));
    await Promise.all(Object.values(stack.upstreams).map((u) => u.close()));
    liveDirs.delete(dir);
    if (!process.env.KEEP_CHECK_DIR) rmSync(dir, { recursive: true, force: true });
  };
  try {
    stack.upstreams.twilio = await fakeUpstream('twilio');
    stack.upstreams.vapi = await fakeUpstream('vapi');
    stack.upstreams.twilio.delayMs = 5;
    stack.upstreams.vapi.delayMs = 20;

    const [proxyPort, adminPort, promPort] = [await freePort(), await freePort(), await freePort()];
    Object.assign(stack, { proxyPort, adminPort, promPort, promUrl: `http://127.0.0.1:${promPort}` });
    stack.proxyLog = join(dir, 'proxy.log');
    // The default policy with one cached route the rest of the load never touches, so the cache
    // row has series (counters are exported from zero once a route is cached) and sees hits.
    const policyFile = join(dir, 'policy.yaml');
    const policyDoc = YAML.parseDocument(readFileSync(join(ROOT, 'config', 'policy.yaml'), 'utf8'));
    policyDoc.setIn(['upstreams', 'vapi', 'cache'], policyDoc.createNode({ routes: [{ route: 'call.fetch', ttl: 1 }] }));
    writeFileSync(policyFile, policyDoc.toString());
    stack.proxy = startChild(process.execPath, ['bin/breakwater.js', 'start', '--config', policyFile], {
      logFile: stack.proxyLog,
      env: {
        ...cleanEnv(),
        LOG_LEVEL: 'info',
        PROXY_HOST: '127.0.0.1',
        PROXY_PORT: String(proxyPort),
        ADMIN_HOST: '127.0.0.1',
        ADMIN_PORT: String(adminPort),
        TWILIO_BASE_URL: stack.upstreams.twilio.url,
        VAPI_BASE_URL: stack.upstreams.vapi.url,
        TWILIO_HOST_TARGET: stack.upstreams.twilio.url, // host-routed requests too: never the real Twilio
        RATE_LIMIT_PER_MINUTE: '5',
        CIRCUIT_BREAKER_THRESHOLD: '2',
        CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '2',
      },
    });
    stack.children.push(stack.proxy);

    stack.promLog = join(dir, 'prometheus.log');
    writeFileSync(
      join(dir, 'prometheus.yml'),
      YAML.stringify({
        global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
        rule_files: [rulesFile],
        scrape_configs: [{ job_name: 'breakwater', static_configs: [{ targets: [`127.0.0.1:${adminPort}`] }] }],
      }),
    );
    stack.prometheus = startChild(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--log.level=warn',
      ],
      { logFile: stack.promLog, env: cleanEnv(), cwd: dir },
    );
    stack.children.push(stack.prometheus);

    await waitFor('proxy /healthz', async () => (await httpRequest(adminPort, 'GET', '/healthz', { timeoutMs: 1000 })).status === 200, {
      timeoutMs: 20_000,
      child: stack.proxy,
      logFile: stack.proxyLog,
    });
    log(`proxy up: app 127.0.0.1:${proxyPort}, admin 127.0.0.1:${adminPort}`);
    await waitFor('prometheus /-/ready', async () => (await fetch(`${stack.promUrl}/-/ready`, { signal: AbortSignal.timeout(1000) })).ok, {
      timeoutMs: 15_000,
      child: stack.prometheus,
      logFile: stack.promLog,
    });
    log(`prometheus up: ${stack.promUrl}`);
    return stack;
  } catch (e) {
    await stack.stop();
    throw e;
  }
}

/**
 * Drives the proxy through what the dashboards show: successes on both upstreams (and a host-routed
 * Verify request, which builds a destination breaker), 429s from the per-client limit, a 404,
 * Twilio failing until its breaker opens (then circuit_open rejections), and the breaker's recovery. Waits for Prometheus's first scrape before, so counters have a
 * baseline; after, waits until 7 s of scrapes cover the load (so the dashboards' 5-second
 * subqueries have a step inside the data) and Prometheus counts every request sent.
 */
export async function generateLoad(stack, { log = () => {} } = {}) {
  const {
    proxyPort: port,
    upstreams: { twilio },
    promUrl,
  } = stack;
  const scraped = async (expr) => {
    const r = await instantQuery(promUrl, expr);
    return r.ok && r.body.data.result.length > 0;
  };
  await waitFor('first scrape (up == 1)', () => scraped('up{job="breakwater"} == 1'), {
    timeoutMs: 20_000,
    intervalMs: 250,
    child: stack.prometheus,
    logFile: stack.promLog,
  });
  const start = Date.now();
  log('first scrape landed; sending load');
  const counts = {};
  const send = async (method, path, client, body, host) => {
    const headers = { 'x-client-id': client };
    if (host !== undefined) headers.host = host;
    if (body !== undefined) headers['content-type'] = path.startsWith('/twilio') ? 'application/x-www-form-urlencoded' : 'application/json';
    const r = await httpRequest(port, method, path, { headers, body });
    counts[r.status] = (counts[r.status] ?? 0) + 1;
    return r;
  };
  const smsBody = 'To=%2B15555550100&From=%2B15555550199&Body=hello';
  const callBody = JSON.stringify({ assistantId: 'a1', phoneNumberId: 'p1', customer: { number: '+15555550100' } });

  // Two rounds with a scrape between: a series is born with its first count, so rate() and
  // increase() only see what the second round adds.
  const scrapedAt = async () => Number((await instantQuery(promUrl, 'timestamp(up{job="breakwater"})')).body?.data.result[0]?.value[1] ?? 0);
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 2; i++) {
      await send('GET', TWILIO_MESSAGES, `ok-tw-${round}-${i}`);
      await send('POST', TWILIO_MESSAGES, `ok-tw-post-${round}-${i}`, smsBody);
      await send('GET', VAPI_CALL, `ok-vapi-${round}-${i}`);
      await send('POST', VAPI_CALL, `ok-vapi-post-${round}-${i}`, callBody);
    }
    await send('GET', '/v2/Services', `verify-${round}`, undefined, 'verify.twilio.com'); // a destination breaker of its own
    for (let i = 0; i < 2; i++) await send('GET', `${VAPI_CALL}/cached-${round}`, `cache-${round}-${i}`); // a miss, then a hit
    for (let i = 0; i < (round ? 2 : 7); i++) await send('GET', VAPI_CALL, 'greedy'); // 5 per minute, then 429
    await send('GET', '/nope', 'lost');
    if (round === 0) {
      const t = Date.now() / 1000;
      await waitFor('a scrape between rounds', async () => (await scrapedAt()) > t, { timeoutMs: 5000, intervalMs: 100 });
    }
  }

  twilio.mode = 'fail';
  for (let i = 0; i < 5; i++) await send('POST', TWILIO_MESSAGES, `breaker-${i}`, smsBody); // 2 failures open it, the rest are rejected
  await waitFor('open breaker scraped', () => scraped('circuit_breaker_state{service="twilio"} == 2'), { timeoutMs: 8000, intervalMs: 250 });
  await sleep(1500); // a few scrapes of the open state
  await send('GET', TWILIO_MESSAGES, 'breaker-late'); // rejected while open

  twilio.mode = 'ok';
  const recovered = await (async () => {
    for (let i = 0; i < 20; i++) {
      // recovery timeout is 2 s: the probe after it closes the breaker
      const r = await send('GET', TWILIO_MESSAGES, `probe-${i}`);
      if (r.status === 200) return true;
      await sleep(300);
    }
    return false;
  })();
  log(`breaker ${recovered ? 'recovered' : 'did NOT recover within 6 s'}`);
  for (let i = 0; i < 3; i++) {
    await send('GET', TWILIO_MESSAGES, `after-${i}`);
    await send('GET', VAPI_CALL, `after-${i}`);
  }
  log(`load sent in ${Date.now() - start} ms; answers by status: ${JSON.stringify(counts)}`);
  await sleep(Math.max(0, start + 7_000 - Date.now()));
  const sent = Object.values(counts).reduce((a, b) => a + b, 0);
  await waitFor(
    `Prometheus to count all ${sent} requests in breakwater_requests_total`,
    async () => {
      const r = await instantQuery(promUrl, 'sum(breakwater_requests_total)');
      return r.ok && Number(r.body.data.result[0]?.value[1]) >= sent;
    },
    { timeoutMs: 5000, intervalMs: 250 },
  );
  return { counts, recovered, ms: Date.now() - start };
}

/** Metric names Prometheus has ingested. */
export async function knownMetricNames(promUrl) {
  const r = await promApi(promUrl, '/api/v1/label/__name__/values');
  if (!r.ok) throw new Error(`cannot list metric names: ${r.error}`);
  return new Set(r.body.data);
}

/**
 * Evaluates queries through /api/v1/query. A query fails on an HTTP or parse error, when it names
 * a metric Prometheus has never ingested, and (when requireData) on an empty result.
 * Returns [{ ...query, promql, ok, detail, series }].
 */
export async function evaluateQueries(promUrl, queries, { requireData = true, names } = {}) {
  const known = names ?? (await knownMetricNames(promUrl));
  const results = [];
  for (const q of queries) {
    const promql = substituteGrafanaVars(q.expr);
    const unknown = metricNames(promql).filter((n) => !known.has(n));
    const r = await instantQuery(promUrl, promql);
    let ok = r.ok && unknown.length === 0;
    let series = 0;
    const problems = [];
    if (!r.ok) problems.push(r.error);
    if (unknown.length) problems.push(`unknown metric ${unknown.join(', ')}`);
    if (r.ok) {
      const { resultType, result } = r.body.data;
      series = resultType === 'vector' || resultType === 'matrix' ? result.length : 1;
      if (requireData && series === 0) {
        ok = false;
        problems.push('empty result');
      }
    }
    const values = r.ok && r.body.data.resultType === 'vector' ? r.body.data.result.map((s) => s.value[1]) : [];
    const allNaN = values.length > 0 && values.every((v) => v === 'NaN');
    const detail = problems.length ? problems.join('; ') : `${series} series${allNaN ? ' (all NaN: no traffic in the window)' : ''}`;
    results.push({ ...q, promql, ok, detail, series });
  }
  return results;
}

/** All queries of one dashboard, evaluated (the negative proof runs this on a broken copy). */
export async function evaluateDashboard(promUrl, dashboard, opts = {}) {
  return evaluateQueries(promUrl, dashboardQueries(dashboard, opts.source ?? dashboard.uid), opts);
}

/** Grafana's label_values(metric, label) variable queries, answered the way Grafana asks them. */
export async function evaluateVariables(promUrl, dashboard, source = dashboard.uid) {
  const out = [];
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const text = typeof v.query === 'string' ? v.query : v.query?.query;
    const m = /^label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)$/.exec(text ?? '');
    const q = { source, panel: 'var', title: `$${v.name}`, refId: '-', expr: text ?? '' };
    if (!m) {
      out.push({ ...q, promql: text, ok: false, detail: 'only label_values(metric, label) is supported', series: 0 });
      continue;
    }
    const r = await promApi(promUrl, `/api/v1/label/${m[2]}/values`, { 'match[]': m[1] });
    const values = r.ok ? r.body.data : [];
    out.push({
      ...q,
      promql: text,
      ok: r.ok && values.length > 0,
      detail: r.ok ? (values.length ? `values: ${values.join(', ')}` : 'no values') : r.error,
      series: values.length,
    });
  }
  return out;
}

/**
 * Metric names the proxy declares on /metrics (# TYPE lines), with the series names a histogram
 * or counter has. A labelled metric the proxy has not touched yet shows only its # TYPE line
 * (e.g. breakwater_store_fallback_active without a Redis store), so Prometheus has no series.
 */
export async function declaredMetricNames(adminPort) {
  const r = await httpRequest(adminPort, 'GET', '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics on the admin port answered ${r.status}`);
  const names = new Set();
  for (const [, name, type] of r.text.matchAll(/^# TYPE (\S+) (\S+)/gm)) {
    names.add(name);
    if (type === 'histogram' || type === 'summary') for (const sfx of ['_bucket', '_sum', '_count']) names.add(name + sfx);
    if (type === 'counter' && !name.endsWith('_total')) names.add(`${name}_total`);
  }
  return names;
}

/**
 * Every alert expr through /api/v1/query. The result may be empty (the system is healthy), but the
 * expr must parse and each metric it names must be ingested by Prometheus or at least declared
 * by the proxy (`declared`); the rule's health as Prometheus evaluates it must not be `err`.
 */
export async function evaluateAlerts(promUrl, rulesFile = RULES_FILE, { names, declared = new Set() } = {}) {
  const known = names ?? (await knownMetricNames(promUrl));
  const rules = alertRules(rulesFile).map((r) => ({ source: basename(rulesFile), panel: 'alert', title: r.alert, refId: '-', expr: r.expr }));
  const results = await evaluateQueries(promUrl, rules, { requireData: false, names: new Set([...known, ...declared]) });
  for (const r of results) {
    const declaredOnly = metricNames(r.promql).filter((n) => !known.has(n) && declared.has(n));
    if (declaredOnly.length) r.detail += ` (declared by the proxy, no series yet: ${declaredOnly.join(', ')})`;
  }
  const loaded = await promApi(promUrl, '/api/v1/rules', { type: 'alert' });
  const byName = new Map((loaded.ok ? loaded.body.data.groups : []).flatMap((g) => g.rules).map((r) => [r.name, r]));
  for (const r of results) {
    const rule = byName.get(r.title);
    if (!rule) {
      r.ok = false;
      r.detail += '; not loaded by Prometheus';
      continue;
    }
    if (rule.health === 'err') {
      r.ok = false;
      r.detail += `; rule evaluation error: ${rule.lastError}`;
      continue;
    }
    r.detail += `; rule ${rule.health}, ${rule.state}`;
  }
  return results;
}

/** A copy of the dashboard with every occurrence of one metric in target exprs renamed. */
export function renameMetric(dashboard, from, to) {
  const copy = structuredClone(dashboard);
  const re = new RegExp(`(?<![\\w:])${from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w:])`, 'g');
  for (const p of walkPanels(copy.panels)) for (const t of p.targets ?? []) if (t.expr) t.expr = t.expr.replace(re, to);
  return copy;
}

/**
 * The negative proof: a dashboard whose query names a metric the proxy does not export must be
 * reported as failing. Returns { ok, failed } where ok means the check caught it.
 */
export async function negativeProof(promUrl, dashboard, { names } = {}) {
  const target = dashboardQueries(dashboard).find((q) => metricNames(q.expr).some((n) => PROXY_METRIC.test(n)));
  const original = metricNames(target.expr).find((n) => PROXY_METRIC.test(n));
  const broken = renameMetric(dashboard, original, 'breakwater_no_such_metric_total');
  const results = await evaluateDashboard(promUrl, broken, { names });
  const failed = results.filter((r) => !r.ok);
  return { ok: failed.some((r) => r.expr.includes('breakwater_no_such_metric_total')), renamed: original, failed };
}

// ---------------------------------------------------------------------------------------------
// Report and CLI

export function formatResult(r) {
  const what =
    r.panel === 'var' ? `${r.source} variable ${r.title}` : r.panel === 'alert' ? `alert ${r.title}` : `${r.source} #${r.panel} "${r.title}" ${r.refId}`;
  return `${r.ok ? 'ok  ' : 'FAIL'} ${what} — ${r.detail}${r.ok ? '' : `\n       ${r.promql}`}`;
}

/** Static part: structure, promtool check/test, offline lint. Returns { ok, lines }. */
export function checkStatic({ dashboards = loadDashboards(), rulesFile = RULES_FILE, rulesTestFile = RULES_TEST_FILE } = {}) {
  const lines = [];
  let ok = true;
  const note = (good, text) => {
    ok &&= good;
    lines.push(`${good ? 'ok  ' : 'FAIL'} ${text}`);
  };
  let panels = 0;
  let queries = [];
  for (const { name, dashboard } of dashboards) {
    const errs = validateDashboard(dashboard, name);
    const qs = errs.length ? [] : dashboardQueries(dashboard, name);
    panels += [...walkPanels(dashboard.panels)].length;
    queries = queries.concat(qs);
    note(
      errs.length === 0,
      `structure ${name}${errs.length ? `:\n       ${errs.join('\n       ')}` : ` (${dashboard.panels.length} panels, ${qs.length} queries)`}`,
    );
  }
  note(dashboards.length >= 3, `${dashboards.length} dashboards, ${panels} panels, ${queries.length} queries`);
  const lint = lintQueriesOffline(queries);
  note(lint.ok, `promtool type-checks every dashboard query${lint.ok ? '' : `:\n${lint.output}`}`);
  const check = checkRules(rulesFile);
  note(check.ok, `promtool check rules ${basename(rulesFile)}${check.ok ? '' : `:\n${check.output}`}`);
  const test = testRules(rulesTestFile);
  note(test.ok, `promtool test rules ${basename(rulesTestFile)}${test.ok ? '' : `:\n${test.output}`}`);
  return { ok, lines, queries };
}

/** Live part against a started stack (after generateLoad): every dashboard query, variable and alert. */
export async function checkLive(stack, { dashboards = loadDashboards(), rulesFile = RULES_FILE } = {}) {
  const names = await knownMetricNames(stack.promUrl);
  const declared = await declaredMetricNames(stack.adminPort);
  const dashboardResults = [];
  for (const { name, dashboard } of dashboards) {
    dashboardResults.push(...(await evaluateVariables(stack.promUrl, dashboard, name)));
    dashboardResults.push(...(await evaluateDashboard(stack.promUrl, dashboard, { source: name, names })));
  }
  const alertResults = await evaluateAlerts(stack.promUrl, rulesFile, { names, declared });
  const named = [...dashboardResults.filter((r) => r.panel !== 'var'), ...alertResults].flatMap((r) => metricNames(r.promql));
  // Named by a query, never seen by Prometheus: absent from the proxy, or declared but never touched.
  const missingProxyMetrics = [...new Set(named)]
    .filter((n) => !names.has(n))
    .sort()
    .map((n) => (declared.has(n) ? `${n} (declared, no series)` : n));
  return { dashboardResults, alertResults, missingProxyMetrics, names, declared };
}

async function main(argv) {
  const staticOnly = argv.includes('--static');
  const t0 = Date.now();
  const log = (s) => console.log(`     ${s}`);
  const st = checkStatic();
  for (const l of st.lines) console.log(l);
  let ok = st.ok;
  if (staticOnly) {
    console.log(`static checks ${ok ? 'hold' : 'FAIL'}`);
    return ok ? 0 : 1;
  }

  let stack;
  const bail = (sig) => {
    console.error(`\n${sig}: killing children ${[...live].map((c) => c.pid).join(', ')}`);
    process.exit(130); // the exit handler kills them and removes the temp dir
  };
  process.once('SIGINT', bail);
  process.once('SIGTERM', bail);
  try {
    stack = await startStack({ log });
    await generateLoad(stack, { log });
    const results = await checkLive(stack);
    for (const r of results.alertResults) console.log(formatResult(r));
    const alertFailed = results.alertResults.filter((r) => !r.ok).length;
    console.log(`alerts: ${results.alertResults.length - alertFailed} exprs ok, ${alertFailed} failed`);
    const neg = await negativeProof(stack.promUrl, loadDashboards()[0].dashboard, { names: results.names });
    console.log(
      `${neg.ok ? 'ok  ' : 'FAIL'} negative proof: with ${neg.renamed} renamed to breakwater_no_such_metric_total, ${neg.failed.length} queries are reported failing${neg.failed[0] ? ` (${neg.failed[0].detail})` : ''}`,
    );
    if (results.missingProxyMetrics.length)
      console.log(`     metrics named by queries that Prometheus never ingested: ${results.missingProxyMetrics.join(', ')}`);
    for (const r of results.dashboardResults) console.log(formatResult(r));
    const failed = results.dashboardResults.filter((r) => !r.ok).length;
    ok = ok && alertFailed === 0 && neg.ok && failed === 0;
    console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    console.log(`dashboards: ${results.dashboardResults.length - failed} queries ok, ${failed} failed`);
  } catch (e) {
    ok = false;
    console.error(`FAIL live check: ${e.stack ?? e.message}`);
    console.log('dashboards: 0 queries ok, live check did not run');
  } finally {
    await stack?.stop();
  }
  return ok ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
