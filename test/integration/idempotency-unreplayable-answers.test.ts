// An upstream that answered has created something, even when its answer cannot be replayed: a
// body too large to keep, or one cut off mid-stream. The key must then never reach the upstream
// again; a repeat gets a stored proxy answer saying so (found by review: such keys used to be
// released, and a retried POST /call went out twice).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const post = (p: TestProxy, key: string) =>
  request(p.proxyPort, 'POST', '/vapi/call', {
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ assistantId: 'a1', customer: { number: '+15550001111' } }),
  }).catch((e: Error) => ({ status: 0, headers: {} as Record<string, string>, text: e.message, json: undefined }));

describe('idempotency when the answer cannot be replayed', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // Keep at most 1 KiB of an answer for replay, so a 4 KiB answer overflows.
    const policy = DEFAULT_POLICY.replace(
      '      enabled: true                      # makes the Vapi SDK',
      '      maxBodyBytes: 1024\n      enabled: true                      # makes the Vapi SDK',
    );
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ vapi, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  const creates = () => vapi.seen.filter((s) => s.method === 'POST').length;

  it('an answer cut off mid-body: the repeat is a stored 502, never a second create', async () => {
    vapi.mode = 'reset-mid';
    const before = creates();
    const first = await post(p, 'cut-1');
    expect(first.status === 200 || first.status === 0).toBe(true); // the head went out, then the break
    vapi.mode = 'ok';
    const again = await post(p, 'cut-1');
    expect(creates() - before).toBe(1);
    expect(again.status).toBe(502);
    expect(again.headers['x-breakwater-error']).toBe('upstream_unavailable');
    expect(again.headers['idempotent-replayed']).toBe('true');
  });

  it('an answer too large to keep: the repeat is a stored 502, never a second create', async () => {
    vapi.mode = 'ok';
    vapi.body = JSON.stringify({ id: 'big', pad: 'x'.repeat(4096) });
    const before = creates();
    const first = await post(p, 'big-1');
    expect(first.status).toBe(200);
    expect(first.text.length).toBeGreaterThan(4096); // the app got the whole answer the first time
    const again = await post(p, 'big-1');
    expect(creates() - before).toBe(1);
    expect(again.status).toBe(502);
    expect(again.json?.message).toMatch(/answered 200/);
    vapi.body = undefined;
  });
});
