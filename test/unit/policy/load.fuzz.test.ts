// Property tests for the policy loader (issue 8): whatever text and environment it is given, it
// either returns a frozen policy or throws a PolicyError whose every problem has a position and a
// message. Anything else escaping (a ReferenceError from yaml, a RangeError, a TypeError from a
// schema refinement) would crash `validate` and `start` instead of naming the problem.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../../src/policy/load.js';

const RUNS = 400;
/** Runs over the whole shipped policy cost ~10 ms each; fewer keep the suite fast. */
const POLICY_RUNS = 250;
const DEFAULT_POLICY = readFileSync(new URL('../../../config/policy.yaml', import.meta.url), 'utf8');
const LINES = DEFAULT_POLICY.split('\n');

const SPEC_VARS = [
  'PROXY_HOST',
  'PROXY_PORT',
  'ADMIN_HOST',
  'ADMIN_PORT',
  'TWILIO_BASE_URL',
  'VAPI_BASE_URL',
  'CIRCUIT_BREAKER_ENABLED',
  'CIRCUIT_BREAKER_THRESHOLD',
  'CIRCUIT_BREAKER_RECOVERY_TIMEOUT',
  'RATE_LIMIT_PER_MINUTE',
  'RATE_LIMIT_STORE',
  'REDIS_URL',
  'INTEGRATIONS_STUB_MODE',
  'UPSTREAM_TIMEOUT',
  'TWILIO_ACCOUNT_SID',
  'TWILIO_AUTH_TOKEN',
  'TWILIO_API_KEY_SID',
  'TWILIO_API_KEY_SECRET',
  'VAPI_API_KEY',
  'LOG_LEVEL',
] as const;

/** Values an operator (or a broken deploy script) might put in an environment variable. */
const envValue = fc.oneof(
  fc.constantFrom(
    '',
    '0',
    '-1',
    '3',
    '2.5',
    '1e309',
    'true',
    'false',
    'null',
    '~',
    'redis',
    'memory',
    '[1, 2]',
    '{a: 1}',
    'a: b',
    '- x',
    '*alias',
    '&anchor',
    '${NESTED}',
    '}',
    '"',
    "'",
    '#',
    '\n',
    'https://x.test',
    'ftp://x',
    'debug',
  ),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 10 }),
);
const env = fc
  .record(
    {
      ...Object.fromEntries(SPEC_VARS.map((k) => [k, envValue])),
      // A secret file that does not exist: must be a problem, never a throw.
      VAPI_API_KEY_FILE: fc.constantFrom('/nonexistent/bw-fuzz', ''),
    },
    { requiredKeys: [] },
  )
  .map((e) => e as Record<string, string>);

/** Fragments that make YAML-ish text: structure, the schema's own keys, interpolation, oddities. */
const token = fc.oneof(
  fc.constantFrom(
    '\n',
    '\n  ',
    '\n    ',
    '\n      ',
    ': ',
    ':',
    '- ',
    '-',
    ' ',
    '\t',
    '[',
    ']',
    '{',
    '}',
    ',',
    '"',
    "'",
    '#',
    '&a ',
    '*a',
    '*b',
    '!!str ',
    '!!int ',
    '? ',
    '|',
    '>',
    '---\n',
    '...\n',
    '<<: ',
    '%YAML 1.2\n',
    'upstreams',
    'twilio',
    'vapi',
    'baseUrl',
    'prefix',
    'hosts',
    'breaker',
    'threshold',
    'threshhold',
    'rateLimits',
    'name',
    'rate',
    'per',
    'key',
    'route',
    'stubs',
    'body',
    'server',
    'port',
    'trustedProxies',
    'store',
    'type',
    'redis',
    'credentials',
    'password',
    '__proto__',
    'constructor',
    'https://api.twilio.com',
    '/twilio',
    '"*.twilio.com"',
    '10.0.0.0/8',
    '"{{sid SM}}"',
    '"{{nope}}"',
    'GET /a/*',
    '0',
    '-1',
    '1.5',
    'true',
    'null',
    '~',
    '${A}',
    '${A:-3}',
    '${A-x}',
    '${A:-${B:-}}',
    '${',
    '${A:-',
    '}',
    '$',
  ),
  fc.string({ maxLength: 6 }),
);
const yamlish = fc.array(token, { maxLength: 60 }).map((ts) => ts.join(''));

/** Edits to the shipped policy: each keeps most of the file valid so deep paths get exercised. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('delete-line' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate-line' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('replace-value' as const), at: fc.nat(), value: fc.oneof(token, envValue) }),
  fc.record({ kind: fc.constant('insert-line' as const), at: fc.nat(), text: yamlish }),
  fc.record({ kind: fc.constant('splice-chars' as const), at: fc.nat(), remove: fc.nat({ max: 5 }), text: fc.oneof(token, fc.string({ maxLength: 4 })) }),
  fc.record({ kind: fc.constant('indent' as const), at: fc.nat(), by: fc.integer({ min: -3, max: 3 }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(lines: string[], m: Mutation): string[] {
  const out = [...lines];
  const i = m.at % out.length;
  switch (m.kind) {
    case 'delete-line':
      out.splice(i, 1);
      break;
    case 'duplicate-line':
      out.splice(i, 0, out[i]!);
      break;
    case 'replace-value': {
      const line = out[i]!;
      const colon = line.indexOf(': ');
      out[i] = colon < 0 ? `${line}${m.value}` : `${line.slice(0, colon + 2)}${m.value}`;
      break;
    }
    case 'insert-line':
      out.splice(i, 0, m.text);
      break;
    case 'splice-chars': {
      const text = out.join('\n');
      const at = m.at % (text.length + 1);
      return `${text.slice(0, at)}${m.text}${text.slice(at + m.remove)}`.split('\n');
    }
    case 'indent': {
      const line = out[i]!;
      out[i] = m.by >= 0 ? `${' '.repeat(m.by)}${line}` : line.slice(Math.min(-m.by, line.length - line.trimStart().length));
      break;
    }
  }
  return out;
}

/** The property: a frozen policy, or a PolicyError whose every problem is well formed. */
function checkOutcome(text: string, environment: Record<string, string>): void {
  let result: unknown;
  try {
    result = parsePolicy(text, { env: environment, displayName: 'fuzz.yaml' });
  } catch (err) {
    if (!(err instanceof PolicyError)) throw new Error(`non-PolicyError escaped: ${String(err)}\n--- input ---\n${text}`);
    expect(err.problems.length).toBeGreaterThan(0);
    for (const p of err.problems) {
      expect(Number.isInteger(p.line) && p.line >= 0, `line of ${JSON.stringify(p)}`).toBe(true);
      expect(Number.isInteger(p.col) && p.col >= 0, `col of ${JSON.stringify(p)}`).toBe(true);
      expect(typeof p.message === 'string' && p.message.length > 0, `message of ${JSON.stringify(p)}`).toBe(true);
      expect(typeof p.path).toBe('string');
    }
    expect(err.message.split('\n').every((l) => l.startsWith('fuzz.yaml:'))).toBe(true);
    return;
  }
  expect(Object.isFrozen(result)).toBe(true);
}

describe('policy loader fuzz', () => {
  it('the shipped policy loads under the empty environment (the fuzz baseline)', () => {
    expect(() => parsePolicy(DEFAULT_POLICY, { env: {} })).not.toThrow();
  });

  it('arbitrary YAML-ish text never throws anything but a well-formed PolicyError', () => {
    fc.assert(
      fc.property(yamlish, env, (text, e) => checkOutcome(text, e)),
      { numRuns: RUNS },
    );
  });

  it('arbitrary unicode text never throws anything but a well-formed PolicyError', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => checkOutcome(text, {})),
      { numRuns: RUNS },
    );
  });

  it('mutations of config/policy.yaml never throw anything but a well-formed PolicyError', () => {
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), env, (ms, e) => {
        const lines = ms.reduce(mutate, LINES);
        checkOutcome(lines.join('\n'), e);
      }),
      { numRuns: POLICY_RUNS },
    );
  });

  it('the shipped policy under an arbitrary environment never throws anything but a well-formed PolicyError', () => {
    fc.assert(
      fc.property(env, (e) => checkOutcome(DEFAULT_POLICY, e)),
      { numRuns: POLICY_RUNS },
    );
  });

  it('deep nesting is a problem, not a crash', () => {
    for (const text of ['['.repeat(5000), `a: ${'{a: '.repeat(3000)}`, `x: ${'${A:-'.repeat(20_000)}${'}'.repeat(20_000)}`]) checkOutcome(text, {});
  });
});
