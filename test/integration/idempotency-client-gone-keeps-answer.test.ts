// An app that gives up on a keyed create (its own timeout) and retries it with the same
// Idempotency-Key must be given what the upstream really did: the call it created, not a second
// create and not "outcome unknown". So Breakwater reads a keyed original's answer to the end after
// its app has left (nginx's proxy_ignore_client_abort) and replays it to the retry. Without a key
// nobody is left to answer, and the attempt stops at once.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { policyWith } from '../support/policy.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const HEADERS = { 'content-type': 'application/json', authorization: 'Bearer sk-test' };
const CALL = JSON.stringify({ assistantId: 'a1', customer: { number: '+15550004000' } });

/**
 * Sends POST /vapi/call (keyed when `key` is given) and hangs up once `ready()` holds: the upstream
 * has it (`reached`), or the proxy holds it (`inFlight`).
 */
function createThenHangUp(port: number, requestId: string, key: string | undefined, ready: () => boolean | Promise<boolean>): Promise<void> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...HEADERS, 'content-length': String(Buffer.byteLength(CALL)), 'x-request-id': requestId };
    if (key !== undefined) headers['idempotency-key'] = key;
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/vapi/call', agent: false, headers });
    req.on('error', () => {});
    req.end(CALL);
    void waitFor(ready, { timeoutMs: 3000, everyMs: 5 }).then(() => {
      req.destroy();
      setTimeout(resolve, 20);
    });
  });
}

/** True once the upstream has seen a request more than it had now (the whole request, before any answer). */
function reached(upstream: FakeUpstream): () => boolean {
  const before = upstream.seen.length;
  return () => upstream.seen.length > before;
}

/** Requests the proxy is handling for an upstream (the in-flight gauge, read at scrape time). */
async function inFlight(adminPort: number, upstream: string): Promise<number> {
  return metricValue(await metricsText(adminPort), 'breakwater_requests_in_flight', { upstream }) ?? 0;
}

describe('a keyed create whose app hangs up before the answer', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000', UPSTREAM_TIMEOUT: '1.5' } }));
  });
  afterAll(() => harness?.close());

  const lineOf = (reqId: string) => p.logLines().find((x) => x.msg === 'request' && x.reqId === reqId);
  const retry = (key: string) => request(p.proxyPort, 'POST', '/vapi/call', { headers: { ...HEADERS, 'idempotency-key': key }, body: CALL });

  it('is read to the end, and the retry with the same key gets the call the upstream created', async () => {
    vapi.mode = 'slow';
    vapi.delayMs = 300;
    vapi.status = 201;
    vapi.body = JSON.stringify({ id: 'call-0001', status: 'queued' });
    const seen = vapi.seen.length;
    await createThenHangUp(p.proxyPort, 'gone-keyed-1', 'call-key-1', reached(vapi));
    // Its access line is written once the upstream's answer has been read whole.
    const line = await waitFor(() => lineOf('gone-keyed-1'), { timeoutMs: 5000, everyMs: 20 });
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'client closed; the upstream answered 201']);

    const again = await retry('call-key-1');
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json).toEqual({ id: 'call-0001', status: 'queued' });
    expect(vapi.seen.length - seen, 'creates that reached the upstream').toBe(1);
    const breakers = await request(p.adminPort, 'GET', '/breakers');
    expect(breakers.json.breakers.find((x: { name: string }) => x.name === 'vapi').failures).toBe(0);
  });

  it('when the upstream then never answers, the retry gets the ambiguous 504, and no second create', async () => {
    vapi.mode = 'hang';
    const seen = vapi.seen.length;
    await createThenHangUp(p.proxyPort, 'gone-keyed-2', 'call-key-2', reached(vapi));
    await waitFor(() => lineOf('gone-keyed-2'), { timeoutMs: 5000, everyMs: 20 });
    const again = await retry('call-key-2');
    expect(again.status).toBe(504);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['x-breakwater-error']).toBe('upstream_timeout');
    expect(again.json.message).toMatch(/client disconnected/);
    expect(vapi.seen.length - seen).toBe(1);
  });

  it('a duplicate whose app leaves while it waits for the original is answered nothing and counted 499', async () => {
    vapi.mode = 'slow';
    vapi.delayMs = 300;
    vapi.status = 201;
    vapi.body = JSON.stringify({ id: 'call-0003', status: 'queued' });
    const started = vapi.started;
    const original = retry('call-key-3');
    await waitFor(() => vapi.started > started, { timeoutMs: 3000, everyMs: 5 });
    // The duplicate joins the original's wait, then its app gives up.
    await createThenHangUp(p.proxyPort, 'dup-gone', 'call-key-3', async () => (await inFlight(p.adminPort, 'vapi')) >= 2);
    expect((await original).status).toBe(201);
    const line = await waitFor(() => lineOf('dup-gone'), { timeoutMs: 5000, everyMs: 20 });
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'client closed before the replay']);
  });

  it('stops reading once the answer outgrows the store, and keeps the key spent', async () => {
    // Headers after 300 ms (the app has left by then), then 1 MiB, over the 64 KiB the store keeps.
    const big = Buffer.alloc(1024 * 1024, 'x');
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json', 'content-length': String(big.length) });
        res.end(big);
      }, 300);
    };
    const seen = vapi.seen.length;
    await createThenHangUp(p.proxyPort, 'gone-keyed-big', 'call-key-big', reached(vapi));
    const line = await waitFor(() => lineOf('gone-keyed-big'), { timeoutMs: 5000, everyMs: 20 });
    vapi.handler = undefined;
    expect([line?.status, line?.outcome]).toEqual([499, 'client_closed']);
    const again = await retry('call-key-big');
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.status).toBe(502);
    // Stopped when the answer outgrew the store (read to its end, the line would say only that it
    // could not be kept): what is known, the upstream's 201, is kept.
    expect(again.json.message).toBe(
      'The original request was answered 201 by the upstream after its client disconnected, but that answer could not be kept for replay. It is not sent again.',
    );
    expect(vapi.seen.length - seen).toBe(1);
  });

  it('without a key, the attempt stops at once: nobody is left to answer', async () => {
    vapi.mode = 'hang';
    const seen = vapi.seen.length;
    await createThenHangUp(p.proxyPort, 'gone-unkeyed', undefined, reached(vapi));
    expect(vapi.seen.length - seen).toBe(1);
    const line = await waitFor(() => lineOf('gone-unkeyed'), { timeoutMs: 5000, everyMs: 10 });
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'client closed']);
    // Not a speed claim: kept reading, it would have ended only at UPSTREAM_TIMEOUT (1.5 s), as
    // the keyed one above did.
    expect(Number(line?.durationMs)).toBeLessThan(1500);
  });
});

describe('a keyed create whose app hangs up while it waits for an upstream connection', () => {
  let vapi: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  beforeAll(async () => {
    // One connection: the keyed create queues in undici's pool behind a slow request.
    ({ vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000' }, policy: policyWith((pol) => (pol.upstreams.vapi.connections = 1)) }));
  });
  afterAll(() => harness?.close());

  it('never left, so nothing is stored: the retry with the same key really goes through', async () => {
    // The slow request ends its connection, and the upstream stops listening first: the queued
    // create's own connect is then refused, a failure undici reports without ever writing it.
    vapi.handler = (_req, res) => {
      setTimeout(() => {
        vapi.stopListening();
        res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
        res.end('{"ok":true}');
      }, 400);
    };
    const started = vapi.started;
    const slow = request(p.proxyPort, 'GET', '/vapi/call', { headers: HEADERS, timeoutMs: 5000 });
    await waitFor(() => vapi.started > started, { timeoutMs: 3000, everyMs: 5 });
    await createThenHangUp(p.proxyPort, 'queued-keyed', 'call-key-q', async () => (await inFlight(p.adminPort, 'vapi')) >= 2);
    expect((await slow).status).toBe(200);
    const line = await waitFor(() => p.logLines().find((x) => x.msg === 'request' && x.reqId === 'queued-keyed'), { timeoutMs: 5000, everyMs: 20 });
    expect([line?.status, line?.outcome, line?.cause]).toEqual([499, 'client_closed', 'client closed before forwarding']);
    expect(vapi.seen.filter((s) => s.method === 'POST').length, 'the create never reached the upstream').toBe(0);
    // Not replayed: a fresh attempt, refused now that the upstream is gone.
    const again = await request(p.proxyPort, 'POST', '/vapi/call', { headers: { ...HEADERS, 'idempotency-key': 'call-key-q' }, body: CALL });
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect([again.status, again.headers['x-breakwater-error']]).toEqual([502, 'upstream_unavailable']);
  });
});
