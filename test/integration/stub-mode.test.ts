// Stub mode: INTEGRATIONS_STUB_MODE=true answers from the policy's stubs and no request ever
// reaches Twilio or Vapi; `stub: true` on one upstream stubs only that one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const ACCOUNT = 'AC0123456789abcdef0123456789abcdef';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const form = (fields: Record<string, string>) => ({
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});
const json = (value: unknown) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });

describe('INTEGRATIONS_STUB_MODE=true', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ env: { INTEGRATIONS_STUB_MODE: 'true' } }));
  });
  afterAll(() => harness?.close());

  it('creates a Twilio message: 201, SM sid, queued, fields echoed, account from the path', async () => {
    const r = await request(
      p.proxyPort,
      'POST',
      `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`,
      form({ To: '+15558675310', From: '+15017122661', Body: 'Hello from the stub' }),
    );
    expect(r.status).toBe(201);
    expect(r.headers['x-breakwater-stub']).toBe('true');
    expect(r.headers['content-type']).toMatch(/application\/json/);
    expect(r.json).toMatchObject({
      status: 'queued',
      to: '+15558675310',
      from: '+15017122661',
      body: 'Hello from the stub',
      account_sid: ACCOUNT,
      direction: 'outbound-api',
    });
    expect(r.json.sid).toMatch(/^SM[0-9a-f]{32}$/);
    // `{{sid}}` repeats the minted sid within one answer.
    expect(r.json.uri).toBe(`/2010-04-01/Accounts/${ACCOUNT}/Messages/${r.json.sid}.json`);
  });

  it('mints a fresh sid per message', async () => {
    const path = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
    const a = await request(p.proxyPort, 'POST', path, form({ To: '+15558675310', From: '+15017122661', Body: 'a' }));
    const b = await request(p.proxyPort, 'POST', path, form({ To: '+15558675310', From: '+15017122661', Body: 'b' }));
    expect(a.json.sid).not.toBe(b.json.sid);
  });

  it('creates a Twilio call with a CA sid', async () => {
    const r = await request(
      p.proxyPort,
      'POST',
      `/twilio/2010-04-01/Accounts/${ACCOUNT}/Calls.json`,
      form({ To: '+15558675310', From: '+15017122661', Url: 'http://demo.twilio.com/docs/voice.xml' }),
    );
    expect(r.status).toBe(201);
    expect(r.headers['x-breakwater-stub']).toBe('true');
    expect(r.json.sid).toMatch(/^CA[0-9a-f]{32}$/);
    expect(r.json).toMatchObject({ status: 'queued', to: '+15558675310', from: '+15017122661', account_sid: ACCOUNT });
  });

  it('creates, lists and fetches Vapi calls', async () => {
    const created = await request(
      p.proxyPort,
      'POST',
      '/vapi/call',
      json({ assistantId: 'asst-1', phoneNumberId: 'pn-1', customer: { number: '+15558675310' } }),
    );
    expect(created.status).toBe(201);
    expect(created.headers['x-breakwater-stub']).toBe('true');
    expect(created.json.id).toMatch(UUID);
    expect(created.json).toMatchObject({ status: 'queued', assistantId: 'asst-1', phoneNumberId: 'pn-1', customer: { number: '+15558675310' } });
    expect(Number.isNaN(Date.parse(created.json.createdAt))).toBe(false);

    const list = await request(p.proxyPort, 'GET', '/vapi/call');
    expect(list.status).toBe(200);
    expect(list.headers['x-breakwater-stub']).toBe('true');
    expect(Array.isArray(list.json)).toBe(true);

    const fetched = await request(p.proxyPort, 'GET', `/vapi/call/${created.json.id}`);
    expect(fetched.status).toBe(200);
    expect(fetched.headers['x-breakwater-stub']).toBe('true');
    expect(fetched.json).toMatchObject({ id: created.json.id, status: 'queued' });
  });

  it('answers an unmatched route with 501 stub_missing', async () => {
    const r = await request(p.proxyPort, 'DELETE', '/vapi/assistant/abc', { headers: { 'x-request-id': 'stub-miss-1' } });
    expect(r.status).toBe(501);
    expect(r.headers['x-breakwater-error']).toBe('stub_missing');
    expect(r.json).toEqual({
      code: 'stub_missing',
      message: expect.stringContaining('DELETE /assistant/abc'),
      status: 501,
      upstream: 'vapi',
      requestId: 'stub-miss-1',
    });
    const t = await request(p.proxyPort, 'GET', `/twilio/2010-04-01/Accounts/${ACCOUNT}/Recordings.json`);
    expect(t.status).toBe(501);
    expect(t.json.code).toBe('stub_missing');
  });

  it('never contacts either upstream', () => {
    expect(twilio.started).toBe(0);
    expect(vapi.started).toBe(0);
    expect(twilio.sockets.size).toBe(0);
    expect(vapi.sockets.size).toBe(0);
  });
});

describe('stub: true on one upstream only', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    const policy = DEFAULT_POLICY.replace('    prefix: /vapi\n', '    prefix: /vapi\n    stub: true\n');
    expect(policy).not.toBe(DEFAULT_POLICY);
    ({ twilio, vapi, p } = harness = await withProxy({ policy }));
  });
  afterAll(() => harness?.close());

  it('stubs Vapi and forwards Twilio', async () => {
    const v = await request(p.proxyPort, 'POST', '/vapi/call', json({ assistantId: 'asst-2' }));
    expect(v.status).toBe(201);
    expect(v.headers['x-breakwater-stub']).toBe('true');
    expect(v.json.id).toMatch(UUID);
    expect(vapi.started).toBe(0);

    const t = await request(p.proxyPort, 'GET', `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`);
    expect(t.status).toBe(200);
    expect(t.headers['x-breakwater-stub']).toBeUndefined();
    expect(t.json).toMatchObject({ upstream: 'twilio', method: 'GET' });
    expect(twilio.seen).toHaveLength(1);
  });
});
