// circuit_breaker_open_seconds_total counts the time a breaker spends open, exactly: up to date at
// each scrape while open, and frozen once it closes. The Open rate and Time spent open panels
// are built on it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, sleep, startProxy, type TestProxy } from '../support/proxy.js';

describe('time spent open', () => {
  let up: FakeUpstream, p: TestProxy;
  beforeAll(async () => {
    up = await fakeUpstream('twilio');
    p = await startProxy({ TWILIO_BASE_URL: up.url, VAPI_BASE_URL: up.url });
  });
  afterAll(async () => {
    await p.close();
    await up.close();
  });

  const openSeconds = async (service: string) => metricValue(await metricsText(p.adminPort), 'circuit_breaker_open_seconds_total', { service });

  it('is 0 while closed, grows while open, and stops growing after a close', async () => {
    expect(await openSeconds('twilio')).toBe(0);
    expect((await request(p.adminPort, 'POST', '/breakers/twilio/open', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
    await sleep(600);
    const during = (await openSeconds('twilio'))!;
    expect(during).toBeGreaterThanOrEqual(0.5);
    await sleep(400);
    expect((await openSeconds('twilio'))!).toBeGreaterThanOrEqual(during + 0.3);
    expect((await request(p.adminPort, 'POST', '/breakers/twilio/close', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
    const closed = (await openSeconds('twilio'))!;
    await sleep(300);
    expect(await openSeconds('twilio')).toBe(closed);
    expect(await openSeconds('vapi')).toBe(0);
  });
});
