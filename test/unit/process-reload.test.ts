import { describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../support/proxy.js';
import { parsePolicy } from '../../src/policy/load.js';
import { restartOnly } from '../../src/process/reload.js';

describe('restartOnly', () => {
  const before = parsePolicy(DEFAULT_POLICY);

  it('is empty for an unchanged policy', () => {
    expect(restartOnly(before, parsePolicy(DEFAULT_POLICY))).toEqual([]);
  });

  it('names a listener setting and every store setting, and not a hot one', () => {
    expect(restartOnly(before, parsePolicy(DEFAULT_POLICY, { env: { PROXY_PORT: '18081' } }))).toContain('server.port');
    expect(restartOnly(before, parsePolicy(DEFAULT_POLICY, { env: { RATE_LIMIT_STORE: 'redis', REDIS_URL: 'redis://127.0.0.1:6390' } }))).toEqual(
      expect.arrayContaining(['store.type']),
    );
    expect(restartOnly(before, parsePolicy(DEFAULT_POLICY, { env: { LOG_LEVEL: 'debug' } }))).toEqual([]);
  });
});
