// A keyed create too large to buffer (a Vapi call with an inline assistant and a long system
// prompt) keeps the key's guarantee: the body is hashed as it streams upstream, duplicates read
// and hash their own body, and the upstream sees one create. Only a body over the request limit
// is refused (413), before anything is sent.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const LIMIT = 2 * 1024 * 1024;
const POLICY = policyWith((p) => {
  p.server ??= {};
  p.server.maxBodyBytes = LIMIT;
});

describe('idempotency on streamed bodies', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' }, policy: POLICY }));
    vapi.handler = (_req, res, body) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: randomUUID(), bytes: body.length }));
      }, 300);
    };
  });
  afterAll(() => harness?.close());

  const callBody = (number: string, bytes: number) => {
    const base = JSON.stringify({ customer: { number }, assistant: { model: { messages: [{ role: 'system', content: '' }] } } });
    return JSON.stringify({ customer: { number }, assistant: { model: { messages: [{ role: 'system', content: 'x'.repeat(bytes - base.length) }] } } });
  };
  const create = (key: string, body: string) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-client-id': 'big-app' },
      body,
      timeoutMs: 10_000,
    });
  const createsFor = (number: string) => vapi.seen.filter((s) => s.method === 'POST' && s.body.subarray(0, 64).toString().includes(number)).length;

  for (const [label, bytes] of [
    ['1 KiB', 1024],
    ['64 KiB', 64 * 1024],
    ['70 KiB', 70 * 1024],
    ['1 MiB', 1024 * 1024],
    ['body at the limit', LIMIT],
  ] as const) {
    it(`sends a ${label} keyed body upstream once: two at once, then once more`, async () => {
      const number = `+1555000${bytes}`;
      const body = callBody(number, bytes);
      expect(Buffer.byteLength(body)).toBe(bytes);
      const key = `big-${bytes}`;
      const both = await Promise.all([create(key, body), create(key, body)]);
      const later = await create(key, body);
      expect(createsFor(number)).toBe(1);
      const seen = vapi.seen.find((s) => s.body.subarray(0, 64).toString().includes(number))!;
      expect(seen.body.length).toBe(bytes);
      expect(seen.headers['idempotency-key']).toBeUndefined();
      const ok = [...both, later].filter((r) => r.status === 201);
      // The concurrent duplicate may wait for the original or be told it is in flight.
      for (const r of both) if (r.status !== 201) expect(r.headers['x-breakwater-error']).toBe('idempotency_in_flight');
      expect(later.status).toBe(201);
      expect(later.headers['idempotent-replayed']).toBe('true');
      for (const r of ok) expect(r.text).toBe(ok[0]!.text);
      expect(JSON.parse(later.text).bytes).toBe(bytes);
    });
  }

  it('answers 422 to the same key with another large body, and sends nothing', async () => {
    const number = '+15550007001';
    const first = await create('big-mismatch', callBody(number, 80 * 1024));
    expect(first.status).toBe(201);
    const other = await create('big-mismatch', callBody(number, 81 * 1024));
    expect(other.status).toBe(422);
    expect(other.headers['x-breakwater-error']).toBe('idempotency_mismatch');
    expect(createsFor(number)).toBe(1);
  });

  it('refuses a keyed body over the request limit with 413 before sending anything', async () => {
    const number = '+15550007002';
    const r = await create('big-over', callBody(number, LIMIT + 1));
    expect(r.status).toBe(413);
    expect(r.headers['x-breakwater-error']).toBe('payload_too_large');
    expect(createsFor(number)).toBe(0);
  });
});
