// The dashboards against real parts: the proxy (bin/breakwater.js) in front of fake upstreams on
// loopback, scraped every second by a real Prometheus with the alert rules loaded. After a short
// load (successes, 429s, an open breaker and its recovery) every dashboard query must return data,
// every alert expression must parse over metrics Prometheus has seen, and a dashboard naming a
// metric the proxy does not export must be reported failing. Needs `prometheus` and `promtool` on
// PATH and a built dist/; without them these tests fail, they never skip.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkLive,
  checkStatic,
  formatResult,
  generateLoad,
  loadDashboards,
  negativeProof,
  promApi,
  renameMetric,
  substituteGrafanaVars,
  evaluateDashboard,
  startStack,
  validateDashboard,
  type LiveReport,
  type Stack,
} from '../../scripts/check-dashboards.mjs';

const failures = (rs: LiveReport['dashboardResults']) =>
  rs
    .filter((r) => !r.ok)
    .map(formatResult)
    .join('\n');

describe('Grafana dashboards and alert rules', () => {
  it('are well-formed, type-check offline and pass promtool', () => {
    for (const { name, dashboard } of loadDashboards()) expect(validateDashboard(dashboard, name)).toEqual([]);
    const st = checkStatic();
    expect(st.ok, st.lines.join('\n')).toBe(true);
    expect(st.queries.length).toBeGreaterThanOrEqual(20);
  });

  it('structural validation rejects a broken panel', () => {
    const { dashboard } = loadDashboards()[0]!;
    const broken = structuredClone(dashboard) as any;
    delete broken.panels[0].gridPos.w;
    broken.panels[1].targets[0].expr = 'sum(circuit_breaker_opens_total)';
    const errors = validateDashboard(broken, 'broken');
    expect(errors.join('\n')).toMatch(/gridPos must have required property 'w'/);
  });

  it('meaning checks reject panels that mislead in an outage', () => {
    const find = (n: string) => structuredClone(loadDashboards().find((d) => d.name === n)!.dashboard) as any;
    const perf = find('performance.json');
    const p50 = perf.panels.find((p: any) => p.title === 'p50 latency (range)');
    p50.targets[0].expr = p50.targets[0].expr.replace(', source="upstream"', '');
    p50.fieldConfig.defaults.thresholds.steps.at(-1).value = 1000;
    const perfErrors = validateDashboard(perf, 'perf').join('\n');
    expect(perfErrors).toMatch(/p50 latency.*source="upstream"/);
    expect(perfErrors).toMatch(/p50 must turn red at 200 ms/);
    const errs = find('error-analytics.json');
    const budget = errs.panels.find((p: any) => p.title === 'Error budget remaining (30d)');
    budget.targets[0].expr = budget.targets[0].expr.replace(/^clamp\((.*), 0, 100\)$/, '$1');
    expect(validateDashboard(errs, 'errors').join('\n')).toMatch(/must be clamped to 0\.\.100/);
  });
});

describe('dashboards against a real Prometheus scraping a real proxy', () => {
  let stack: Stack | undefined;
  let report: LiveReport | undefined;
  let setupError: unknown;
  // A setup failure (no prometheus, no dist/) fails each test below rather than skipping it.
  const live = (): { stack: Stack; report: LiveReport } => {
    if (setupError !== undefined) throw setupError;
    return { stack: stack!, report: report! };
  };

  beforeAll(async () => {
    try {
      stack = await startStack();
      await generateLoad(stack);
      report = await checkLive(stack);
    } catch (e) {
      setupError = e;
    }
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
  }, 15_000);

  it('every dashboard query and variable returns data', () => {
    const { report } = live();
    expect(report.dashboardResults.length).toBeGreaterThanOrEqual(20);
    expect(failures(report.dashboardResults)).toBe('');
    // Alerts may name a metric the proxy declares but has not touched in this run (the Redis
    // fallback gauge with the memory store); anything else missing is a wrong name.
    expect(report.missingProxyMetrics.filter((m) => !m.endsWith('(declared, no series)'))).toEqual([]);
  });

  it("the breaker dashboard's scope panel shows the base and each host-routed destination", async () => {
    const { stack } = live();
    const breakers = loadDashboards().find((d) => d.name === 'breaker-health.json')!.dashboard;
    const panel = breakers.panels.find((p: any) => p.title === 'Breaker state by destination') as any;
    const r = await promApi(stack.promUrl, '/api/v1/query', { query: substituteGrafanaVars(panel.targets[0].expr) });
    expect(r.ok).toBe(true);
    const scopes = r.body.data.result.map((x: any) => `${x.metric.service} ${x.metric.destination}`).sort();
    expect(scopes).toEqual(['twilio base', 'twilio verify.twilio.com', 'vapi base']);
  });

  it('every alert expression parses, names only exported metrics, and its rule evaluates', () => {
    const { report } = live();
    // One result per rule in the shipped file: a rule the check skipped would be a rule nobody tested.
    const rules = readFileSync(new URL('../../prometheus/alerts.yml', import.meta.url), 'utf8').match(/^\s*- alert: /gm) ?? [];
    expect(rules.length).toBeGreaterThanOrEqual(7);
    expect(report.alertResults).toHaveLength(rules.length);
    expect(failures(report.alertResults)).toBe('');
  });

  it('a dashboard naming a metric the proxy does not export is reported failing', async () => {
    const { stack, report } = live();
    const { dashboard } = loadDashboards()[0]!;
    const proof = await negativeProof(stack.promUrl, dashboard, { names: report.names });
    expect(proof.ok).toBe(true);
    expect(proof.failed.map((f) => f.detail).join('\n')).toMatch(/unknown metric breakwater_no_such_metric_total; empty result/);

    // The same, spelled out on one panel of another dashboard.
    const perf = loadDashboards().find((d) => d.name === 'performance.json')!.dashboard;
    const broken = renameMetric(perf, 'breakwater_upstream_pool_size', 'breakwater_no_such_metric_total');
    const results = await evaluateDashboard(stack.promUrl, broken, { names: report.names });
    const failed = results.filter((r) => !r.ok);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((r) => r.expr.includes('breakwater_no_such_metric_total'))).toBe(true);
  });
});
