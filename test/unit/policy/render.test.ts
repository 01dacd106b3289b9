// `validate` output: the effective policy as tables, with every secret shown only as set/unset
// and credentials inside URLs masked.
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/policy/load.js';
import { maskUrl, renderPolicy } from '../../../src/policy/render.js';

const SECRETS = {
  TWILIO_ACCOUNT_SID: 'AC0123456789abcdef0123456789abcdef',
  TWILIO_AUTH_TOKEN: 'tw-auth-token-1f2e3d4c5b6a',
  VAPI_API_KEY: 'vapi-key-9a8b7c6d5e4f',
  REDIS_PASSWORD: 'r3dis-p@ss/word',
};

const POLICY = `
store:
  type: redis
  redisUrl: \${REDIS_URL}
upstreams:
  twilio:
    baseUrl: https://api.twilio.com
    prefix: /twilio
    credentials: { type: basic, username: "\${TWILIO_ACCOUNT_SID}", password: "\${TWILIO_AUTH_TOKEN}" }
    rateLimits:
      - { name: default, rate: 60 }
      - { name: per-recipient, rate: 5, per: 3600, key: ["body:To"], shadow: true }
  vapi:
    baseUrl: https://svc-user:vapi-basic-secret@api.vapi.ai
    prefix: /vapi
    credentials: { type: bearer, token: "\${VAPI_API_KEY}" }
`;

describe('renderPolicy', () => {
  const env = { ...SECRETS, REDIS_URL: `redis://default:${encodeURIComponent(SECRETS.REDIS_PASSWORD)}@redis.internal:6379/0` };
  const out = renderPolicy(parsePolicy(POLICY, { env }), 'policy.yaml');

  const secrets = [
    { desc: 'the Twilio auth token', secret: SECRETS.TWILIO_AUTH_TOKEN },
    { desc: 'the Vapi API key', secret: SECRETS.VAPI_API_KEY },
    { desc: 'the Redis password (URL-encoded)', secret: encodeURIComponent(SECRETS.REDIS_PASSWORD) },
    { desc: 'the Redis password (raw)', secret: SECRETS.REDIS_PASSWORD },
    { desc: 'a password inside an upstream URL', secret: 'vapi-basic-secret' },
    { desc: 'the account SID used as Basic user', secret: SECRETS.TWILIO_ACCOUNT_SID },
  ];
  it.each(secrets)('never prints $desc', ({ secret }) => {
    expect(out).not.toContain(secret);
  });

  it('never prints a Redis password written raw, with @ and : in it', () => {
    const raw = renderPolicy(parsePolicy(POLICY, { env: { ...env, REDIS_URL: 'redis://default:pa@ss:w0rd@redis.internal:6379' } }), 'policy.yaml');
    expect(raw).not.toContain('w0rd');
    expect(raw).not.toContain('pa@ss');
    expect(raw).toContain('redis://default:***@redis.internal:6379');
  });

  it('says which secrets are set', () => {
    expect(out).toContain('basic user=set password=set');
    expect(out).toContain('bearer token=set');
  });

  it('shows the Redis host with its password masked', () => {
    expect(out).toContain('redis redis://default:***@redis.internal:6379/0');
  });

  it('shows the effective settings', () => {
    expect(out).toMatch(/^policy policy\.yaml: OK\n/);
    expect(out).toContain('127.0.0.1:8080');
    expect(out).toContain('127.0.0.1:9090');
    expect(out).toContain('on 3 fails, 30s open');
    expect(out).toMatch(/twilio\s+default\s+60\/60s\s+60\s+client\s+\(all\)\s+reject\s+enforce/);
    expect(out).toMatch(/twilio\s+per-recipient\s+5\/3600s\s+5\s+body:To\s+\(all\)\s+reject\s+shadow/);
  });

  it('shows unset secrets as unset', () => {
    const p = parsePolicy(POLICY.replace(/store:[\s\S]*?upstreams:/, 'upstreams:'), { env: {} });
    const o = renderPolicy(p, 'policy.yaml');
    expect(o).toContain('basic user=unset password=unset');
    expect(o).toContain('bearer token=unset');
  });
});

describe('maskUrl', () => {
  const rows = [
    { desc: 'user and password', url: 'redis://default:secret@h:6379', want: 'redis://default:***@h:6379' },
    { desc: 'password only', url: 'redis://:secret@h:6379/0', want: 'redis://:***@h:6379/0' },
    { desc: 'a raw @ in the password (ioredis accepts it)', url: 'redis://u:p@ss@h:6379', want: 'redis://u:***@h:6379' },
    { desc: 'a raw : in the password', url: 'redis://u:a:b@h', want: 'redis://u:***@h' },
    { desc: 'no credentials', url: 'https://api.twilio.com', want: 'https://api.twilio.com' },
    { desc: 'an @ in the path is not userinfo', url: 'https://h/users/@me', want: 'https://h/users/@me' },
    { desc: 'an @ in the query is not userinfo', url: 'https://h/x?u=a:b@c', want: 'https://h/x?u=a:b@c' },
    { desc: 'user-info without a colon may be a token: masked whole', url: 'redis://user@h', want: 'redis://***@h' },
    { desc: 'a token as the whole user-info', url: 'https://ghp_s3cr3tT0ken@api.example.test/x', want: 'https://***@api.example.test/x' },
    { desc: 'TLS scheme', url: 'rediss://:tok@h:6380', want: 'rediss://:***@h:6380' },
    { desc: 'empty', url: '', want: '' },
  ];
  it.each(rows)('$desc', ({ url, want }) => {
    expect(maskUrl(url)).toBe(want);
  });
});
