// The official SDKs as a new user runs them (twilio 6, @vapi-ai/server-sdk 2, pinned dev
// dependencies): the placeholder secret `breakwater` reaches the fake upstream as the sidecar's
// credentials, or is refused 401 credentials_missing and never sent; and an open breaker stays a
// fast failure with the Vapi SDK at its default retries (it sleeps on Retry-After).
import { VapiClient } from '@vapi-ai/server-sdk';
import twilio from 'twilio';
import type RequestClient from 'twilio/lib/base/RequestClient.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';

const ACCOUNT_SID = 'AC11111111111111111111111111111111';
const AUTH_TOKEN = 'tok_f00dfeedc0ffee0123456789abcdef01';
const VAPI_KEY = 'vapi-3f1c2e4d-5b6a-4789-8abc-def012345678';
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

/** The README's Twilio httpClient: api.twilio.com through the /twilio prefix, other hosts by Host. */
function sidecarClient(port: number, opts: { autoRetry?: boolean } = {}): twilio.RequestClient {
  class BreakwaterHttpClient extends twilio.RequestClient {
    override request<TData>(opts: RequestClient.RequestOptions<TData>) {
      const url = new URL(opts.uri);
      const sidecar = `http://127.0.0.1:${port}`;
      if (url.hostname === 'api.twilio.com') opts.uri = `${sidecar}/twilio${url.pathname}${url.search}`;
      else {
        opts.uri = `${sidecar}${url.pathname}${url.search}`;
        opts.headers = { ...opts.headers, Host: url.host };
      }
      return super.request<TData>(opts);
    }
  }
  return new BreakwaterHttpClient(opts);
}

describe('the real SDKs with the placeholder secret', () => {
  let tw: FakeUpstream, va: FakeUpstream, held: TestProxy, empty: TestProxy;
  beforeAll(async () => {
    tw = await fakeUpstream('twilio');
    va = await fakeUpstream('vapi');
    const base = { TWILIO_BASE_URL: tw.url, VAPI_BASE_URL: va.url, TWILIO_HOST_TARGET: tw.url, VAPI_HOST_TARGET: va.url };
    held = await startProxy({ ...base, TWILIO_ACCOUNT_SID: ACCOUNT_SID, TWILIO_AUTH_TOKEN: AUTH_TOKEN, VAPI_API_KEY: VAPI_KEY });
    empty = await startProxy(base);
  });
  afterAll(async () => {
    await held?.close();
    await empty?.close();
    await tw?.close();
    await va?.close();
  });

  it('twilio(sid, "breakwater") reaches Twilio with the sidecar\'s Basic credentials', async () => {
    const client = twilio(ACCOUNT_SID, 'breakwater', { httpClient: sidecarClient(held.proxyPort) });
    tw.body = JSON.stringify({ sid: 'SM1', account_sid: ACCOUNT_SID, status: 'queued' });
    const msg = await client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' });
    expect(msg.sid).toBe('SM1');
    expect(tw.seen.at(-1)?.url).toBe(`/2010-04-01/Accounts/${ACCOUNT_SID}/Messages.json`);
    expect(tw.seen.at(-1)?.headers.authorization).toBe(basic(ACCOUNT_SID, AUTH_TOKEN));
  });

  it('new VapiClient({ token: "breakwater" }) reaches Vapi with the sidecar\'s Bearer key', async () => {
    const vapi = new VapiClient({ token: 'breakwater', baseUrl: `http://127.0.0.1:${held.proxyPort}/vapi` });
    va.body = JSON.stringify({ id: 'call-1', orgId: 'org-1', type: 'outboundPhoneCall', createdAt: '2025-01-01T00:00:00Z', updatedAt: '2025-01-01T00:00:00Z' });
    const call = await vapi.calls.get({ id: 'call-1' });
    expect(call.id).toBe('call-1');
    expect(va.seen.at(-1)?.headers.authorization).toBe(`Bearer ${VAPI_KEY}`);
  });

  it('with no sidecar credentials, both SDKs get 401 credentials_missing and nothing is sent', async () => {
    const before = tw.seen.length + va.seen.length;
    const client = twilio(ACCOUNT_SID, 'breakwater', { httpClient: sidecarClient(empty.proxyPort) });
    const tErr = await client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(tErr).toMatchObject({ status: 401 });
    const vapi = new VapiClient({ token: 'breakwater', baseUrl: `http://127.0.0.1:${empty.proxyPort}/vapi` });
    const vErr = await vapi.calls.get({ id: 'call-1' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(vErr).toMatchObject({ statusCode: 401, body: { code: 'credentials_missing' } });
    expect(tw.seen.length + va.seen.length).toBe(before);
  });

  it("an open breaker, and a held account, stay fast failures with the Twilio SDK's autoRetry on", async () => {
    const forced = await request(held.adminPort, 'POST', '/breakers/twilio/open', { headers: { 'x-breakwater-admin': '1' } });
    expect(forced.status).toBe(200);
    try {
      const client = twilio(ACCOUNT_SID, 'breakwater', { httpClient: sidecarClient(held.proxyPort, { autoRetry: true }) });
      const began = performance.now();
      const err = await client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ status: 503, code: 'circuit_open' });
      // autoRetry only retries 429s: a 503 comes back at once.
      expect(performance.now() - began).toBeLessThan(1000);
    } finally {
      await request(held.adminPort, 'POST', '/breakers/twilio/close', { headers: { 'x-breakwater-admin': '1' } });
    }
    // A Twilio 429 with a long Retry-After holds the account; autoRetry's back-off (3 retries, at
    // most 3 s apart) then meets Breakwater's local 429s, never Twilio, and gives up within seconds.
    tw.mode = '429';
    tw.retryAfter = '30';
    try {
      const before = tw.seen.length;
      // Its own account, so the 30 s hold it starts holds nothing the other tests use.
      const client = twilio('AC22222222222222222222222222222222', 'breakwater', { httpClient: sidecarClient(held.proxyPort, { autoRetry: true }) });
      const began = performance.now();
      const err = await client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'hi' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const ms = performance.now() - began;
      expect(err).toMatchObject({ status: 429 });
      expect(ms).toBeLessThan(10_000);
      expect(tw.seen.length - before).toBe(1);
    } finally {
      tw.mode = 'ok';
      tw.retryAfter = undefined;
    }
  }, 20_000);

  it("a failing Verify host, reached through the SDK's own host name, opens only its own breaker: SMS keeps flowing", async () => {
    tw.handler = (req, res) => {
      if (String(req.headers.host).startsWith('verify.')) {
        res.writeHead(503, { 'content-type': 'application/json' });
        return res.end('{"code":20503,"message":"Service unavailable"}');
      }
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ sid: 'SM2', account_sid: ACCOUNT_SID, status: 'queued' }));
    };
    try {
      const client = twilio(ACCOUNT_SID, 'breakwater', { httpClient: sidecarClient(held.proxyPort) });
      const verify = () =>
        client.verify.v2
          .services('VA00000000000000000000000000000000')
          .verifications.create({ to: '+15558675310', channel: 'sms' })
          .then(
            () => 'ok',
            (e: { status?: number; code?: unknown }) => `${e.status}:${String(e.code)}`,
          );
      const seen: string[] = [];
      for (let i = 0; i < 6; i++) seen.push(await verify());
      // The verify destination's breaker opened; its failures were Twilio's own 503s until then.
      expect(seen.at(-1)).toBe('503:circuit_open');
      expect(seen.filter((x) => x === '503:20503').length).toBeGreaterThanOrEqual(1);
      // The base URL's breaker (SMS) is untouched.
      const msg = await client.messages.create({ to: '+15558675310', from: '+15017122661', body: 'still flowing' });
      expect(msg.sid).toBe('SM2');
      const breakers = (await request(held.adminPort, 'GET', '/breakers')).json as unknown;
      expect(JSON.stringify(breakers)).toMatch(/verify\.twilio\.com/);
    } finally {
      tw.handler = undefined;
    }
  }, 20_000);

  it('an open breaker stays a fast failure with the Vapi SDK at its default retries', async () => {
    const forced = await request(held.adminPort, 'POST', '/breakers/vapi/open', { headers: { 'x-breakwater-admin': '1' } });
    expect(forced.status).toBe(200);
    try {
      const vapi = new VapiClient({ token: 'breakwater', baseUrl: `http://127.0.0.1:${held.proxyPort}/vapi` });
      const began = performance.now();
      const err = await vapi.calls.get({ id: 'call-1' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const ms = performance.now() - began;
      expect(err).toMatchObject({ statusCode: 503, body: { code: 'circuit_open' } });
      // Two SDK retries, each after Retry-After: 1 → about 2 s. Retry-After: 30 made this 60 s.
      expect(ms).toBeLessThan(3500);
      const quick = new VapiClient({ token: 'breakwater', baseUrl: `http://127.0.0.1:${held.proxyPort}/vapi`, maxRetries: 0 });
      const b2 = performance.now();
      await quick.calls.get({ id: 'call-1' }).then(
        () => undefined,
        () => undefined,
      );
      expect(performance.now() - b2).toBeLessThan(1000);
    } finally {
      await request(held.adminPort, 'POST', '/breakers/vapi/close', { headers: { 'x-breakwater-admin': '1' } });
    }
  }, 20_000);
});
