// The policy loader: a table of broken policies and the exact `file:line:col path: message`
// each produces, `${VAR}` interpolation (defaults, nesting, VAR_FILE, typing), defaults from the
// schema, and a deeply frozen result.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { interpolate, loadPolicyFile, parsePolicy, PolicyError } from '../../../src/policy/load.js';

const scratch = mkdtempSync(join(tmpdir(), 'bw-load-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function secretFile(name: string, content: string): string {
  const f = join(scratch, name);
  writeFileSync(f, content);
  return f;
}

/** The smallest valid policy; rows append to it. Line 1 is `upstreams:`. */
const BASE = `upstreams:
  twilio:
    baseUrl: https://api.twilio.com
    prefix: /twilio
`;

function problemsOf(yaml: string, env: Record<string, string> = {}): string[] {
  try {
    parsePolicy(yaml, { env, displayName: 'policy.yaml' });
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).message.split('\n');
  }
  throw new Error('expected the policy to be refused');
}

describe('parsePolicy: broken policies', () => {
  const rows: { desc: string; yaml: string; env?: Record<string, string>; want: string[] }[] = [
    {
      desc: 'a typo’d key is an error at the key itself, never ignored',
      yaml: `${BASE}    breaker:\n      threshhold: 3\n`,
      want: ['policy.yaml:6:7 upstreams.twilio.breaker.threshhold: unknown key "threshhold"'],
    },
    {
      desc: 'an unknown top-level key',
      yaml: `servr:\n  port: 1\n${BASE}`,
      want: ['policy.yaml:1:1 servr: unknown key "servr"'],
    },
    {
      desc: 'a wrong type names what was expected and what was found',
      yaml: `${BASE}    breaker:\n      threshold: lots\n`,
      want: ['policy.yaml:6:18 upstreams.twilio.breaker.threshold: must be number, got "lots"'],
    },
    {
      desc: 'a list where a mapping belongs',
      yaml: `${BASE}    breaker: [1, 2]\n`,
      want: ['policy.yaml:5:14 upstreams.twilio.breaker: must be object, got a list'],
    },
    {
      desc: 'a YAML syntax error with its line',
      yaml: `upstreams:\n  twilio:\n    baseUrl: https://api.twilio.com\n   prefix: /twilio\n`,
      want: ['policy.yaml:4:1: All mapping items must start at the same column'],
    },
    {
      desc: 'a tab used for indentation',
      yaml: `upstreams:\n  twilio:\n\tbaseUrl: https://api.twilio.com\n`,
      want: ['policy.yaml:3:1: Tabs are not allowed as indentation'],
    },
    {
      desc: 'a duplicate key',
      yaml: `${BASE}    prefix: /again\n`,
      want: ['policy.yaml:5:5: Map keys must be unique'],
    },
    {
      desc: 'a negative timeout',
      yaml: `${BASE}    timeout: -1\n`,
      want: ['policy.yaml:5:14 upstreams.twilio.timeout: Too small: expected number to be >0'],
    },
    {
      desc: 'a zero threshold',
      yaml: `${BASE}    breaker: { threshold: 0 }\n`,
      want: ['policy.yaml:5:27 upstreams.twilio.breaker.threshold: Too small: expected number to be >=1'],
    },
    {
      desc: 'a port out of range',
      yaml: `server:\n  port: 70000\n${BASE}`,
      want: ['policy.yaml:2:9 server.port: Too big: expected number to be <=65535'],
    },
    {
      desc: 'a URL that is not one',
      yaml: `upstreams:\n  twilio:\n    baseUrl: not a url\n    prefix: /t\n`,
      want: ['policy.yaml:3:14 upstreams.twilio.baseUrl: Invalid URL'],
    },
    {
      desc: 'a URL with a scheme other than http(s)',
      yaml: `upstreams:\n  twilio:\n    baseUrl: ftp://api.twilio.com\n    prefix: /t\n`,
      want: ['policy.yaml:3:14 upstreams.twilio.baseUrl: Invalid URL'],
    },
    {
      desc: 'a prefix used twice',
      yaml: `${BASE}  vapi:\n    baseUrl: https://api.vapi.ai\n    prefix: /twilio\n`,
      want: ['policy.yaml:7:13 upstreams.vapi.prefix: prefix /twilio is already used by upstream "twilio"'],
    },
    {
      desc: 'no upstreams key',
      yaml: 'server:\n  port: 8080\n',
      want: ['policy.yaml:1:1 upstreams: must be record (missing)'],
    },
    {
      desc: 'an empty file',
      yaml: '',
      want: ['policy.yaml:1:1 upstreams: must be record (missing)'],
    },
    {
      desc: 'an empty upstreams mapping',
      yaml: 'upstreams: {}\n',
      want: ['policy.yaml:1:12 upstreams: at least one upstream is required'],
    },
    {
      desc: 'an upstream nobody can reach (no prefix, no hosts)',
      yaml: 'upstreams:\n  twilio:\n    baseUrl: https://api.twilio.com\n',
      want: ['policy.yaml:3:5 upstreams.twilio: needs a prefix or hosts to be reachable'],
    },
    {
      desc: 'redis store without a URL',
      yaml: `${BASE}store:\n  type: redis\n`,
      want: ['policy.yaml:5:1 store.redisUrl: RATE_LIMIT_STORE=redis needs REDIS_URL'],
    },
    {
      desc: 'redis store whose URL variable is unset',
      yaml: `${BASE}store:\n  type: \${RATE_LIMIT_STORE:-memory}\n  redisUrl: \${REDIS_URL:-}\n`,
      env: { RATE_LIMIT_STORE: 'redis' },
      want: ['policy.yaml:7:13 store.redisUrl: RATE_LIMIT_STORE=redis needs REDIS_URL'],
    },
    {
      desc: 'a trusted proxy that is not an address or CIDR',
      yaml: `server:\n  trustedProxies: ["10.0.0.0/8", "10.0.0", "10.0.0.0/33", "fd00::/8", "::1/129", "1.2.3.4/8/8"]\n${BASE}`,
      want: [
        'policy.yaml:2:34 server.trustedProxies.1: must be an IP address or CIDR, e.g. "10.0.0.0/8"',
        'policy.yaml:2:44 server.trustedProxies.2: must be an IP address or CIDR, e.g. "10.0.0.0/8"',
        'policy.yaml:2:71 server.trustedProxies.4: must be an IP address or CIDR, e.g. "10.0.0.0/8"',
        'policy.yaml:2:82 server.trustedProxies.5: must be an IP address or CIDR, e.g. "10.0.0.0/8"',
      ],
    },
    {
      desc: 'an unknown rate-limit key part',
      yaml: `${BASE}    rateLimits:\n      - name: d\n        rate: 1\n        key: [phone]\n`,
      want: [
        'policy.yaml:8:15 upstreams.twilio.rateLimits.0.key.0: must be client | ip | account | basic-user | authorization | route | header:<name> | body:<field> | body-prefix:<field>:<digits>',
      ],
    },
    {
      desc: 'two limits with one name',
      yaml: `${BASE}    rateLimits:\n      - { name: a, rate: 1 }\n      - { name: a, rate: 2 }\n`,
      want: ['policy.yaml:7:17 upstreams.twilio.rateLimits.1.name: duplicate limit name "a"'],
    },
    {
      desc: 'a route pattern with an unknown method',
      yaml: `${BASE}    routes:\n      - { name: x, match: "FETCH /a" }\n`,
      want: ['policy.yaml:6:27 upstreams.twilio.routes.0.match: must look like "POST /2010-04-01/Accounts/*/Messages.json"'],
    },
    {
      desc: '** anywhere but the whole last segment',
      yaml: `${BASE}    routes:\n      - { name: a, match: "/Accounts/**/Media" }\n      - { name: b, match: "/files/x**" }\n      - { name: c, match: "GET /ok/**" }\n`,
      want: [
        'policy.yaml:6:27 upstreams.twilio.routes.0.match: `**` matches the rest of the path: it must be the whole last segment',
        'policy.yaml:7:27 upstreams.twilio.routes.1.match: `**` matches the rest of the path: it must be the whole last segment',
      ],
    },
    {
      desc: 'basic credentials with a user and no password',
      yaml: `${BASE}    credentials:\n      type: basic\n      username: AC1\n`,
      want: ['policy.yaml:6:7 upstreams.twilio.credentials: basic credentials need both username and password (or neither)'],
    },
    {
      desc: 'every schema problem at once, in file order',
      yaml: `${BASE}    timeout: fast\n    breaker:\n      threshhold: 3\nserver:\n  port: -1\n`,
      want: [
        'policy.yaml:5:14 upstreams.twilio.timeout: must be number, got "fast"',
        'policy.yaml:7:7 upstreams.twilio.breaker.threshhold: unknown key "threshhold"',
        'policy.yaml:9:9 server.port: Too small: expected number to be >=0',
      ],
    },
    {
      desc: 'an interpolated value of the wrong type is reported at its line',
      yaml: `${BASE}    breaker:\n      threshold: \${CIRCUIT_BREAKER_THRESHOLD:-3}\n`,
      env: { CIRCUIT_BREAKER_THRESHOLD: 'three' },
      want: ['policy.yaml:6:18 upstreams.twilio.breaker.threshold: must be number, got "three"'],
    },
    {
      desc: '${X-d} keeps an empty value, which is then not a number',
      yaml: `server:\n  port: \${PROXY_PORT-8080}\n${BASE}`,
      env: { PROXY_PORT: '' },
      want: ['policy.yaml:2:9 server.port: must be number, got ""'],
    },
    {
      desc: 'an unreadable VAR_FILE, at the line that uses it',
      yaml: `${BASE}    credentials:\n      type: bearer\n      token: \${VAPI_API_KEY:-}\n`,
      env: { VAPI_API_KEY_FILE: '/nonexistent/bw-secret' },
      want: ['policy.yaml:7:14 upstreams.twilio.credentials.token: VAPI_API_KEY_FILE: cannot read /nonexistent/bw-secret (ENOENT)'],
    },
    {
      desc: 'a mapping used as a key',
      yaml: `? { a: 1 }\n: x\n${BASE}`,
      want: ['policy.yaml:1:3: a key must be a plain name, not a mapping or a list'],
    },
    {
      desc: 'a key holding a line break stays on one line',
      yaml: `"thresh\\nhold": 1\n${BASE}`,
      want: ['policy.yaml:1:1 thresh\\nhold: unknown key "thresh\\nhold"'],
    },
    {
      desc: 'a YAML alias to nothing',
      yaml: `${BASE}    timeout: *nothing\n`,
      want: ['policy.yaml:5:14: Unresolved alias (the anchor must be set before the alias): nothing'],
    },
    {
      desc: 'an alias bomb (billion laughs) is refused, not expanded',
      yaml: `a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n${BASE}`,
      want: ['policy.yaml:2:8: Excessive alias count indicates a resource exhaustion attack'],
    },
  ];
  it.each(rows)('$desc', ({ yaml, env, want }) => {
    expect(problemsOf(yaml, env)).toEqual(want);
  });

  it('exposes each problem as data: line, col, path and message', () => {
    try {
      parsePolicy(`${BASE}    breaker:\n      threshhold: 3\n`, { env: {} });
      expect.unreachable();
    } catch (err) {
      expect((err as PolicyError).problems).toEqual([{ line: 6, col: 7, path: 'upstreams.twilio.breaker.threshhold', message: 'unknown key "threshhold"' }]);
      expect((err as PolicyError).file).toBe('policy.yaml');
    }
  });

  it('loadPolicyFile names the file in every message', () => {
    const f = secretFile('broken.yaml', `${BASE}    breaker:\n      threshhold: 3\n`);
    expect(() => loadPolicyFile(f, { env: {} })).toThrow(`${f}:6:7 upstreams.twilio.breaker.threshhold: unknown key "threshhold"`);
  });

  it('loadPolicyFile reports a missing file as a PolicyError', () => {
    const f = join(scratch, 'missing.yaml');
    expect(() => loadPolicyFile(f, { env: {} })).toThrow(PolicyError);
    expect(() => loadPolicyFile(f, { env: {} })).toThrow(`${f}: cannot read policy: ENOENT`);
  });
});

describe('interpolate', () => {
  const rows: { desc: string; text: string; env: Record<string, string>; want: string }[] = [
    { desc: 'set variable', text: '${A}', env: { A: 'x' }, want: 'x' },
    { desc: 'unset variable without default', text: '[${A}]', env: {}, want: '[]' },
    { desc: ':- default when unset', text: '${A:-d}', env: {}, want: 'd' },
    { desc: ':- default when empty', text: '${A:-d}', env: { A: '' }, want: 'd' },
    { desc: '- default when unset', text: '${A-d}', env: {}, want: 'd' },
    { desc: '- keeps an empty value', text: '[${A-d}]', env: { A: '' }, want: '[]' },
    { desc: 'set value wins over both defaults', text: '${A:-d}/${A-d}', env: { A: 'v' }, want: 'v/v' },
    { desc: 'nested default, inner set', text: '${A:-${B:-z}}', env: { B: 'b' }, want: 'b' },
    { desc: 'nested default, neither set', text: '${A:-${B:-z}}', env: {}, want: 'z' },
    { desc: 'nested default, outer set', text: '${A:-${B:-z}}', env: { A: 'a', B: 'b' }, want: 'a' },
    { desc: 'nested empty default', text: '[${A:-${B:-}}]', env: {}, want: '[]' },
    { desc: 'three levels', text: '${A:-${B:-${C:-c}}}', env: {}, want: 'c' },
    { desc: 'several in one string', text: 'http://${H:-localhost}:${P:-80}/x', env: { P: '8080' }, want: 'http://localhost:8080/x' },
    { desc: 'default with colons and slashes', text: '${U:-https://api.twilio.com}', env: {}, want: 'https://api.twilio.com' },
    { desc: 'not a variable: kept as text', text: '${1A} $A ${', env: { A: 'x' }, want: '${1A} $A ${' },
    { desc: 'an unterminated expression is kept', text: '${A:-x', env: {}, want: '${A:-x' },
    { desc: 'values are not re-expanded', text: '${A}', env: { A: '${B}', B: 'no' }, want: '${B}' },
  ];
  it.each(rows)('$desc', ({ text, env, want }) => {
    expect(interpolate(text, env)).toBe(want);
  });

  it('VAR_FILE supplies the value, trailing newline dropped', () => {
    const f = secretFile('token', 's3cret-token\n');
    expect(interpolate('${TOKEN}', { TOKEN_FILE: f })).toBe('s3cret-token');
  });

  it('VAR_FILE: a CRLF line end is dropped too, inner newlines kept', () => {
    const f = secretFile('crlf', 'line1\nline2\r\n');
    expect(interpolate('${T}', { T_FILE: f })).toBe('line1\nline2');
  });

  it('VAR wins over VAR_FILE', () => {
    expect(interpolate('${T}', { T: 'direct', T_FILE: '/nonexistent' })).toBe('direct');
  });

  it('an empty VAR defers to VAR_FILE (compose passes unset secrets through as empty)', () => {
    const f = secretFile('deferred', 'from-file\n');
    expect(interpolate('${T:-d}', { T: '', T_FILE: f })).toBe('from-file');
  });

  it('an empty VAR_FILE is unset', () => {
    expect(interpolate('${T:-d}', { T_FILE: '' })).toBe('d');
  });

  it('an empty file is an empty value, so :- takes the default', () => {
    const f = secretFile('empty', '');
    expect(interpolate('${T:-d}|${T-d}', { T_FILE: f })).toBe('d|');
  });

  it('VAR_FILE works inside a nested default', () => {
    const f = secretFile('inner', 'from-file\n');
    expect(interpolate('${A:-${B:-}}', { B_FILE: f })).toBe('from-file');
  });
});

describe('parsePolicy: interpolation typing', () => {
  const policy = (extra: string, env: Record<string, string>) => parsePolicy(`${BASE}${extra}`, { env });

  const rows: { desc: string; extra: string; env: Record<string, string>; pick: (p: ReturnType<typeof parsePolicy>) => unknown; want: unknown }[] = [
    {
      desc: '${X:-3} is the number 3',
      extra: '    breaker: { threshold: "${X:-3}" }\n',
      env: {},
      pick: (p) => p.upstreams['twilio']!.breaker.threshold,
      want: 3,
    },
    {
      desc: 'unquoted ${X:-3} is the number 3',
      extra: '    breaker:\n      threshold: ${X:-3}\n',
      env: {},
      pick: (p) => p.upstreams['twilio']!.breaker.threshold,
      want: 3,
    },
    {
      desc: 'a set number wins',
      extra: '    breaker:\n      threshold: ${X:-3}\n',
      env: { X: '7' },
      pick: (p) => p.upstreams['twilio']!.breaker.threshold,
      want: 7,
    },
    {
      desc: 'decimals',
      extra: '    timeout: ${UPSTREAM_TIMEOUT:-15}\n',
      env: { UPSTREAM_TIMEOUT: '2.5' },
      // Seconds in the file, milliseconds once parsed.
      pick: (p) => p.upstreams['twilio']!.timeout,
      want: 2500,
    },
    {
      desc: 'a duration converts without float noise (1.1 s is 1100 ms, not 1100.0000000000002)',
      extra: '    timeout: ${UPSTREAM_TIMEOUT:-15}\n',
      env: { UPSTREAM_TIMEOUT: '1.1' },
      pick: (p) => p.upstreams['twilio']!.timeout,
      want: 1100,
    },
    {
      desc: '"false" is the boolean false',
      extra: '    breaker:\n      enabled: ${E:-true}\n',
      env: { E: 'false' },
      pick: (p) => p.upstreams['twilio']!.breaker.enabled,
      want: false,
    },
    {
      desc: 'an all-digit secret stays a string',
      extra: '    credentials:\n      type: basic\n      username: ${U}\n      password: ${P}\n',
      env: { U: 'AC1', P: '1234567890' },
      pick: (p) => p.upstreams['twilio']!.credentials.password,
      want: '1234567890',
    },
    {
      desc: 'text around an expression stays text',
      extra: '    hosts: ["api${N:-1}.example.com"]\n',
      env: {},
      pick: (p) => p.upstreams['twilio']!.hosts,
      want: ['api1.example.com'],
    },
    {
      desc: 'a value that reads as YAML mapping stays text',
      extra: '    credentials: { type: bearer, token: "${T}" }\n',
      env: { T: 'a: b' },
      pick: (p) => p.upstreams['twilio']!.credentials.token,
      want: 'a: b',
    },
    {
      desc: 'nested defaults resolve in the policy',
      extra: '    credentials: { type: basic, username: "${K:-${S:-}}", password: "${P:-${T:-}}" }\n',
      env: { S: 'ACsid', T: 'tok' },
      pick: (p) => [p.upstreams['twilio']!.credentials.username, p.upstreams['twilio']!.credentials.password],
      want: ['ACsid', 'tok'],
    },
  ];
  it.each(rows)('$desc', ({ extra, env, pick, want }) => {
    expect(pick(policy(extra, env))).toEqual(want);
  });

  it('${X:-d} and ${X-d} differ for an empty variable', () => {
    const yaml = `${BASE}    credentials:\n      type: bearer\n      token: \${X:-colon-default}\n  vapi:\n    baseUrl: https://api.vapi.ai\n    prefix: /vapi\n    credentials:\n      type: bearer\n      token: "[\${X-dash-default}]"\n`;
    const p = parsePolicy(yaml, { env: { X: '' } });
    expect(p.upstreams['twilio']!.credentials.token).toBe('colon-default');
    expect(p.upstreams['vapi']!.credentials.token).toBe('[]');
  });

  it('a secret read from VAR_FILE reaches the policy', () => {
    const f = secretFile('twilio-token', 'auth-token-from-file\n');
    const p = parsePolicy(`${BASE}    credentials:\n      type: basic\n      username: AC1\n      password: \${TWILIO_AUTH_TOKEN:-}\n`, {
      env: { TWILIO_AUTH_TOKEN_FILE: f },
    });
    expect(p.upstreams['twilio']!.credentials.password).toBe('auth-token-from-file');
  });
});

describe('parsePolicy: defaults and freezing', () => {
  const p = parsePolicy(BASE, { env: {} });
  const u = p.upstreams['twilio']!;

  const rows: { desc: string; got: unknown; want: unknown }[] = [
    { desc: 'proxy listener', got: [p.server.host, p.server.port], want: ['127.0.0.1', 8080] },
    { desc: 'admin listener', got: [p.server.adminHost, p.server.adminPort], want: ['127.0.0.1', 9090] },
    { desc: 'max body 10 MiB', got: p.server.maxBodyBytes, want: 10 * 1024 * 1024 },
    { desc: 'no trusted proxies', got: p.server.trustedProxies, want: [] },
    { desc: 'memory store', got: p.store.type, want: 'memory' },
    { desc: 'log level', got: p.logging.level, want: 'info' },
    { desc: 'stub mode off', got: p.stubMode, want: false },
    { desc: 'client id header', got: p.clientId.header, want: 'x-client-id' },
    { desc: 'timeout 15 s (durations are parsed to ms)', got: u.timeout, want: 15_000 },
    {
      desc: 'breaker: 3 consecutive, 30 s, 1 probe, no ratio, fixed open time, streak forgotten after 60 s',
      got: u.breaker,
      want: {
        enabled: true,
        threshold: 3,
        recoveryTimeout: 30_000,
        halfOpenProbes: 1,
        failureRatio: null,
        window: 20,
        minCalls: 10,
        slowCall: null,
        backoffMultiplier: 1,
        maxRecoveryTimeout: 300_000,
        failureWindow: 60_000,
        retryAfterMax: 1000,
        failOn: ['connect', 'timeout', 'reset', '5xx'],
      },
    },
    {
      desc: 'retry',
      got: u.retry,
      want: { attempts: 2, backoffBase: 50, backoffMax: 1000, budgetRatio: 0.2, minRetriesPerSecond: 5, on: [502, 503, 504], unprocessed: [] },
    },
    { desc: 'bulkhead', got: u.bulkhead, want: { maxConcurrent: 100, queue: 0, queueTimeout: 1000, fleet: false, leaseTimeout: 30_000 } },
    { desc: 'idempotency off unless asked', got: u.idempotency.enabled, want: false },
    { desc: 'hold on 429 by account', got: [u.holdOn429.enabled, u.holdOn429.key], want: [true, ['account']] },
    { desc: 'no credentials', got: u.credentials.type, want: 'none' },
    { desc: 'no limits', got: u.rateLimits, want: [] },
  ];
  it.each(rows)('$desc', ({ got, want }) => {
    expect(got).toEqual(want);
  });

  it('refuses a related-URI invalidation pattern with a safe method, naming the line', () => {
    const text = `${BASE}    routes:\n      - { name: lookups, match: "GET /v2/PhoneNumbers/*" }\n    cache:\n      routes:\n        - route: lookups\n          ttl: 60\n          invalidatedBy: ["GET /v2/PhoneNumbers/*"]\n`;
    expect(() => parsePolicy(text, { env: {} })).toThrow(/unsafe method/);
    expect(parsePolicy(text.replace('invalidatedBy: ["GET', 'invalidatedBy: ["POST'), { env: {} }).upstreams['twilio']!.cache.routes[0]!.invalidatedBy).toEqual(
      ['POST /v2/PhoneNumbers/*'],
    );
  });

  it('fills a rate limit’s defaults', () => {
    const q = parsePolicy(`${BASE}    rateLimits:\n      - { name: default, rate: 60 }\n`, { env: {} });
    expect(q.upstreams['twilio']!.rateLimits[0]).toEqual({
      name: 'default',
      rate: 60,
      per: 60_000,
      burst: null,
      key: ['client'],
      route: null,
      shadow: false,
      maxDelay: 0,
      store: 'default',
      headers: 'remaining',
    });
  });

  it('is deeply frozen', () => {
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.server)).toBe(true);
    expect(Object.isFrozen(p.upstreams)).toBe(true);
    expect(Object.isFrozen(u.breaker)).toBe(true);
    expect(Object.isFrozen(u.breaker.failOn)).toBe(true);
    expect(Object.isFrozen(u.retry.on)).toBe(true);
    expect(() => {
      (u.breaker as { threshold: number }).threshold = 99;
    }).toThrow(TypeError);
    expect(() => {
      (u.breaker.failOn as string[]).push('4xx');
    }).toThrow(TypeError);
    expect(u.breaker.threshold).toBe(3);
  });
});

describe('config/policy.yaml (the shipped default)', () => {
  const file = new URL('../../../config/policy.yaml', import.meta.url).pathname;

  it('loads with no environment at all', () => {
    const p = loadPolicyFile(file, { env: {} });
    expect(Object.keys(p.upstreams).sort()).toEqual(['twilio', 'vapi']);
    expect(p.upstreams['twilio']!.baseUrl).toBe('https://api.twilio.com');
    expect(p.upstreams['vapi']!.baseUrl).toBe('https://api.vapi.ai');
    expect(p.upstreams['twilio']!.breaker).toMatchObject({ enabled: true, threshold: 3, recoveryTimeout: 30_000 });
    expect(p.upstreams['twilio']!.rateLimits[0]).toMatchObject({ rate: 60, per: 60_000 });
    expect(p.server).toMatchObject({ host: '127.0.0.1', port: 8080, adminHost: '127.0.0.1', adminPort: 9090 });
    expect(p.stubMode).toBe(false);
  });

  it('honours every SPEC environment variable', () => {
    const p = loadPolicyFile(file, {
      env: {
        PROXY_HOST: '127.0.0.2',
        PROXY_PORT: '18080',
        ADMIN_HOST: '127.0.0.3',
        ADMIN_PORT: '19090',
        TWILIO_BASE_URL: 'http://twilio.test:1',
        VAPI_BASE_URL: 'http://vapi.test:2',
        CIRCUIT_BREAKER_ENABLED: 'false',
        CIRCUIT_BREAKER_THRESHOLD: '5',
        CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '7',
        RATE_LIMIT_PER_MINUTE: '120',
        RATE_LIMIT_STORE: 'redis',
        REDIS_URL: 'redis://127.0.0.1:6379',
        INTEGRATIONS_STUB_MODE: 'true',
        UPSTREAM_TIMEOUT: '2.5',
        TWILIO_ACCOUNT_SID: 'ACxyz',
        TWILIO_AUTH_TOKEN: 'tok',
        VAPI_API_KEY: 'vk',
        LOG_LEVEL: 'debug',
      },
    });
    const t = p.upstreams['twilio']!;
    const v = p.upstreams['vapi']!;
    expect([p.server.host, p.server.port, p.server.adminHost, p.server.adminPort]).toEqual(['127.0.0.2', 18080, '127.0.0.3', 19090]);
    expect([t.baseUrl, v.baseUrl]).toEqual(['http://twilio.test:1', 'http://vapi.test:2']);
    for (const u of [t, v]) {
      expect(u.breaker).toMatchObject({ enabled: false, threshold: 5, recoveryTimeout: 7000 });
      expect(u.rateLimits[0]).toMatchObject({ rate: 120 });
      expect(u.timeout).toBe(2500);
    }
    expect(p.store).toMatchObject({ type: 'redis', redisUrl: 'redis://127.0.0.1:6379' });
    expect(p.stubMode).toBe(true);
    expect(t.credentials).toMatchObject({ type: 'basic', username: 'ACxyz', password: 'tok' });
    expect(v.credentials).toMatchObject({ type: 'bearer', token: 'vk' });
    expect(p.logging.level).toBe('debug');
  });

  it('an API key pair wins over the account SID and auth token', () => {
    const p = loadPolicyFile(file, { env: { TWILIO_ACCOUNT_SID: 'AC1', TWILIO_AUTH_TOKEN: 'tok', TWILIO_API_KEY_SID: 'SK1', TWILIO_API_KEY_SECRET: 'sec' } });
    expect(p.upstreams['twilio']!.credentials).toMatchObject({ username: 'SK1', password: 'sec' });
  });
});
