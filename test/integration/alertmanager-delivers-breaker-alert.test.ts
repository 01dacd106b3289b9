// The breaker alert reaches someone: a real Prometheus scrapes the proxy and evaluates the
// BreakwaterCircuitOpen rule from prometheus/alerts.yml (its windows shortened in a test-only copy
// so this takes seconds), a real Alertmanager (Debian's prometheus-alertmanager) routes it with
// the repository's prometheus/alertmanager.yml routing tree, and a webhook receiver on 127.0.0.1
// gets the notification. The upstream answers 500 throughout, so the breaker cycles open ->
// half-open -> open without closing, the pattern a hanging or dead upstream makes.
// Also checks that the compose stack wires the same parts and keeps data for the SLO windows.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { freePort, waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const ALERTMANAGER = 'prometheus-alertmanager';
const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

interface Notification {
  receiver: string;
  status: string;
  alerts: { status: string; labels: Record<string, string>; annotations: Record<string, string> }[];
}
interface RuleFile {
  groups: { name: string; rules: { alert: string; expr: string; for?: string }[] }[];
}

function startChild(cmd: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.on('error', () => {});
  return child;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await gone;
  clearTimeout(t);
}

const ok = async (url: string) => {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(1000) })).ok;
  } catch {
    return false;
  }
};

describe('a breaker alert delivered through a real Alertmanager', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bw-alertmanager-'));
  const received: Notification[] = [];
  let hook: http.Server;
  let twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  let prom: ChildProcess | undefined, am: ChildProcess | undefined;
  let promPort = 0,
    amPort = 0;
  let traffic: NodeJS.Timeout | undefined;

  beforeAll(async () => {
    const v = spawnSync(ALERTMANAGER, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (v.error) throw new Error(`${ALERTMANAGER} could not run: apt-get install prometheus-alertmanager`);

    hook = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(JSON.parse(Buffer.concat(chunks).toString()) as Notification);
        res.end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}`;

    ({ twilio, p } = harness = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '2', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '1', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
    twilio.mode = 'fail';
    twilio.status = 500;

    // The repository's routing tree, with its receivers pointed at the test's webhook and its
    // waits shortened.
    const amConfig = parse(readFileSync('prometheus/alertmanager.yml', 'utf8')) as {
      route: Record<string, unknown>;
      receivers: { name: string; webhook_configs: { url: string }[] }[];
    };
    Object.assign(amConfig.route, { group_wait: '1s', group_interval: '1s', repeat_interval: '1m' });
    for (const r of amConfig.receivers) for (const w of r.webhook_configs) w.url = `${hookUrl}/${r.name}`;
    writeFileSync(join(dir, 'alertmanager.yml'), stringify(amConfig));

    // The real rule, its windows shortened: same expression shape, same labels.
    const rules = parse(readFileSync('prometheus/alerts.yml', 'utf8')) as RuleFile;
    const rule = rules.groups[0]!.rules.find((r) => r.alert === 'BreakwaterCircuitOpen')!;
    rule.expr = rule.expr.replaceAll('[2m]', '[4s]');
    rule.for = '1s';
    writeFileSync(join(dir, 'rules.yml'), stringify({ groups: [{ name: 'breakwater', interval: '500ms', rules: [rule] }] }));

    [promPort, amPort] = [await freePort(), await freePort()];
    writeFileSync(
      join(dir, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '500ms', scrape_timeout: '500ms', evaluation_interval: '500ms' },
        rule_files: [join(dir, 'rules.yml')],
        alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
        scrape_configs: [{ job_name: 'breakwater', static_configs: [{ targets: [`127.0.0.1:${p.adminPort}`] }] }],
      }),
    );

    am = startChild(
      ALERTMANAGER,
      [
        `--config.file=${join(dir, 'alertmanager.yml')}`,
        `--storage.path=${join(dir, 'am')}`,
        `--web.listen-address=127.0.0.1:${amPort}`,
        '--cluster.listen-address=',
        '--log.level=warn',
      ],
      join(dir, 'alertmanager.log'),
    );
    prom = startChild(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--log.level=warn',
      ],
      join(dir, 'prometheus.log'),
    );
    expect(await waitFor(() => ok(`http://127.0.0.1:${amPort}/-/ready`), { timeoutMs: 15_000, everyMs: 100 }), 'alertmanager ready').toBe(true);
    expect(await waitFor(() => ok(`http://127.0.0.1:${promPort}/-/ready`), { timeoutMs: 15_000, everyMs: 100 }), 'prometheus ready').toBe(true);

    // Keeps the breaker cycling: each request after a recovery timeout is a probe that fails.
    traffic = setInterval(
      () => void request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=%2B15555550100&Body=hi', timeoutMs: 2000 }).catch(() => {}),
      150,
    );
  }, 40_000);

  afterAll(async () => {
    if (traffic) clearInterval(traffic);
    await Promise.all([stop(prom), stop(am)]);
    await harness?.close();
    await new Promise<void>((r) => (hook ? hook.close(() => r()) : r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('delivers BreakwaterCircuitOpen for the failing upstream to the on-call webhook', async () => {
    const delivered = () =>
      received
        .flatMap((n) => n.alerts.map((a) => ({ receiver: n.receiver, ...a })))
        .find((a) => a.labels.alertname === 'BreakwaterCircuitOpen' && a.status === 'firing');
    // Prometheus discovers the Alertmanager within ~5 s; the rule needs 4 s of cycling and 1 s.
    expect(await waitFor(() => delivered() !== undefined, { timeoutMs: 45_000, everyMs: 200 }), `no notification; got ${JSON.stringify(received)}`).toBe(true);
    const a = delivered()!;
    expect(a.receiver).toBe('oncall');
    expect(a.labels).toMatchObject({ alertname: 'BreakwaterCircuitOpen', service: 'twilio', severity: 'critical' });
    expect(a.annotations.summary).toBe('Circuit breaker for twilio is open');
    // The healthy upstream raised nothing.
    expect(received.flatMap((n) => n.alerts).filter((x) => x.labels.service === 'vapi')).toEqual([]);
  }, 60_000);
});

describe('the compose stack routes alerts and keeps the SLO windows', () => {
  const compose = parse(readFileSync('docker-compose.yml', 'utf8')) as { services: Record<string, { command?: string[]; volumes?: string[] }> };
  const promConfig = parse(readFileSync('prometheus/prometheus.yml', 'utf8')) as {
    alerting?: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
  };

  it('points Prometheus at the compose Alertmanager, which mounts the repository config', () => {
    const targets = (promConfig.alerting?.alertmanagers ?? []).flatMap((a) => a.static_configs).flatMap((s) => s.targets);
    expect(targets).toEqual(['alertmanager:9093']);
    expect(compose.services.alertmanager?.volumes).toContain('./prometheus/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro');
    const check = spawnSync('amtool', ['check-config', 'prometheus/alertmanager.yml'], { encoding: 'utf8', timeout: 10_000 });
    expect(check.status, `${check.stdout}${check.stderr}`).toBe(0);
  });

  it('keeps Prometheus data for at least the 30-day SLO window', () => {
    const flag = (compose.services.prometheus?.command ?? []).find((c) => c.startsWith('--storage.tsdb.retention.time='));
    const days = Number(/=(\d+)d$/.exec(flag ?? '')?.[1]);
    expect(days).toBeGreaterThanOrEqual(30);
  });
});
