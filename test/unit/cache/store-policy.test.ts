import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../../src/policy/load.js';
import { policyWith } from '../../support/policy.js';

const withStore = (store: string) =>
  policyWith((p) => {
    p.upstreams.vapi.routes.unshift({ name: 'assistant.fetch', match: 'GET /assistant/*' });
    p.upstreams.vapi.cache = { store, routes: [{ route: 'assistant.fetch', ttl: 60 }] };
  });

describe('cache.store in the policy', () => {
  it('defaults to the global store', () => {
    expect(parsePolicy(withStore('default'), { env: {} }).upstreams.vapi!.cache.store).toBe('default');
  });

  it('refuses redis without a Redis store, naming the path', () => {
    let err: unknown;
    try {
      parsePolicy(withStore('redis'), { env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect(String((err as Error).message)).toMatch(/upstreams\.vapi\.cache\.store: a Redis cache store needs RATE_LIMIT_STORE=redis/);
  });

  it('takes redis with RATE_LIMIT_STORE=redis', () => {
    const p = parsePolicy(withStore('redis'), { env: { RATE_LIMIT_STORE: 'redis', REDIS_URL: 'redis://127.0.0.1:6399' } });
    expect(p.upstreams.vapi!.cache.store).toBe('redis');
  });
});
