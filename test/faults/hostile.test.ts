// The second hardening pass (issue 19): hostile clients and misbehaving upstreams that used to
// hold resources for ever or slip past a limit. Raw sockets where Node's client would not
// misbehave the way an attacker does.
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, startProxy, type TestProxy } from '../support/proxy.js';
import { connectRaw, fetchOnce, LOCAL, policyWithServer, waitFor } from './support.js';

const MESSAGES = '/twilio/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json';
const ENV = { RATE_LIMIT_PER_MINUTE: '1000000' };

describe('raw refusals do not leave half-open connections (maxConnections 30)', () => {
  let up: FakeUpstream, vapi: FakeUpstream, p: TestProxy;
  const held: Socket[] = [];
  beforeAll(async () => {
    up = await fakeUpstream('twilio');
    vapi = await fakeUpstream('vapi');
    // Long header/request timeouts: only the refusal itself may free the slots.
    p = await startProxy({ ...ENV, TWILIO_BASE_URL: up.url, VAPI_BASE_URL: vapi.url }, policyWithServer({ maxConnections: 30, headersTimeout: 60, requestTimeout: 120 }));
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await p.close();
    await up.close();
    await vapi.close();
  });
  const connections = async () => metricValue(await metricsText(p.adminPort), 'breakwater_client_connections') ?? -1;

  it('60 clients that send CONNECT or garbage and never read nor close free their slots within seconds', async () => {
    const payloads = [`CONNECT ${LOCAL}:1 HTTP/1.1\r\nHost: ${LOCAL}:1\r\n\r\n`, 'NOT HTTP AT ALL\r\n\r\n', `GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n`];
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 30; i++) {
        const s = await connectRaw(p.proxyPort);
        s.on('error', () => {});
        s.pause(); // never reads, so never sees the server's FIN and never closes on its own
        s.write(payloads[i % payloads.length]!);
        held.push(s);
      }
      // Every slot is released by the server although no client closed its side.
      expect(await waitFor(async () => (await connections()) === 0, 6000, 100)).toBe(true);
    }
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
  });
});
