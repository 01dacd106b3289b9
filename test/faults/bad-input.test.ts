// Hostile or broken input from the app's side of the proxy. Each case gets a 4xx (or a refusal
// on the wire), nothing reaches an upstream that should not see it, nothing is ever sent to a host
// that is not configured (the "victim" counts every connection), and the proxy keeps serving.
// Raw sockets send the bytes node's own client refuses to produce.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { DEFAULT_POLICY, metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { fetchOnce, LOCAL, policyWithServer, rawExchange, rawHeader, victim, type Victim } from './support.js';
import { waitFor } from '../support/wait.mjs';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const MAX_BODY = 100_000; // > bufferBodyBytes (64 KiB), so large bodies take the streaming path
const ACCOUNT = 'AC00000000000000000000000000000001';
const MESSAGES = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let twilio: FakeUpstream, vapi: FakeUpstream, v: Victim, p: TestProxy, harness: ProxyHarness | undefined;

beforeAll(async () => {
  v = await victim();
  // Host-routed requests (Host: *.twilio.com) go to the fake instead of the real Twilio.
  const policy = policyWithServer({ maxBodyBytes: MAX_BODY }, DEFAULT_POLICY);
  ({ twilio, vapi, p } = harness = await withProxy({ env: (up) => ({ TWILIO_HOST_TARGET: up.twilio.url, RATE_LIMIT_PER_MINUTE: '1000000' }), policy }));
});

afterAll(async () => {
  // Whatever happened above, the proxy still serves, and the victim was never contacted.
  const r = await request(p.proxyPort, 'GET', '/vapi/call');
  expect(r.status).toBe(200);
  expect(v.connections).toBe(0);
  expect(v.bytes).toBe(0);
  await harness?.close();
  await v.close();
});

/** Runs `fn` and asserts that no upstream saw even the start of a request meanwhile. */
async function nothingForwarded<T>(fn: () => Promise<T>): Promise<T> {
  const before = twilio.started + vapi.started;
  const out = await fn();
  // A forwarded request would have reached the fake before the proxy answered; give stragglers a beat.
  await new Promise((r) => setTimeout(r, 20));
  expect(twilio.started + vapi.started, 'an upstream was contacted').toBe(before);
  return out;
}

function expectRefused(r: Awaited<ReturnType<typeof rawExchange>>, status: number, code?: string) {
  expect(r.statusLine, r.text.slice(0, 200)).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
  if (code) expect(rawHeader(r.text, 'x-breakwater-error')).toBe(code);
}

describe('oversized input', () => {
  it('headers over maxHeaderBytes (16 KiB): 431, connection closed', async () => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expectRefused(r, 431, 'headers_too_large');
    expect(rawHeader(r.text, 'connection')).toBe('close');
    expect(r.closedByPeer).toBe(true);
  });

  it('too many small headers adding up past the limit: 431', async () => {
    const many = Array.from({ length: 600 }, (_, i) => `X-H${i}: ${'v'.repeat(30)}\r\n`).join('');
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\n${many}\r\n`));
    expectRefused(r, 431, 'headers_too_large');
  });

  it('a declared Content-Length over the limit: 413 payload_too_large at once, before any body byte', async () => {
    const r = await nothingForwarded(() =>
      rawExchange(p.proxyPort, `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`, {
        untilResponse: true,
      }),
    );
    expectRefused(r, 413, 'payload_too_large');
    expect(rawHeader(r.text, 'connection')).toBe('close');
  });

  it('a client that writes its whole over-limit body before reading still reads the 413 (lingering close, no RST)', async () => {
    const bytes = 16 * 1024 * 1024; // far more than loopback socket buffers absorb (lingering reads up to 64 MiB)
    const r = await nothingForwarded(() =>
      writeAllThenRead(`POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${bytes}\r\n\r\n`, bytes, false),
    );
    expect(r.writeError, 'the proxy reset the connection while the client was still sending').toBeUndefined();
    expect(r.written).toBe(bytes);
    expect(r.head).toMatch(/^HTTP\/1\.1 413 /);
    expect(rawHeader(r.head, 'x-breakwater-error')).toBe('payload_too_large');
    expect(rawHeader(r.head, 'connection')).toBe('close');
  });

  it('a chunked body that grows past the limit: 413 mid-stream with Connection: close, read by a client that kept writing', async () => {
    const seenBefore = twilio.seen.length;
    const bytes = 16 * 1024 * 1024;
    // The body never ends (no last chunk is ever sent), so any answer is a mid-stream one.
    const r = await writeAllThenRead(
      `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`,
      bytes,
      true,
    );
    expect(r.writeError, 'the proxy reset the connection while the client was still sending').toBeUndefined();
    expect(r.written).toBe(bytes);
    expect(r.head).toMatch(/^HTTP\/1\.1 413 /);
    expect(rawHeader(r.head, 'x-breakwater-error')).toBe('payload_too_large');
    expect(rawHeader(r.head, 'connection')).toBe('close');
    expect(JSON.parse(r.body)).toMatchObject({ code: 'payload_too_large', status: 413 });
    // The upstream never received a complete request: the streamed start was aborted.
    expect(twilio.seen.length).toBe(seenBefore);
    expect(r.closedByPeer).toBe(true);
  });
});

describe('malformed requests', () => {
  it.each([
    ['garbage request line', 'GARBAGE\r\n\r\n'],
    ['unknown HTTP version', `GET ${MESSAGES} HTTP/9.9\r\nHost: a\r\n\r\n`],
    ['invalid method token', `G@T ${MESSAGES} HTTP/1.1\r\nHost: a\r\n\r\n`],
    ['space inside the target', `GET /twilio/a b HTTP/1.1\r\nHost: a\r\n\r\n`],
    ['raw byte 0xFF in the target', Buffer.concat([Buffer.from(`GET ${MESSAGES}`), Buffer.from([0xff]), Buffer.from(' HTTP/1.1\r\nHost: a\r\n\r\n')])],
    ['a TLS ClientHello on the plain port', Buffer.from('160301002a0100002603035e0000000000', 'hex')],
    ['HTTP/1.1 without Host', `GET ${MESSAGES} HTTP/1.1\r\n\r\n`],
    ['asterisk-form', 'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['header name with a space', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n`],
  ])('%s: 400', async (_desc, payload) => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, payload));
    expectRefused(r, 400);
  });

  it('two Host header lines: 400 (RFC 9112 §3.2), not routed by either', async () => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET /2010-04-01/Accounts HTTP/1.1\r\nHost: evil.test\r\nHost: api.twilio.com\r\n\r\n`));
    expectRefused(r, 400, 'bad_request');
  });
});

describe('X-Request-Id', () => {
  it('a valid incoming id is kept, sent upstream and returned', async () => {
    const r = await request(p.proxyPort, 'GET', MESSAGES, { headers: { 'x-request-id': 'req-42_abc.def' } });
    expect(r.headers['x-request-id']).toBe('req-42_abc.def');
    expect(twilio.seen.at(-1)?.headers['x-request-id']).toBe('req-42_abc.def');
  });

  it.each([
    ['spaces', 'has a space'],
    ['too long', 'a'.repeat(129)],
    ['markup', '<script>alert(1)</script>'],
    ['quotes and braces', '"},"level":60,"msg":"forged'],
    ['non-ASCII', 'caf\u00e9'],
  ])('an invalid id (%s) is replaced by a fresh one, upstream and in the answer', async (_desc, id) => {
    const r = await request(p.proxyPort, 'GET', MESSAGES, { headers: { 'x-request-id': id } });
    expect(r.status).toBe(200);
    const got = r.headers['x-request-id'] as string;
    expect(got).toMatch(UUID);
    expect(twilio.seen.at(-1)?.headers['x-request-id']).toBe(got);
    expect(p.logs.join('')).not.toContain('"level":60');
  });
});

describe('header injection (CR/LF)', () => {
  it.each([
    ['bare CR inside a value', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-A: b\rX-Injected: 1\r\n\r\n`],
    ['bare LF inside a value', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-A: b\nX-Injected: 1\r\n\r\n`],
    ['CR/LF in X-Request-Id', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\rX-Injected: 1\r\n\r\n`],
    ['obsolete line folding', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-A: b\r\n X-Injected: 1\r\n\r\n`],
    ['NUL in a value', `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nX-A: b\u0000c\r\n\r\n`],
    ['CR inside the request target', `GET /twilio/x\rX-Injected: 1 HTTP/1.1\r\nHost: a\r\n\r\n`],
    ['bare LF line endings', `GET ${MESSAGES} HTTP/1.1\nHost: a\nX-Injected: 1\n\n`],
  ])('%s: 400, nothing forwarded', async (_desc, payload) => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, payload));
    expectRefused(r, 400, 'bad_request');
  });

  it('percent-encoded CR/LF in the path stays encoded: forwarded as data, never as a header', async () => {
    const r = await request(p.proxyPort, 'GET', '/twilio/x%0d%0aX-Injected:%201');
    expect(r.status).toBe(200);
    const seen = twilio.seen.at(-1)!;
    expect(seen.url).toBe('/x%0d%0aX-Injected:%201');
    expect(seen.headers['x-injected']).toBeUndefined();
  });
});

describe('request smuggling', () => {
  const POST = `POST ${MESSAGES} HTTP/1.1\r\nHost: a\r\n`;
  it.each([
    [
      'CL.TE with a smuggled request behind',
      `${POST}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /vapi/call HTTP/1.1\r\nHost: a\r\n\r\n`,
    ],
    ['TE.CL', `${POST}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`],
    ['two different Content-Lengths', `${POST}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`],
    ['two equal Content-Lengths', `${POST}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`],
    ['a Content-Length list', `${POST}Content-Length: 5, 5\r\n\r\nhello`],
    ['a signed Content-Length', `${POST}Content-Length: +5\r\n\r\nhello`],
    ['a negative Content-Length', `${POST}Content-Length: -1\r\n\r\n`],
    ['space before the colon', `${POST}Content-Length : 5\r\n\r\nhello`],
    ['an unknown transfer coding', `${POST}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
    ['chunked not last', `${POST}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
    ['chunked twice', `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['a chunk size that overflows', `${POST}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n`],
    ['a chunk size that is not hex', `${POST}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`],
  ])('%s: 400 and the connection closed; nothing forwarded, nothing smuggled', async (_desc, payload) => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, payload));
    expectRefused(r, 400, 'bad_request');
    expect(rawHeader(r.text, 'connection')).toBe('close');
    expect(r.text.match(/HTTP\/1\.1 /g)?.length).toBe(1); // no second (smuggled) answer
    expect(r.closedByPeer).toBe(true);
  });
});

describe('attempts to use the proxy as a forward proxy or tunnel', () => {
  it('absolute-form target naming an unconfigured host: 400', async () => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET http://${LOCAL}:${v.port}/x HTTP/1.1\r\nHost: ${LOCAL}:${v.port}\r\n\r\n`));
    expectRefused(r, 400, 'bad_request');
  });

  it('absolute-form target naming a configured upstream: still 400 (origin-form only)', async () => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET ${twilio.url}${MESSAGES} HTTP/1.1\r\nHost: ${LOCAL}:${twilio.port}\r\n\r\n`));
    expectRefused(r, 400, 'bad_request');
  });

  it('CONNECT: 405 on the wire, no tunnel opened', async () => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `CONNECT ${LOCAL}:${v.port} HTTP/1.1\r\nHost: ${LOCAL}:${v.port}\r\n\r\n`));
    expectRefused(r, 405, 'method_not_allowed');
    expect(r.closedByPeer).toBe(true);
  });

  it('protocol upgrade (WebSocket): 400, no tunnel opened', async () => {
    const r = await nothingForwarded(() =>
      rawExchange(
        p.proxyPort,
        `GET ${MESSAGES} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      ),
    );
    expectRefused(r, 400, 'bad_request');
  });
});

describe('path traversal out of a prefix', () => {
  it.each([
    '/twilio/../admin',
    '/twilio/%2e%2e/admin',
    '/twilio/%2E%2E/admin',
    '/twilio/.%2e/admin',
    '/twilio/%2e./admin',
    '/twilio/..',
    '/twilio/x/../../vapi/call',
    '/twilio/./2010-04-01',
    '/twilio/..%2fadmin',
    '/twilio/%2f%2fevil.test/x',
    '/twilio/..%5cadmin',
    '/twilio/..\\admin',
  ])('%s: 400 bad_request, nothing forwarded', async (path) => {
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`));
    expectRefused(r, 400, 'bad_request');
  });

  it('dots in the query string are data, not traversal', async () => {
    const r = await request(p.proxyPort, 'GET', '/twilio/x?next=../../admin');
    expect(r.status).toBe(200);
    expect(twilio.seen.at(-1)?.url).toBe('/x?next=../../admin');
  });
});

describe('Host values and headers that try to choose the destination', () => {
  it.each([
    'api.twilio.com.evil.test',
    'evil-twilio.com',
    'xtwilio.com',
    'twilio.com',
    'twilio.com.',
    'api.twilio.com@evil.test',
    `${LOCAL}:${0}`,
    'api.twilio.com:443@evil.test',
    'a..twilio.com',
    '.twilio.com',
  ])('Host %s: 404 no_route, no upstream contacted', async (host) => {
    const h = host === `${LOCAL}:0` ? `${LOCAL}:${v.port}` : host;
    const r = await nothingForwarded(() => rawExchange(p.proxyPort, `GET /2010-04-01/Accounts.json HTTP/1.1\r\nHost: ${h}\r\n\r\n`, { untilResponse: true }));
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(rawHeader(r.text, 'x-breakwater-error')).toMatch(/^(no_route|bad_request)$/);
  });

  it('an allow-listed host is routed (the positive control)', async () => {
    const n = twilio.seen.length;
    const r = await request(p.proxyPort, 'GET', '/2010-04-01/Accounts.json', { headers: { host: 'API.Twilio.COM' } });
    expect(r.status).toBe(200);
    expect(twilio.seen.length).toBe(n + 1);
    expect(twilio.seen.at(-1)?.headers.host).toBe('api.twilio.com');
  });

  it('a prefixed path with a hostile Host and forwarding headers goes to the configured upstream only, without them', async () => {
    const n = twilio.seen.length;
    const r = await request(p.proxyPort, 'GET', MESSAGES, {
      headers: {
        host: `${LOCAL}:${v.port}`,
        'x-forwarded-host': `${LOCAL}:${v.port}`,
        forwarded: `host=${LOCAL}:${v.port};proto=http`,
        'x-forwarded-proto': 'gopher',
      },
    });
    expect(r.status).toBe(200);
    expect(twilio.seen.length).toBe(n + 1);
    const h = twilio.seen.at(-1)!.headers;
    expect(h.host).toBe(`${LOCAL}:${twilio.port}`);
    for (const name of ['x-forwarded-host', 'forwarded']) expect(h[name], name).toBeUndefined();
    expect(h['x-forwarded-proto']).toBe('http');
  });

  it.each(['x-original-url', 'x-rewrite-url'])('a %s rewrite header: 400, nothing forwarded', async (name) => {
    const r = await nothingForwarded(() => request(p.proxyPort, 'GET', MESSAGES, { headers: { [name]: `http://${LOCAL}:${v.port}/steal` } }));
    expect(r.status).toBe(400);
    expect(r.headers['x-breakwater-error']).toBe('bad_request');
  });

  it('hop-by-hop tricks: a Connection header cannot strip or add what the upstream sees', async () => {
    await request(p.proxyPort, 'GET', MESSAGES, {
      headers: { connection: 'keep-alive, x-secret', 'x-secret': 'drop-me', te: 'trailers', 'proxy-authorization': 'Basic Zm9vOmJhcg==' },
    });
    const h = twilio.seen.at(-1)!.headers;
    expect(h['x-secret']).toBeUndefined();
    expect(h['proxy-authorization']).toBeUndefined();
    expect(h['x-request-id']).toMatch(UUID);
  });
});

describe('after all of it', () => {
  it('the proxy still serves, counted every refusal, and left no client connection behind', async () => {
    const r = await fetchOnce(p.proxyPort, 'GET', MESSAGES);
    expect(r.status).toBe(200);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_requests_total', { outcome: 'bad_request' }) ?? 0).toBeGreaterThan(0);
    expect(metricValue(text, 'breakwater_requests_total', { outcome: 'payload_too_large' }) ?? 0).toBeGreaterThan(0);
    // Every raw socket above was closed by one side or the other.
    expect(
      await waitFor(async () => metricValue(await metricsText(p.adminPort), 'breakwater_client_connections') === 0, { timeoutMs: 8000, everyMs: 100 }),
    ).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

/**
 * The common client: writes the whole request (head, then `bytes` of body, raw or as 16 KiB
 * chunks) before it reads anything, then reads the answer. If the proxy answers early and then
 * closes with unread bytes in flight, the kernel's RST makes this client lose the answer: the
 * failure that lingering close prevents.
 */
function writeAllThenRead(
  head: string,
  bytes: number,
  chunked: boolean,
): Promise<{ head: string; body: string; written: number; writeError: string | undefined; closedByPeer: boolean }> {
  const CHUNK = 16 * 1024;
  const data = Buffer.alloc(CHUNK, 0x62);
  const piece = chunked ? Buffer.concat([Buffer.from(`${CHUNK.toString(16)}\r\n`), data, Buffer.from('\r\n')]) : data;
  return new Promise((resolve) => {
    const s = net.connect(p.proxyPort, LOCAL);
    s.pause(); // read nothing until everything is written
    let text = '';
    let written = 0;
    let writeError: string | undefined;
    let closedByPeer = false;
    let reading = false;
    const deadline = setTimeout(() => s.destroy(), 12_000);
    const read = () => {
      if (reading) return;
      reading = true;
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.resume();
    };
    const pump = () => {
      while (!s.destroyed && written < bytes) {
        written += CHUNK;
        if (!s.write(piece)) return void s.once('drain', pump);
      }
      read();
    };
    s.on('connect', () => {
      s.write(head);
      pump();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (!reading) writeError ??= e.code;
      read();
    });
    s.on('end', () => (closedByPeer = true));
    s.on('close', () => {
      clearTimeout(deadline);
      const [h = '', ...rest] = text.split('\r\n\r\n');
      resolve({ head: h, body: rest.join('\r\n\r\n'), written, writeError, closedByPeer });
    });
  });
}
