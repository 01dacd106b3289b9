// What the dashboards and alerts read must hold in an outage: every counter an alert or an
// increase() depends on is exported at zero before its first event (a series born at 1 loses
// that event to rate()), Breakwater's own refusals are kept out of the forwarded latency series,
// and a Breakwater-made 5xx counts as a failure just like a forwarded one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, startProxy, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };
const send = (p: TestProxy) => request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=%2B15555550100&Body=hi' });

describe('metrics an operator can trust in an outage', () => {
  let twilio: FakeUpstream, vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '2', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '60', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
  });
  afterAll(() => harness?.close());

  it('exports every breaker transition and every answer class at zero before anything happens', async () => {
    const text = await metricsText(p.adminPort);
    for (const service of ['twilio', 'vapi']) {
      for (const [from, to] of [
        ['closed', 'open'],
        ['open', 'half_open'],
        ['half_open', 'closed'],
        ['half_open', 'open'],
      ] as const) {
        expect(metricValue(text, 'circuit_breaker_transitions_total', { service, from, to }), `${service} ${from}->${to}`).toBe(0);
      }
      for (const cls of ['2xx', '3xx', '4xx', '5xx', 'client_closed']) {
        expect(metricValue(text, 'breakwater_responses_total', { upstream: service, class: cls }), `${service} ${cls}`).toBe(0);
      }
    }
  });

  it('counts forwarded and Breakwater-made 5xx alike, and keeps local refusals out of the forwarded latency', async () => {
    twilio.mode = 'fail';
    twilio.status = 500;
    expect((await send(p)).status).toBe(500);
    expect((await send(p)).status).toBe(500);
    // The breaker is open now: these are answered locally, 503 circuit_open.
    for (let i = 0; i < 5; i++) expect((await send(p)).status).toBe(503);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_responses_total', { upstream: 'twilio', class: '5xx' })).toBe(7);
    expect(metricValue(text, 'circuit_breaker_transitions_total', { service: 'twilio', from: 'closed', to: 'open' })).toBe(1);
    const route = { upstream: 'twilio', route: 'messages.create', method: 'POST' };
    expect(metricValue(text, 'breakwater_request_duration_seconds_count', { ...route, source: 'upstream' })).toBe(2);
    expect(metricValue(text, 'breakwater_request_duration_seconds_count', { ...route, source: 'local' })).toBe(5);
  });

  it("counts the provider's own error code of a failed answer, bounded, and puts it on the access line", async () => {
    twilio.mode = 'ok';
    twilio.handler = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          code: 21211,
          message: "The 'To' number +15555550100 is not a valid phone number.",
          more_info: 'https://www.twilio.com/docs/errors/21211',
          status: 400,
        }),
      );
    };
    vapi.handler = (_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: ['customer.number must be a valid phone number'], error: 'Bad Request', statusCode: 400 }));
    };
    // A fresh proxy: the one above has its Twilio breaker open.
    const q = await startProxy({ TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url, RATE_LIMIT_PER_MINUTE: '100000' });
    try {
      expect((await send(q)).status).toBe(400);
      expect((await send(q)).status).toBe(400);
      expect((await request(q.proxyPort, 'POST', '/vapi/call', { headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(400);
      const text = await metricsText(q.adminPort);
      expect(metricValue(text, 'breakwater_upstream_errors_total', { upstream: 'twilio', code: '21211' })).toBe(2);
      expect(metricValue(text, 'breakwater_upstream_errors_total', { upstream: 'vapi', code: 'validation' })).toBe(1);
      expect(text).not.toMatch(/15555550100/);
      const lines = q.logLines().filter((l) => l.msg === 'request');
      expect(lines.filter((l) => l.upstreamErrorCode === '21211')).toHaveLength(2);
      expect(lines.find((l) => l.upstream === 'vapi')?.upstreamErrorCode).toBe('validation');
    } finally {
      twilio.handler = undefined;
      vapi.handler = undefined;
      await q.close();
    }
  });
});
