// rediss:// with a CA file and an ACL user whose password comes from REDIS_PASSWORD_FILE: two
// sidecars share one budget over TLS, and the server admits nobody else (its default user is off).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { startReplicas, startTlsRedis, type TlsRedis } from '../support/redis.js';
import { waitFor } from '../support/wait.mjs';

const POLICY = policyWith((p) => {
  p.store.timeout = 0.5;
});

describe('rate limits shared through Redis over TLS with an ACL user', () => {
  let redis: TlsRedis, up: FakeUpstream, a: TestProxy, b: TestProxy;
  let clients: Set<Redis>;
  beforeAll(async () => {
    redis = await startTlsRedis('breakwater', 's3cret-pw');
    const pwFile = path.join(redis.dir, 'redis-password');
    writeFileSync(pwFile, 's3cret-pw\n');
    up = await fakeUpstream('vapi');
    ({ a, b, clients } = await startReplicas(
      {
        VAPI_BASE_URL: up.url,
        RATE_LIMIT_PER_MINUTE: '5',
        RATE_LIMIT_STORE: 'redis',
        REDIS_URL: redis.url,
        REDIS_USERNAME: 'breakwater',
        REDIS_PASSWORD_FILE: pwFile,
        REDIS_CA_FILE: redis.caFile,
      },
      POLICY,
    ));
    expect(await waitFor(() => [...clients].every((c) => c.status === 'ready'), { timeoutMs: 5000 })).toBe(true);
  }, 30_000);
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await redis?.server.kill();
  });

  const get = (p: TestProxy, client: string) => request(p.proxyPort, 'GET', '/vapi/call', { headers: { 'x-client-id': client } });

  it('connects over TLS as the ACL user and allows exactly the shared budget', async () => {
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await get(i % 2 === 0 ? a : b, 'tls-client'));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    for (const p of [a, b]) {
      const text = await metricsText(p.adminPort);
      expect(metricValue(text, 'breakwater_store_fallbacks_total', { store: 'redis' }) ?? 0).toBe(0);
    }
  });
});
