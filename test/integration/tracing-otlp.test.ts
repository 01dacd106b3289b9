// OpenTelemetry traces against a real OTLP/HTTP receiver started here on loopback (no collector
// package exists on this machine; this one decodes the JSON the real exporter sends, and checks
// the protobuf one carries the trace). Off unless OTEL_* configures an exporter; on, a SERVER
// span per request under the app's traceparent, a CLIENT span per upstream attempt that is the
// parent sent upstream, parent-based sampling, and an exporter that is down never slows a request.
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { request, startProxy, type TestProxy } from '../support/proxy.js';
import { scrubUrl, tracingConfigured } from '../../src/tracing.js';
import { freePort, waitFor } from '../support/wait.mjs';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  traceState?: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  events?: { name: string; attributes?: { key: string; value: Record<string, unknown> }[] }[];
}
const SERVER = 2;
const CLIENT = 3;
const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : (v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue));
};

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const P = '00f067aa0ba902b7';
const SEND = '/twilio/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };
const OTEL_KEYS = [
  'OTEL_TRACES_EXPORTER',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
  'OTEL_BSP_SCHEDULE_DELAY',
  'OTEL_TRACES_SAMPLER',
  'OTEL_TRACES_SAMPLER_ARG',
  'OTEL_SERVICE_NAME',
];

describe('tracing configuration', () => {
  it('is off unless an exporter is configured', () => {
    expect(tracingConfigured({})).toBe(false);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SDK_DISABLED: 'true' })).toBe(false);
  });

  it('scrubs account SIDs, phone numbers and the query from url.full', () => {
    expect(scrubUrl('https://api.twilio.com', '/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json?To=%2B15555550100')).toBe(
      'https://api.twilio.com/2010-04-01/Accounts/AC{sid}/Messages.json?{query}',
    );
    expect(scrubUrl('https://api.vapi.ai', '/phone-number/+15555550100')).toBe('https://api.vapi.ai/phone-number/{number}');
  });
});

describe('traces exported over OTLP/HTTP', () => {
  const bodies: { type: string; body: Buffer }[] = [];
  let receiver: http.Server;
  let receiverUrl = '';
  let twilio: FakeUpstream, vapi: FakeUpstream;
  let p: TestProxy | undefined;
  const spans = (): OtlpSpan[] =>
    bodies
      .filter((b) => b.type.includes('json'))
      .flatMap((b) =>
        (JSON.parse(b.body.toString()) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] }).resourceSpans.flatMap((r) =>
          r.scopeSpans.flatMap((s) => s.spans),
        ),
      );

  async function proxyWith(env: Record<string, string>, proxyEnv: Record<string, string> = {}): Promise<TestProxy> {
    for (const k of OTEL_KEYS) delete process.env[k];
    Object.assign(process.env, { OTEL_BSP_SCHEDULE_DELAY: '50', ...env });
    p = await startProxy({
      TWILIO_BASE_URL: twilio.url,
      VAPI_BASE_URL: vapi.url,
      RATE_LIMIT_PER_MINUTE: '100000',
      CIRCUIT_BREAKER_THRESHOLD: '100',
      ...proxyEnv,
    });
    return p;
  }

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push({ type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': String(req.headers['content-type']) });
        res.end(String(req.headers['content-type']).includes('json') ? '{}' : '');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/v1/traces`;
    twilio = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
  });
  afterEach(async () => {
    await p?.close();
    p = undefined;
    for (const k of OTEL_KEYS) delete process.env[k];
    bodies.length = 0;
    twilio.mode = 'ok';
    twilio.status = 200;
    twilio.seen.length = 0;
  });
  afterAll(async () => {
    await twilio.close();
    await vapi.close();
    await new Promise<void>((r) => receiver.close(() => r()));
  });

  it('makes a SERVER span under the app traceparent and a CLIENT span that is the parent sent upstream', async () => {
    const q = await proxyWith({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' });
    const r = await request(q.proxyPort, 'POST', SEND, {
      headers: { ...form, traceparent: `00-${T}-${P}-01`, tracestate: 'vendor=abc' },
      body: 'To=%2B15555550100&Body=hi',
    });
    expect(r.status).toBe(200);
    const sent = twilio.seen.at(-1)!.headers;
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(sent.traceparent));
    expect(m?.[1]).toBe(T);
    expect(m?.[2]).not.toBe(P);
    expect(sent.tracestate).toBe('vendor=abc');
    expect(await waitFor(() => spans().length >= 2, { timeoutMs: 5000, everyMs: 50 })).toBe(true);
    const server = spans().find((s) => s.kind === SERVER)!;
    const client = spans().find((s) => s.kind === CLIENT)!;
    expect(server).toMatchObject({ traceId: T, parentSpanId: P, name: 'POST messages.create' });
    expect(attr(server, 'http.request.method')).toBe('POST');
    expect(attr(server, 'http.route')).toBe('messages.create');
    expect(attr(server, 'http.response.status_code')).toBe(200);
    expect(client).toMatchObject({ traceId: T, parentSpanId: server.spanId, spanId: m![2], name: 'POST messages.create' });
    expect(attr(client, 'server.address')).toBe('127.0.0.1');
    expect(attr(client, 'server.port')).toBe(twilio.port);
    expect(attr(client, 'url.full')).toMatch(/\/Accounts\/AC\{sid\}\/Messages\.json$/);
    expect(JSON.stringify(spans())).not.toMatch(/15555550100|0123456789abcdef0123456789abcdef/);
    const line = q.logLines().find((l) => l.msg === 'request')!;
    expect(line.trace_id).toBe(T);
  });

  it('makes one CLIENT span per attempt, retries numbered, with the error recorded', async () => {
    const q = await proxyWith({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' });
    twilio.mode = 'fail';
    twilio.status = 503;
    const r = await request(q.proxyPort, 'GET', '/twilio/2010-04-01/Accounts/AC1/Messages.json', { headers: { traceparent: `00-${T}-${P}-01` } });
    expect(r.status).toBeGreaterThanOrEqual(500);
    const attempts = twilio.seen.filter((s) => String(s.headers.traceparent).includes(T)).length;
    expect(attempts).toBeGreaterThan(1);
    const done = await waitFor(() => spans().filter((s) => s.kind === CLIENT).length >= attempts && spans().some((s) => s.kind === SERVER), {
      timeoutMs: 5000,
      everyMs: 50,
    });
    expect(done, `${attempts} attempts; spans ${JSON.stringify(spans().map((s) => [s.kind, s.name]))}`).toBe(true);
    const clients = spans().filter((s) => s.kind === CLIENT);
    expect(clients).toHaveLength(attempts);
    expect(clients.map((c) => attr(c, 'http.request.resend_count') ?? 0).sort()).toEqual([...Array(attempts).keys()]);
    for (const c of clients) expect(attr(c, 'error.type')).toBe('503');
    // Each attempt sent its own span as the parent.
    const parents = twilio.seen.filter((s) => String(s.headers.traceparent).includes(T)).map((s) => String(s.headers.traceparent).split('-')[2]);
    expect(new Set(parents)).toEqual(new Set(clients.map((c) => c.spanId)));
  });

  /** The decisions recorded on the SERVER span of the request with this X-Request-Id. */
  const decisions = (reqId: string) => {
    const server = spans().find((s) => s.kind === SERVER && attr(s, 'x_request_id') === reqId);
    return (server?.events ?? []).map((e) => {
      const a = Object.fromEntries(
        (e.attributes ?? []).map((x) => [x.key, x.value.stringValue ?? (x.value.intValue !== undefined ? Number(x.value.intValue) : x.value.boolValue)]),
      );
      return `${e.name}:${String(a['breakwater.decision'])}${a['breakwater.reason'] !== undefined ? `:${String(a['breakwater.reason'])}` : ''}`;
    });
  };
  const traced = (id: string) => ({ traceparent: `00-${T}-${P}-01`, 'x-request-id': id });

  it('puts the resilience decisions on the SERVER span as events', async () => {
    const q = await proxyWith(
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' },
      { CIRCUIT_BREAKER_THRESHOLD: '1', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '60' },
    );
    // Idempotency: the original is forwarded, the repeat replayed.
    const key = { ...form, 'idempotency-key': 'trace-events-1' };
    expect((await request(q.proxyPort, 'POST', SEND, { headers: { ...key, ...traced('ev-original') }, body: 'To=%2B15555550100&Body=hi' })).status).toBe(200);
    expect((await request(q.proxyPort, 'POST', SEND, { headers: { ...key, ...traced('ev-replay') }, body: 'To=%2B15555550100&Body=hi' })).status).toBe(200);
    // A Twilio 429 starts a hold; the next request for that account is held.
    twilio.mode = '429';
    const list = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
    expect((await request(q.proxyPort, 'GET', list, { headers: traced('ev-429') })).status).toBe(429);
    expect((await request(q.proxyPort, 'GET', list, { headers: traced('ev-held') })).headers['x-breakwater-error']).toBe('upstream_rate_limited');
    // A failing GET is retried, then opens the breaker, which refuses the next request.
    twilio.mode = 'fail';
    twilio.status = 503;
    const other = '/twilio/2010-04-01/Accounts/AC2/Messages.json';
    expect((await request(q.proxyPort, 'GET', other, { headers: traced('ev-retry') })).status).toBeGreaterThanOrEqual(500);
    expect((await request(q.proxyPort, 'GET', other, { headers: traced('ev-open') })).headers['x-breakwater-error']).toBe('circuit_open');
    expect(
      await waitFor(
        () =>
          ['ev-original', 'ev-replay', 'ev-429', 'ev-held', 'ev-retry', 'ev-open'].every((id) =>
            spans().some((s) => s.kind === SERVER && attr(s, 'x_request_id') === id),
          ),
        { timeoutMs: 5000, everyMs: 50 },
      ),
    ).toBe(true);
    expect(decisions('ev-original')).toEqual(['breakwater.idempotency:forwarded']);
    expect(decisions('ev-replay')).toEqual(['breakwater.idempotency:replayed']);
    expect(decisions('ev-429')).toContain('breakwater.hold:hold_started');
    expect(decisions('ev-held')).toEqual(['breakwater.hold:held']);
    expect(decisions('ev-retry').filter((d) => d.startsWith('breakwater.retry:retry')).length).toBeGreaterThanOrEqual(1);
    expect(decisions('ev-open')).toEqual(['breakwater.breaker:rejected']);
  });

  it('puts a rate-limit refusal on the SERVER span', async () => {
    const q = await proxyWith(
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' },
      { RATE_LIMIT_PER_MINUTE: '1' },
    );
    const list = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
    expect((await request(q.proxyPort, 'GET', list, { headers: traced('rl-1') })).status).toBe(200);
    expect((await request(q.proxyPort, 'GET', list, { headers: traced('rl-2') })).status).toBe(429);
    expect(await waitFor(() => spans().some((s) => s.kind === SERVER && attr(s, 'x_request_id') === 'rl-2'), { timeoutMs: 5000, everyMs: 50 })).toBe(true);
    expect(decisions('rl-1')).toEqual([]);
    expect(decisions('rl-2')).toEqual(['breakwater.rate_limit:limited']);
  });

  it('samples by the parent, and by ratio for new traces', async () => {
    const q = await proxyWith({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl,
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0',
    });
    for (let i = 0; i < 5; i++) expect((await request(q.proxyPort, 'POST', SEND, { headers: form, body: 'Body=x' })).status).toBe(200);
    // Not sampled: the trace context still goes upstream, flagged unsampled.
    expect(String(twilio.seen.at(-1)!.headers.traceparent)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    expect((await request(q.proxyPort, 'POST', SEND, { headers: { ...form, traceparent: `00-${T}-${P}-01` }, body: 'Body=x' })).status).toBe(200);
    expect(await waitFor(() => spans().length >= 2, { timeoutMs: 5000, everyMs: 50 })).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(new Set(spans().map((s) => s.traceId))).toEqual(new Set([T]));
  });

  it('exports protobuf by default', async () => {
    const q = await proxyWith({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl });
    expect((await request(q.proxyPort, 'POST', SEND, { headers: { ...form, traceparent: `00-${T}-${P}-01` }, body: 'Body=x' })).status).toBe(200);
    expect(await waitFor(() => bodies.length > 0, { timeoutMs: 5000, everyMs: 50 })).toBe(true);
    expect(bodies[0]!.type).toBe('application/x-protobuf');
    expect(bodies[0]!.body.includes(Buffer.from(T, 'hex'))).toBe(true);
  });

  it('an exporter that is down never slows a request', async () => {
    const dead = await freePort();
    const q = await proxyWith({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${dead}/v1/traces`, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' });
    const began = performance.now();
    for (let i = 0; i < 100; i++) expect((await request(q.proxyPort, 'POST', SEND, { headers: form, body: 'Body=x' })).status).toBe(200);
    const perRequest = (performance.now() - began) / 100;
    // Loopback requests take ~1 ms here; a blocking export would take the connect failure's time.
    expect(perRequest).toBeLessThan(50);
    const closing = performance.now();
    await q.close();
    p = undefined;
    // The drain waits at most a bounded flush for the dead collector.
    expect(performance.now() - closing).toBeLessThan(5000);
    console.log(`exporter down: ${perRequest.toFixed(2)} ms per request, close ${(performance.now() - closing).toFixed(0)} ms`);
  });
});

describe('tracing off', () => {
  it('passes the app traceparent through unchanged and loads no SDK span', async () => {
    for (const k of OTEL_KEYS) delete process.env[k];
    const up = await fakeUpstream('twilio');
    const q = await startProxy({ TWILIO_BASE_URL: up.url, RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      expect((await request(q.proxyPort, 'POST', SEND, { headers: { ...form, traceparent: `00-${T}-${P}-01` }, body: 'Body=x' })).status).toBe(200);
      expect(up.seen.at(-1)!.headers.traceparent).toBe(`00-${T}-${P}-01`);
      expect(q.logLines().find((l) => l.msg === 'request')!.trace_id).toBeUndefined();
    } finally {
      await q.close();
      await up.close();
    }
  });
});
