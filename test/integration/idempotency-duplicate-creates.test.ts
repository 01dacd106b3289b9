// A POST carrying Idempotency-Key is forwarded once: concurrent duplicates wait for the original
// and get its answer, later ones get the stored answer marked Idempotent-Replayed, the same key
// with another body is 422, and the key itself never reaches the upstream.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

describe('idempotency keys on creates', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' } }));
    // Each upstream create answers with a new call id, slowly enough that duplicates overlap it.
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json', 'x-upstream-call': 'yes' });
        res.end(JSON.stringify({ id: randomUUID(), status: 'queued' }));
      }, 300);
    };
  });
  afterAll(() => harness?.close());

  const createCall = (key: string, body: object) =>
    request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-client-id': 'app-1' },
      body: JSON.stringify(body),
    });
  const createsFor = (number: string) => vapi.seen.filter((s) => s.method === 'POST' && s.body.toString().includes(number)).length;

  it('sends concurrent duplicates upstream once and gives all of them the same answer', async () => {
    const body = { assistantId: 'asst-1', customer: { number: '+15550000001' } };
    const answers = await Promise.all(Array.from({ length: 5 }, () => createCall('dup-concurrent', body)));
    expect(createsFor('+15550000001')).toBe(1);
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201, 201]);
    const first = answers[0]!.text;
    expect(JSON.parse(first).id).toEqual(expect.any(String));
    for (const a of answers) expect(a.text).toBe(first);
    for (const a of answers) expect(a.headers['x-upstream-call']).toBe('yes');
    // The original is the upstream's own answer; the four that waited are replays of it.
    expect(answers.filter((a) => a.headers['idempotent-replayed'] === 'true').length).toBe(4);
  });

  it('replays the stored answer after completion without calling the upstream', async () => {
    const body = { assistantId: 'asst-1', customer: { number: '+15550000002' } };
    const original = await createCall('dup-later', body);
    expect(original.status).toBe(201);
    expect(original.headers['idempotent-replayed']).toBeUndefined();
    const replay = await createCall('dup-later', body);
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.text).toBe(original.text);
    expect(replay.headers['content-type']).toBe('application/json');
    expect(createsFor('+15550000002')).toBe(1);
  });

  it('answers the same key with a different body 422 idempotency_mismatch', async () => {
    const before = vapi.seen.length;
    await createCall('dup-mismatch', { customer: { number: '+15550000003' } });
    const r = await createCall('dup-mismatch', { customer: { number: '+15550000004' } });
    expect(r.status).toBe(422);
    expect(r.headers['x-breakwater-error']).toBe('idempotency_mismatch');
    expect(r.json).toEqual({ code: 'idempotency_mismatch', message: expect.any(String), status: 422, upstream: 'vapi', requestId: r.headers['x-request-id'] });
    expect(vapi.seen.length).toBe(before + 1);
    expect(createsFor('+15550000004')).toBe(0);
  });

  it('does not send the Idempotency-Key header upstream', () => {
    expect(vapi.seen.length).toBeGreaterThan(0);
    for (const s of vapi.seen) expect(s.headers['idempotency-key']).toBeUndefined();
  });

  it('scopes keys per client: another client with the same key is a new create', async () => {
    const body = { customer: { number: '+15550000005' } };
    await createCall('dup-scope', body);
    const other = await request(p.proxyPort, 'POST', '/vapi/call', {
      headers: { 'content-type': 'application/json', 'idempotency-key': 'dup-scope', 'x-client-id': 'app-2' },
      body: JSON.stringify(body),
    });
    expect(other.status).toBe(201);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(createsFor('+15550000005')).toBe(2);
  });

  it('counts the outcomes', async () => {
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_idempotency_total', { upstream: 'vapi', outcome: 'replayed' })).toBeGreaterThanOrEqual(5);
    expect(metricValue(text, 'breakwater_idempotency_total', { upstream: 'vapi', outcome: 'mismatch' })).toBe(1);
  });
});
