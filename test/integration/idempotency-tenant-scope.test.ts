// An Idempotency-Key is scoped to the credential that sent it (Stripe scopes keys to the
// account): two tenants of one app, same client id, same key and body, each get their own create,
// and neither sees the other's answer. No Authorization is a scope of its own, and the query
// string is part of the scope (`?dryRun=true` is not the create without it).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('idempotency scope', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' } }));
    vapi.handler = (req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: randomUUID(), owner: req.headers.authorization ?? 'none' }));
    };
  });
  afterAll(() => harness?.close());

  const create = (auth: string | undefined, path = '/vapi/call') =>
    request(p.proxyPort, 'POST', path, {
      headers: { 'content-type': 'application/json', 'idempotency-key': 'shared-key', 'x-client-id': 'one-app', ...(auth ? { authorization: auth } : {}) },
      body: JSON.stringify({ assistantId: 'a1', customer: { number: '+15550006001' } }),
    });
  const creates = () => vapi.seen.filter((s) => s.method === 'POST').length;

  it('gives each credential its own create and never another tenant’s answer', async () => {
    const a = await create('Bearer tenant-a-key');
    expect(a.status).toBe(201);
    expect(JSON.parse(a.text).owner).toBe('Bearer tenant-a-key');
    const aAgain = await create('Bearer tenant-a-key');
    expect(aAgain.headers['idempotent-replayed']).toBe('true');
    expect(aAgain.text).toBe(a.text);
    expect(creates()).toBe(1);

    const b = await create('Bearer tenant-b-key');
    expect(b.status).toBe(201);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(JSON.parse(b.text).owner).toBe('Bearer tenant-b-key');
    expect(creates()).toBe(2);

    const none = await create(undefined);
    expect(none.headers['idempotent-replayed']).toBeUndefined();
    expect(JSON.parse(none.text).owner).toBe('none');
    expect(creates()).toBe(3);
    const noneAgain = await create(undefined);
    expect(noneAgain.headers['idempotent-replayed']).toBe('true');
    expect(noneAgain.text).toBe(none.text);
    expect(creates()).toBe(3);
  });

  it('keeps a query string apart from the same path without it', async () => {
    const before = creates();
    const dry = await create('Bearer tenant-q-key', '/vapi/call?dryRun=true');
    expect(dry.status).toBe(201);
    const real = await create('Bearer tenant-q-key');
    expect(real.headers['idempotent-replayed']).toBeUndefined();
    expect(real.text).not.toBe(dry.text);
    expect(creates()).toBe(before + 2);
    expect((await create('Bearer tenant-q-key', '/vapi/call?dryRun=true')).text).toBe(dry.text);
    expect(creates()).toBe(before + 2);
  });
});
