// REDIS_TYPE / REDIS_URL in Envoy's forms reach the policy, a URL of the wrong form for its type
// is a policy error naming store.redisUrl, and the fallback share divides a limit by replicas.
import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import { parseRedisUrl } from '../../src/policy/redis-url.js';
import { shareOf } from '../../src/store/redis.js';
import { DEFAULT_POLICY } from '../support/proxy.js';

describe('Redis connection settings', () => {
  it('reads the SPEC variables into store', () => {
    const p = parsePolicy(DEFAULT_POLICY, {
      env: {
        RATE_LIMIT_STORE: 'redis',
        REDIS_TYPE: 'sentinel',
        REDIS_URL: 'mymaster,10.0.0.1:26379,10.0.0.2',
        REDIS_USERNAME: 'bw',
        REDIS_PASSWORD: 'pw',
        REDIS_TLS: 'true',
        REDIS_CA_FILE: '/ca.pem',
      },
    });
    expect(p.store).toMatchObject({
      type: 'redis',
      redisType: 'sentinel',
      redisUsername: 'bw',
      redisPassword: 'pw',
      redisTls: true,
      redisCaFile: '/ca.pem',
      replicas: 1,
    });
  });

  it('parses the sentinel and cluster forms', () => {
    expect(parseRedisUrl('sentinel', 'mymaster,10.0.0.1:26379,[::1]:26380,h')).toEqual({
      master: 'mymaster',
      nodes: [
        { host: '10.0.0.1', port: 26379 },
        { host: '::1', port: 26380 },
        { host: 'h', port: 26379 },
      ],
    });
    expect(parseRedisUrl('cluster', 'a:7000, b:7001')).toEqual({
      nodes: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
      ],
    });
  });

  it.each([
    ['sentinel', 'redis://127.0.0.1:26379'],
    ['sentinel', '10.0.0.1:26379,10.0.0.2:26379'],
    ['cluster', 'redis://127.0.0.1:7000'],
    ['cluster', 'a:99999'],
  ])('refuses REDIS_TYPE=%s with REDIS_URL=%s, naming store.redisUrl', (type, url) => {
    let err: unknown;
    try {
      parsePolicy(DEFAULT_POLICY, { env: { RATE_LIMIT_STORE: 'redis', REDIS_TYPE: type, REDIS_URL: url } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect(String((err as Error).message)).toContain('redisUrl');
  });

  it('divides rate and burst by the replica count, keeping at least one token', () => {
    expect(shareOf({ ratePerMs: 1, burst: 10, maxDelayMs: 0 }, 4)).toEqual({ ratePerMs: 0.25, burst: 2, maxDelayMs: 0 });
    expect(shareOf({ ratePerMs: 1, burst: 3, maxDelayMs: 0 }, 8).burst).toBe(1);
    expect(shareOf({ ratePerMs: 1, burst: 10, maxDelayMs: 5 }, 1)).toEqual({ ratePerMs: 1, burst: 10, maxDelayMs: 5 });
  });
});
