// The response cache over real sockets: a fresh copy answers without the upstream, two
// credentials never see each other's copies, 1,000 identical concurrent GETs cost one upstream
// request, HEAD reads the GET's copy, unsafe methods invalidate, and a stale copy stands in
// while the upstream fails or its breaker is open.
import http from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { metricsText, metricValue, request, type TestProxy } from '../support/proxy.js';
import { policyWith } from '../support/policy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const POLICY = policyWith((p) => {
  const v = p.upstreams.vapi;
  v.routes.unshift({ name: 'assistant.fetch', match: 'GET /assistant/*' }, { name: 'assistant.list', match: 'GET /assistant' });
  v.cache = {
    routes: [
      { route: 'assistant.fetch', ttl: 60 },
      { route: 'assistant.list', ttl: 60, invalidatedBy: ['POST /assistant', 'PATCH /assistant/*', 'DELETE /assistant/*'] },
      { route: 'call.fetch', ttl: 0.3, staleIfError: 60 },
      { route: 'phone-number', ttl: 60, maxEntryBytes: 100 },
    ],
  };
  const t = p.upstreams.twilio;
  t.routes.unshift({ name: 'lookups', match: 'GET /v2/PhoneNumbers/*' });
  t.cache = { waitTimeout: 0.2, routes: [{ route: 'lookups', ttl: 86400, onlyQuery: { Fields: ['line_type_intelligence', 'caller_name'] } }] };
});

describe('response cache', () => {
  let vapi: FakeUpstream, twilio: FakeUpstream, p: TestProxy, harness: ProxyHarness | undefined;
  let answers = 0;
  beforeAll(async () => {
    ({ twilio, vapi, p } = harness = await withProxy({ env: { RATE_LIMIT_PER_MINUTE: '1000000', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '30' }, policy: POLICY }));
  });
  beforeEach(() => {
    vapi.mode = 'ok';
    vapi.delayMs = 0;
    // Each upstream answer names the credential it was given and is numbered.
    vapi.handler = (req, res) => {
      const n = ++answers;
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': '__cf_bm=x' });
        res.end(JSON.stringify({ url: req.url, auth: req.headers.authorization ?? null, n }));
      }, vapi.delayMs);
    };
  });
  afterAll(() => harness?.close());

  const get = (path: string, key = 'k1', method = 'GET', extra: Record<string, string> = {}) =>
    request(p.proxyPort, method, path, { headers: { authorization: `Bearer ${key}`, ...extra } });
  const upstreamGets = (path: string) => vapi.seen.filter((s) => s.method === 'GET' && s.url === path).length;

  it('answers a repeated GET from the cache, with Cache-Status and Age, and counts it', async () => {
    const first = await get('/vapi/assistant/a1');
    expect(first.status).toBe(200);
    expect(first.headers['cache-status']).toBe('Breakwater; fwd=miss');
    const second = await get('/vapi/assistant/a1');
    expect(second.status).toBe(200);
    expect(second.text).toBe(first.text);
    expect(second.headers['cache-status']).toMatch(/^Breakwater; hit; ttl=(59|60)$/);
    expect(second.headers['age']).toMatch(/^\d+$/);
    expect(second.headers['set-cookie']).toBeUndefined();
    expect(second.headers['content-type']).toBe('application/json');
    expect(upstreamGets('/assistant/a1')).toBe(1);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_cache_requests_total', { upstream: 'vapi', route: 'assistant.fetch', result: 'hit' })).toBe(1);
    expect(metricValue(text, 'breakwater_cache_requests_total', { upstream: 'vapi', route: 'assistant.fetch', result: 'miss' })).toBe(1);
    expect(metricValue(text, 'breakwater_cache_entries', { upstream: 'vapi' })).toBeGreaterThanOrEqual(1);
    // The access line says what the cache did, so a log search can tell a hit from a forward.
    const line = (id: unknown) => p.logLines().find((l) => l.reqId === id && l.durationMs !== undefined);
    expect(line(first.headers['x-request-id'])?.cache).toBe('miss');
    expect(line(second.headers['x-request-id'])?.cache).toBe('hit');
  });

  it("keys by credential: two credentials never get each other's copies", async () => {
    const ids = ['c1', 'c2', 'c3'];
    for (let round = 0; round < 3; round++) {
      for (const id of ids) {
        for (const key of ['alice', 'bob']) {
          const a = await get(`/vapi/assistant/${id}`, key);
          expect(a.json.auth).toBe(`Bearer ${key}`);
          expect(a.headers['cache-status']).toMatch(round === 0 ? /fwd=miss/ : /hit/);
        }
      }
    }
    for (const id of ids) expect(upstreamGets(`/assistant/${id}`)).toBe(2);
  });

  it('answers HEAD from the GET copy, and normalises the query order', async () => {
    const g = await get('/vapi/assistant/h1?b=2&a=1');
    const h = await get('/vapi/assistant/h1?a=1&b=2', 'k1', 'HEAD');
    expect(h.status).toBe(200);
    expect(h.text).toBe('');
    expect(h.headers['content-length']).toBe(String(Buffer.byteLength(g.text)));
    expect(h.headers['cache-status']).toMatch(/hit/);
    expect(vapi.seen.filter((s) => s.url.startsWith('/assistant/h1')).length).toBe(1);
  });

  it("an unsafe request on a related URI (invalidatedBy) drops the route's entries for every credential; a failed one does not", async () => {
    const list = '/vapi/assistant';
    const warm = async () => {
      await get(list, 'alice');
      await get(list, 'bob');
      await get(`${list}?limit=5`, 'alice');
      expect((await get(list, 'alice')).headers['cache-status']).toMatch(/hit/);
      expect((await get(`${list}?limit=5`, 'alice')).headers['cache-status']).toMatch(/hit/);
    };
    await warm();
    const post = await request(p.proxyPort, 'POST', list, { headers: { authorization: 'Bearer alice', 'content-type': 'application/json' }, body: '{}' });
    expect(post.status).toBe(200);
    expect((await get(list, 'bob')).headers['cache-status']).toBe('Breakwater; fwd=miss');
    expect((await get(`${list}?limit=5`, 'alice')).headers['cache-status']).toBe('Breakwater; fwd=miss');
    await warm();
    // PATCH of one assistant: the list drops (a related URI), as does the assistant's own copy.
    const patch = await request(p.proxyPort, 'PATCH', '/vapi/assistant/rel1', {
      headers: { authorization: 'Bearer bob', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(patch.status).toBe(200);
    expect((await get(list, 'alice')).headers['cache-status']).toBe('Breakwater; fwd=miss');
    await warm();
    // A refused create changed nothing upstream: the list stays.
    vapi.handler = (req, res) => {
      if (req.method === 'POST') {
        res.writeHead(400, { 'content-type': 'application/json' });
        return res.end('{"error":"bad"}');
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ url: req.url, n: ++answers }));
    };
    const refused = await request(p.proxyPort, 'POST', list, { headers: { authorization: 'Bearer alice', 'content-type': 'application/json' }, body: '{}' });
    expect(refused.status).toBe(400);
    expect((await get(list, 'alice')).headers['cache-status']).toMatch(/hit/);
  });

  it('revalidates a stale copy with its ETag: a 304 refreshes it, the app gets the stored 200; a changed resource replaces it', async () => {
    let version = 'v1';
    const conditionals: (string | undefined)[] = [];
    vapi.handler = (req, res) => {
      const inm = req.headers['if-none-match'] as string | undefined;
      conditionals.push(inm);
      if (inm === `"${version}"`) {
        res.writeHead(304, { etag: `"${version}"`, 'x-seen': 'revalidated' });
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'application/json', etag: `"${version}"` });
      res.end(JSON.stringify({ version, n: ++answers }));
    };
    const path = '/vapi/call/etag1';
    const first = await get(path);
    expect(first.headers['cache-status']).toBe('Breakwater; fwd=miss');
    const body = first.text;
    await new Promise((r) => setTimeout(r, 400)); // past the route's 0.3 s ttl
    const second = await get(path);
    expect(second.status).toBe(200);
    expect(second.text).toBe(body);
    expect(second.headers['cache-status']).toMatch(/^Breakwater; fwd=stale; fwd-status=304; ttl=0$/);
    expect(second.headers['x-seen']).toBe('revalidated');
    expect(second.headers['x-breakwater-error']).toBeUndefined();
    expect(conditionals).toEqual([undefined, '"v1"']);
    // Fresh again: answered without the upstream.
    expect((await get(path)).headers['cache-status']).toMatch(/hit/);
    expect(conditionals).toHaveLength(2);
    version = 'v2';
    await new Promise((r) => setTimeout(r, 400));
    const changed = await get(path);
    expect(JSON.parse(changed.text)).toMatchObject({ version: 'v2' });
    expect(conditionals.at(-1)).toBe('"v1"');
    expect((await get(path)).text).toBe(changed.text);
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_cache_requests_total', { upstream: 'vapi', route: 'call.fetch', result: 'revalidated' })).toBeGreaterThanOrEqual(1);
  });

  it("revalidates with Last-Modified when there is no ETag, and never sends its own conditional on an app's", async () => {
    const seen: { ims?: string; inm?: string }[] = [];
    const lm = 'Wed, 02 Dec 2026 10:00:00 GMT';
    vapi.handler = (req, res) => {
      seen.push({ ims: req.headers['if-modified-since'] as string | undefined, inm: req.headers['if-none-match'] as string | undefined });
      if (req.headers['if-modified-since'] === lm) {
        res.writeHead(304, {});
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'application/json', 'last-modified': lm });
      res.end(JSON.stringify({ n: ++answers }));
    };
    const path = '/vapi/call/lm1';
    const first = await get(path);
    await new Promise((r) => setTimeout(r, 400));
    const second = await get(path);
    expect(second.status).toBe(200);
    expect(second.text).toBe(first.text);
    expect(second.headers['cache-status']).toMatch(/fwd-status=304/);
    expect(seen[1]).toEqual({ ims: lm, inm: undefined });
    // The app's own conditional passes through as it is, and its 304 is the app's.
    const own = await get(path, 'k1', 'GET', { 'if-modified-since': lm });
    expect(own.status).toBe(304);
    expect(own.headers['cache-status']).toBe('Breakwater; fwd=bypass');
  });

  it("an unsafe method on the URI invalidates every credential's copy", async () => {
    await get('/vapi/assistant/u1', 'alice');
    await get('/vapi/assistant/u1', 'bob');
    expect((await get('/vapi/assistant/u1', 'alice')).headers['cache-status']).toMatch(/hit/);
    const patch = await request(p.proxyPort, 'PATCH', '/vapi/assistant/u1', {
      headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(patch.status).toBe(200);
    expect((await get('/vapi/assistant/u1', 'bob')).headers['cache-status']).toBe('Breakwater; fwd=miss');
    expect(upstreamGets('/assistant/u1')).toBe(3);
  });

  it('stores neither no-store answers nor errors; a request no-cache goes upstream', async () => {
    vapi.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end('{}');
    };
    await get('/vapi/assistant/ns');
    await get('/vapi/assistant/ns');
    expect(upstreamGets('/assistant/ns')).toBe(2);
    vapi.handler = (_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{}');
    };
    await get('/vapi/assistant/e401');
    await get('/vapi/assistant/e401');
    expect(upstreamGets('/assistant/e401')).toBe(2);
    vapi.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    };
    await get('/vapi/assistant/nc');
    const again = await get('/vapi/assistant/nc', 'k1', 'GET', { 'cache-control': 'no-cache' });
    expect(again.headers['cache-status']).toBe('Breakwater; fwd=request');
    expect(upstreamGets('/assistant/nc')).toBe(2);
  });

  it('coalesces 1,000 concurrent identical GETs into one upstream request', async () => {
    vapi.delayMs = 500;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1000 });
    const one = () =>
      new Promise<{ status: number; body: string; cs: string | undefined }>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port: p.proxyPort, path: '/vapi/assistant/hot', headers: { authorization: 'Bearer k1' }, agent },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), cs: res.headers['cache-status'] as string | undefined }),
            );
          },
        );
        req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
        req.on('error', reject);
        req.end();
      });
    const all = await Promise.all(Array.from({ length: 1000 }, one));
    agent.destroy();
    expect(upstreamGets('/assistant/hot')).toBe(1);
    expect(all.every((a) => a.status === 200)).toBe(true);
    expect(new Set(all.map((a) => a.body)).size).toBe(1);
    // Those that arrived during the flight waited for it; any that arrived after it found the copy.
    const collapsed = all.filter((a) => a.cs?.includes('collapsed')).length;
    const hits = all.filter((a) => a.cs?.startsWith('Breakwater; hit')).length;
    expect(collapsed + hits).toBe(999);
    expect(collapsed).toBeGreaterThan(0);
  });

  it('a failed leader is not fanned out: waiters go upstream themselves', async () => {
    let n = 0;
    vapi.handler = (_req, res) => {
      n++;
      setTimeout(() => {
        res.writeHead(404, { 'content-type': 'application/json', 'cache-control': n === 1 ? 'no-store' : 'max-age=60' });
        res.end(JSON.stringify({ n }));
      }, 200);
    };
    const all = await Promise.all(Array.from({ length: 5 }, () => get('/vapi/assistant/fl')));
    // The leader's answer was not storable, so the four waiters each asked for themselves.
    expect(upstreamGets('/assistant/fl')).toBe(5);
    expect(all.filter((a) => a.json.n === 1).length).toBe(1);
  });

  it('serves a stale copy (stale-if-error) while the upstream fails and while the breaker is open', async () => {
    const fresh = await get('/vapi/call/s1');
    expect(fresh.status).toBe(200);
    await new Promise((r) => setTimeout(r, 400)); // past its 0.3 s TTL
    // Resets: every attempt fails, and no answer head has been relayed, so the copy can stand in.
    vapi.handler = undefined;
    vapi.mode = 'reset';
    const failing = await get('/vapi/call/s1');
    expect(failing.status).toBe(200);
    expect(failing.text).toBe(fresh.text);
    expect(failing.headers['cache-status']).toMatch(/^Breakwater; fwd=stale; ttl=-\d+; detail=stale-if-error$/);
    expect(failing.headers['x-breakwater-error']).toBeUndefined();
    const forced = await request(p.adminPort, 'POST', '/breakers/vapi/open', { headers: { 'x-breakwater-admin': '1' } });
    expect(forced.status).toBe(200);
    try {
      const before = vapi.started;
      const open = await get('/vapi/call/s1');
      expect(open.status).toBe(200);
      expect(open.text).toBe(fresh.text);
      expect(open.headers['cache-status']).toMatch(/fwd=stale; ttl=-\d+; detail=stale-if-error/);
      expect(vapi.started).toBe(before);
      // Without a stale copy the breaker's own answer stands.
      const none = await get('/vapi/call/never-seen');
      expect(none.status).toBe(503);
      expect(none.headers['x-breakwater-error']).toBe('circuit_open');
    } finally {
      await request(p.adminPort, 'POST', '/breakers/vapi/reset', { headers: { 'x-breakwater-admin': '1' } });
      vapi.mode = 'ok';
    }
    const text = await metricsText(p.adminPort);
    expect(metricValue(text, 'breakwater_cache_requests_total', { upstream: 'vapi', route: 'call.fetch', result: 'stale' })).toBe(2);
    expect(p.logLines().some((l) => l.msg === 'served a stale cached answer: the upstream failed')).toBe(true);
  });

  it('a 5xx the retry stage does not read (a 500) is replaced by the stale copy before any of it is written', async () => {
    const fresh = await get('/vapi/call/s500');
    expect(fresh.status).toBe(200);
    await new Promise((r) => setTimeout(r, 400)); // past its 0.3 s TTL
    // A 500 with a large body: not a retry status, so it used to stream to the app as it came.
    vapi.handler = (_req, res) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'x'.repeat(200_000) }));
    };
    const failing = await get('/vapi/call/s500');
    expect(failing.status).toBe(200);
    expect(failing.text).toBe(fresh.text);
    expect(failing.headers['cache-status']).toMatch(/^Breakwater; fwd=stale; fwd-status=500; ttl=-\d+; detail=stale-if-error$/);
  });

  it('Lookups: line type and caller name are cached, fraud-signal fields never are', async () => {
    const lt = '/twilio/v2/PhoneNumbers/+15551230000?Fields=line_type_intelligence,caller_name';
    await get(lt);
    expect((await get(lt)).headers['cache-status']).toMatch(/hit/);
    const sim = '/twilio/v2/PhoneNumbers/+15551230000?Fields=line_type_intelligence,sim_swap';
    await get(sim);
    const again = await get(sim);
    expect(again.headers['cache-status']).toBe('Breakwater; fwd=bypass');
    expect(twilio.seen.filter((s) => s.url.includes('sim_swap')).length).toBe(2);
    expect(twilio.seen.filter((s) => s.url.includes('caller_name')).length).toBe(1);
  });
  it('does not store an answer larger than maxEntryBytes', async () => {
    vapi.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ pad: 'x'.repeat(200) }));
    };
    const a = await get('/vapi/phone-number/big');
    const b = await get('/vapi/phone-number/big');
    expect(b.text).toBe(a.text);
    expect(b.headers['cache-status']).toBe('Breakwater; fwd=miss');
    expect(upstreamGets('/phone-number/big')).toBe(2);
  });

  it("honours the response's Vary: another value of the named header is a miss", async () => {
    vapi.handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', vary: 'Accept-Language' });
      res.end(JSON.stringify({ lang: req.headers['accept-language'] ?? null }));
    };
    expect((await get('/vapi/assistant/v1', 'k1', 'GET', { 'accept-language': 'en' })).json.lang).toBe('en');
    expect((await get('/vapi/assistant/v1', 'k1', 'GET', { 'accept-language': 'en' })).headers['cache-status']).toMatch(/hit/);
    const fr = await get('/vapi/assistant/v1', 'k1', 'GET', { 'accept-language': 'fr' });
    expect(fr.json.lang).toBe('fr');
    expect(fr.headers['cache-status']).toBe('Breakwater; fwd=vary-miss');
    expect(upstreamGets('/assistant/v1')).toBe(2);
  });

  it('a waiter that waited waitTimeout goes upstream itself', async () => {
    twilio.mode = 'slow';
    twilio.delayMs = 700;
    try {
      const path = '/twilio/v2/PhoneNumbers/+15551239999?Fields=caller_name';
      const all = await Promise.all(Array.from({ length: 3 }, () => get(path)));
      expect(all.every((a) => a.status === 200)).toBe(true);
      // The leader plus two waiters that gave up after 0.2 s, long before its 0.7 s answer.
      expect(twilio.seen.filter((s) => s.url.includes('+15551239999')).length).toBe(3);
    } finally {
      twilio.mode = 'ok';
      twilio.delayMs = 0;
    }
  });
});
