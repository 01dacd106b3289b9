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
      'BreakwaterCircuitOpen', 'BreakwaterErrorBudgetBurnFast', 'BreakwaterErrorBudgetBurnSlow',
      'BreakwaterHighLatencyP99', 'BreakwaterRedisFallbackActive', 'BreakwaterPolicyReloadFailed',
      'BreakwaterIdempotencyStoreReset',
    ]);
    for (const a of alerts) {
      expect(a).toMatch(/\n\s+severity: (critical|warning)\n/);
      for (const key of ['summary', 'description', 'runbook_url']) expect(a).toMatch(new RegExp(`\\n\\s+${key}: `));
    }
  });

  // The unit tests must be able to fail: with the breaker alert made blind, they do.
  it('unit tests catch a broken rule', () => {
    writeFileSync(join(scratch, 'alerts.yml'), readFileSync(RULES, 'utf8').replace('max by (service) (circuit_breaker_state) == 2', 'max by (service) (circuit_breaker_state) == 3'));
    copyFileSync(RULE_TESTS, join(scratch, 'alerts.test.yml'));
    const r = promtool('test', 'rules', join(scratch, 'alerts.test.yml'));
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/alertname: BreakwaterCircuitOpen/);
  });
});
