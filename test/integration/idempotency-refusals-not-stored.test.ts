// A refusal the proxy makes before anything is sent (here: rate_limited) proves the create never
// happened, so it is not stored under the key: the retry after the limit refills goes through.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, sleep, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('proxy refusals are not stored under an idempotency key', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.vapi.rateLimits = [{ name: 'default', rate: 1, per: 1, key: ['client'] }];
    });
    ({ vapi, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const create = (key?: string) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: '{"customer":{"number":"+15550002000"}}',
    });

  it('lets the retry through once the limit refills', async () => {
    expect((await create()).status).toBe(200); // spends the only token
    const refused = await create('refused-key');
    expect(refused.status).toBe(429);
    expect(refused.headers['x-breakwater-error']).toBe('rate_limited');
    expect(vapi.seen.length).toBe(1);

    await sleep(Number(refused.headers['retry-after']) * 1000 + 100);
    const retry = await create('refused-key');
    expect(retry.status).toBe(200);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(retry.headers['x-breakwater-error']).toBeUndefined();
    expect(vapi.seen.length).toBe(2);

    // That answer is stored: a further duplicate (once it gets past the limit, which runs
    // first) is a replay.
    await sleep(1100);
    const dup = await create('refused-key');
    expect(dup.status).toBe(200);
    expect(dup.headers['idempotent-replayed']).toBe('true');
    expect(vapi.seen.length).toBe(2);
  });
});
