// A stored answer is replayed for `idempotency.ttl` seconds; after that the key creates again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, sleep, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('idempotency TTL', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = policyWith((pol) => {
      pol.upstreams.vapi.idempotency = { enabled: true, ttl: 1 };
    });
    ({ vapi, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const create = () =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': 'ttl-key' },
      body: '{"customer":{"number":"+15550001000"}}',
    });

  it('replays within the TTL and creates again after it', async () => {
    expect((await create()).headers['idempotent-replayed']).toBeUndefined();
    expect((await create()).headers['idempotent-replayed']).toBe('true');
    expect(vapi.seen.length).toBe(1);
    await sleep(1200);
    const after = await create();
    expect(after.status).toBe(200);
    expect(after.headers['idempotent-replayed']).toBeUndefined();
    expect(vapi.seen.length).toBe(2);
    // ...and the new answer is stored in turn.
    expect((await create()).headers['idempotent-replayed']).toBe('true');
    expect(vapi.seen.length).toBe(2);
  });
});
