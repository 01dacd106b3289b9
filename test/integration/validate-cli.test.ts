// `breakwater validate` through the real CLI: exit 0 and the effective policy for a good file,
// exit 2 and one `file:line:col path: message` per problem for a bad one; exit 2 for bad usage
// and 0 for --help (SPEC exit codes).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../support/proxy.js';
import { runCli } from '../support/processes.js';

/** 1-based line and column of the first occurrence of `needle` (plus `offset` chars) in `text`. */
function where(text: string, needle: string, offset = 0): { line: number; col: number } {
  const i = text.indexOf(needle);
  if (i < 0) throw new Error(`not in policy: ${needle}`);
  const at = i + offset;
  const before = text.slice(0, at);
  return { line: before.split('\n').length, col: at - before.lastIndexOf('\n') };
}

function edit(from: string, to: string): string {
  const out = DEFAULT_POLICY.replace(from, to);
  if (out === DEFAULT_POLICY) throw new Error(`edit did not apply: ${from}`);
  return out;
}

/** The problem lines of stderr (`file:line:col …`). */
const problems = (stderr: string, file: string) => stderr.split('\n').filter((l) => l.startsWith(`${file}:`));

describe('validate CLI', () => {
  let dir: string;
  const write = (name: string, text: string) => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'bw-validate-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts the shipped default policy (no --config) and prints the effective settings: exit 0', async () => {
    const r = await runCli(['validate']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/policy .*config\/policy\.yaml: OK/);
    expect(r.stdout).toContain('twilio');
    expect(r.stdout).toContain('https://api.twilio.com');
    expect(r.stdout).toContain('https://api.vapi.ai');
    expect(r.stderr).toBe('');
  });

  it('accepts the default policy given with --config: exit 0', async () => {
    const f = write('default.yaml', DEFAULT_POLICY);
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${f}: OK`);
  });

  it('prints the policy after environment overrides, with secrets shown only as set/unset', async () => {
    const env = {
      TWILIO_BASE_URL: 'http://127.0.0.1:4010',
      CIRCUIT_BREAKER_THRESHOLD: '7',
      CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '12',
      RATE_LIMIT_PER_MINUTE: '321',
      TWILIO_ACCOUNT_SID: 'AC00000000000000000000000000000001',
      TWILIO_AUTH_TOKEN: 'tok-validate-secret-91c2',
      VAPI_API_KEY: 'vapi-validate-secret-5e7d',
    };
    const r = await runCli(['validate'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('http://127.0.0.1:4010');
    expect(r.stdout).toContain('7 fails');
    expect(r.stdout).toContain('12s open');
    expect(r.stdout).toContain('321/60s');
    expect(r.stdout).toMatch(/password=set/);
    expect(r.stdout).toMatch(/token=set/);
    expect(r.stdout + r.stderr).not.toContain(env.TWILIO_AUTH_TOKEN);
    expect(r.stdout + r.stderr).not.toContain(env.VAPI_API_KEY);
  });

  it("reports a typo'd key at its line and column with its path: exit 2", async () => {
    const text = edit('      threshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}  # consecutive', '      treshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}  # consecutive');
    const f = write('typo.yaml', text);
    const { line, col } = where(text, 'treshold:');
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(problems(r.stderr, f)).toEqual([`${f}:${line}:${col} upstreams.twilio.breaker.treshold: unknown key "treshold"`]);
  });

  it('reports a value of the wrong type at its line and column: exit 2', async () => {
    const text = edit('maxBodyBytes: 10485760', 'maxBodyBytes: lots');
    const f = write('type.yaml', text);
    const { line, col } = where(text, 'maxBodyBytes: lots', 'maxBodyBytes: '.length);
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(2);
    const lines = problems(r.stderr, f);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${escape(f)}:${line}:${col} server\\.maxBodyBytes: .*number`));
  });

  it('reports a YAML syntax error with its line: exit 2', async () => {
    const text = edit('  adminPort: ${ADMIN_PORT:-9090}', '  adminPort: ${ADMIN_PORT:-9090}: 9091');
    const f = write('syntax.yaml', text);
    const { line } = where(text, 'adminPort:');
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(2);
    const lines = problems(r.stderr, f);
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines[0]).toMatch(new RegExp(`^${escape(f)}:${line}:\\d+`));
    expect(lines[0]!.length).toBeGreaterThan(`${f}:${line}:1: `.length);
  });

  it('reports an unclosed flow sequence as a syntax error: exit 2', async () => {
    const text = edit('hosts: ["*.twilio.com"]', 'hosts: ["*.twilio.com"');
    const f = write('unclosed.yaml', text);
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(2);
    const lines = problems(r.stderr, f);
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines[0]).toMatch(new RegExp(`^${escape(f)}:\\d+:\\d+`));
  });

  it('reports every problem at once, in file order', async () => {
    let text = edit('maxBodyBytes: 10485760', 'maxBodyBytes: lots');
    text = text.replace('      threshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}  # consecutive', '      treshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}  # consecutive');
    text = text.replace('logging:\n  level: ${LOG_LEVEL:-info}', 'logging:\n  level: ${LOG_LEVEL:-info}\n  colour: true');
    const f = write('many.yaml', text);
    const r = await runCli(['validate', '--config', f]);
    expect(r.code).toBe(2);
    const lines = problems(r.stderr, f);
    expect(lines.map((l) => l.split(' ')[1])).toEqual(['server.maxBodyBytes:', 'logging.colour:', 'upstreams.twilio.breaker.treshold:']);
    const numbers = lines.map((l) => Number(l.slice(f.length + 1).split(':')[0]));
    expect([...numbers].sort((a, b) => a - b)).toEqual(numbers);
  });

  it('reports an environment value of the wrong type at the line that reads it', async () => {
    const f = write('env.yaml', DEFAULT_POLICY);
    const r = await runCli(['validate', '--config', f], { CIRCUIT_BREAKER_THRESHOLD: 'three' });
    expect(r.code).toBe(2);
    const lines = problems(r.stderr, f);
    const twilioLine = where(DEFAULT_POLICY, 'threshold: ${CIRCUIT_BREAKER_THRESHOLD').line;
    expect(lines.some((l) => l.startsWith(`${f}:${twilioLine}:`) && l.includes('upstreams.twilio.breaker.threshold'))).toBe(true);
    expect(lines.some((l) => l.includes('upstreams.vapi.breaker.threshold'))).toBe(true);
  });

  it('start refuses a bad policy the same way, with exit 2 and without listening', async () => {
    const text = edit('maxBodyBytes: 10485760', 'maxBodyBytes: lots');
    const f = write('start-bad.yaml', text);
    const r = await runCli(['start', '--config', f], { PROXY_HOST: '127.0.0.1', PROXY_PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0' });
    expect(r.code).toBe(2);
    expect(problems(r.stderr, f)).toHaveLength(1);
    expect(r.stdout).not.toContain('breakwater listening');
  });

  it('exits 2 for a policy file that does not exist', async () => {
    const r = await runCli(['validate', '--config', join(dir, 'missing.yaml')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing.yaml');
  });

  it.each([
    [['frobnicate'], 'an unknown command'],
    [['validate', '--bogus'], 'an unknown option'],
    [['validate', '--config'], 'a missing option value'],
  ])('exits 2 for %j (%s)', async (args) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr.length).toBeGreaterThan(0);
  });

  it.each([[['--help']], [['validate', '--help']], [['start', '--help']], [['help', 'validate']]])('exits 0 for %j and prints usage', async (args) => {
    const r = await runCli(args);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: breakwater/);
  });

  it('exits 0 for --version and prints the version', async () => {
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
