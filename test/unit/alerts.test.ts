// The alert rules in prometheus/alerts.yml, checked by Prometheus's own tool: they load, and the
// unit tests in prometheus/alerts.test.yml (each alert firing and not firing) pass. A missing
// promtool fails these tests rather than skipping them.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const RULES = 'prometheus/alerts.yml';
const RULE_TESTS = 'prometheus/alerts.test.yml';

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { encoding: 'utf8', timeout: 30_000 });
  return { error: r.error ? `promtool could not run: ${r.error.message}` : undefined, status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

describe('prometheus/alerts.yml', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'bw-alerts-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('passes promtool check rules', () => {
    const r = promtool('check', 'rules', RULES);
    expect(r.error).toBeUndefined();
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS: 7 rules found/);
  });

  it('passes its promtool unit tests', () => {
    const r = promtool('test', 'rules', RULE_TESTS);
    expect(r.error).toBeUndefined();
    expect(r.status, r.output).toBe(0);
  });

  it('has a severity label and summary, description and runbook_url annotations on every alert', () => {
    const text = readFileSync(RULES, 'utf8');
    const alerts = text.split(/\n\s+- alert: /).slice(1);
    expect(alerts.map((a) => a.split('\n')[0])).toEqual([
      'BreakwaterCircuitOpen',
      'BreakwaterErrorBudgetBurnFast',
      'BreakwaterErrorBudgetBurnSlow',
      'BreakwaterHighLatencyP99',
      'BreakwaterRedisFallbackActive',
      'BreakwaterPolicyReloadFailed',
      'BreakwaterIdempotencyStoreReset',
    ]);
    for (const a of alerts) {
      expect(a).toMatch(/\n\s+severity: (critical|warning)\n/);
      for (const key of ['summary', 'description', 'runbook_url']) expect(a).toMatch(new RegExp(`\\n\\s+${key}: `));
    }
  });

  // The unit tests must be able to fail: with the breaker alert made blind, they do.
  it('unit tests catch a broken rule', () => {
    const rules = readFileSync(RULES, 'utf8');
    expect(rules).toContain('max_over_time(circuit_breaker_state[2m]) == 2');
    writeFileSync(join(scratch, 'alerts.yml'), rules.replace('max_over_time(circuit_breaker_state[2m]) == 2', 'max_over_time(circuit_breaker_state[2m]) == 3'));
    copyFileSync(RULE_TESTS, join(scratch, 'alerts.test.yml'));
    const r = promtool('test', 'rules', join(scratch, 'alerts.test.yml'));
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/alertname: BreakwaterCircuitOpen/);
  });

  // The rule as it was (state == 2 for 1m) is blind to a hanging upstream: the unit tests say so.
  it('unit tests catch the breaker alert that half-open samples reset', () => {
    const rules = readFileSync(RULES, 'utf8');
    const naive = rules.replace(
      /expr: max by \(service, destination\) \(min_over_time[^\n]+/,
      'expr: max by (service, destination) (circuit_breaker_state) == 2',
    );
    expect(naive).not.toBe(rules);
    writeFileSync(join(scratch, 'alerts.yml'), naive);
    copyFileSync(RULE_TESTS, join(scratch, 'alerts.test.yml'));
    const r = promtool('test', 'rules', join(scratch, 'alerts.test.yml'));
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/name: circuit open, hanging upstream/);
  });

  // A rule that folds destinations into their upstream says "twilio is open" when only Verify is.
  it('unit tests catch a breaker alert that hides which destination is open', () => {
    const rules = readFileSync(RULES, 'utf8');
    const folded = rules.replace('expr: max by (service, destination) (min_over_time', 'expr: max by (service) (min_over_time');
    expect(folded).not.toBe(rules);
    writeFileSync(join(scratch, 'alerts.yml'), folded);
    copyFileSync(RULE_TESTS, join(scratch, 'alerts.test.yml'));
    const r = promtool('test', 'rules', join(scratch, 'alerts.test.yml'));
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/name: circuit open, one destination/);
  });

  // Every alert has at least one test group that shows it firing.
  it('every rule is shown firing in the unit tests', () => {
    const tests = readFileSync(RULE_TESTS, 'utf8');
    for (const name of alertNames()) {
      const firing = new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`);
      expect(tests, name).toMatch(firing);
    }
  });
});

function alertNames(): string[] {
  return [...readFileSync(RULES, 'utf8').matchAll(/\n\s+- alert: (\w+)/g)].map((m) => m[1]!);
}
