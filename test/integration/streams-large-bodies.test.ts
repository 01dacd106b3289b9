// Bodies stream through Breakwater both ways with back-pressure: a 20 MiB response and a 20 MiB
// upload pass intact while the proxy's resident memory stays flat. The proxy runs as the real
// CLI in a child process so its RSS can be read from /proc/<pid>/status; the client and the
// upstream each stall for a moment, which is exactly when a buffering proxy would swallow the
// whole body.
import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, request, sleep } from '../support/proxy.js';
import { rssBytes, startCli, type CliProxy } from '../support/processes.js';
import { waitFor } from '../support/wait.mjs';

const GC_TICKER = fileURLToPath(new URL('../support/gc-ticker.cjs', import.meta.url));

const MiB = 1024 * 1024;
const TOTAL = 20 * MiB;
/** Well below the body size: a proxy that buffered the body would grow by at least 20 MiB. */
const MAX_GROWTH = 12 * MiB;
const BLOCK = randomBytes(MiB);
const EXPECTED = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < TOTAL / MiB; i++) h.update(BLOCK);
  return h.digest('hex');
})();

/**
 * The proxy's RSS once it stops moving: right after start-up V8 still holds (and then gives
 * back) memory from loading the code, which would otherwise blur the baseline.
 */
async function settledRss(pid: number): Promise<number> {
  let last = rssBytes(pid);
  let still = 0;
  for (let i = 0; i < 50 && still < 3; i++) {
    await sleep(100);
    const now = rssBytes(pid);
    still = Math.abs(now - last) < 256 * 1024 ? still + 1 : 0;
    last = now;
  }
  return last;
}

interface Upload {
  method: string;
  url: string;
  bytes: number;
  sha256: string;
  contentLength: string | undefined;
  transferEncoding: string | undefined;
}

/** Writes `total` bytes of BLOCK to a writable, honouring back-pressure. */
async function pump(w: NodeJS.WritableStream & { write(c: Buffer): boolean }, total: number, chunk = 64 * 1024): Promise<void> {
  for (let sent = 0, i = 0; sent < total && i < 1_000_000; i++) {
    const off = sent % MiB;
    const piece = BLOCK.subarray(off, Math.min(off + chunk, MiB, off + (total - sent)));
    sent += piece.length;
    if (!w.write(piece)) await new Promise((r) => w.once('drain', r));
  }
}

describe('streamed request and response bodies', () => {
  let upstream: http.Server;
  let upstreamUrl: string;
  let proxy: CliProxy;
  let dir: string;
  const uploads: Upload[] = [];
  let stallUploadsMs = 0;

  beforeAll(async () => {
    // An upstream that streams BLOCK for GET /download?mib=N and hashes whatever is uploaded.
    upstream = http.createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'GET' && url.pathname === '/download') {
        const total = Number(url.searchParams.get('mib') ?? '1') * MiB;
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
        void pump(res, total).then(() => res.end());
        return;
      }
      const h = createHash('sha256');
      let bytes = 0;
      const start = () => {
        req.on('data', (c: Buffer) => {
          h.update(c);
          bytes += c.length;
        });
        req.on('end', () => {
          uploads.push({
            method: req.method!,
            url: req.url!,
            bytes,
            sha256: h.digest('hex'),
            contentLength: req.headers['content-length'],
            transferEncoding: req.headers['transfer-encoding'],
          });
          res.writeHead(201, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ bytes }));
        });
      };
      // Not reading for a while fills the socket buffers: from then on only back-pressure keeps
      // the proxy from holding the rest of the upload in memory.
      if (stallUploadsMs > 0) {
        req.pause();
        setTimeout(() => {
          start();
          req.resume();
        }, stallUploadsMs);
      } else start();
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;

    dir = mkdtempSync(join(tmpdir(), 'bw-stream-'));
    const policyFile = join(dir, 'policy.yaml');
    // Uploads above the default 10 MiB limit need a larger one; everything else is as shipped.
    writeFileSync(policyFile, DEFAULT_POLICY.replace('maxBodyBytes: 10485760', `maxBodyBytes: ${32 * MiB}`));
    // RSS should show memory the proxy *retains*, not garbage or allocator slack: a GC every
    // 20 ms (the preloaded ticker), a 1 MB young generation, and large allocations served by
    // mmap (returned to the OS on free). With these, a correct proxy grows by a few MiB and one
    // that ignores back-pressure by 17–40 MiB on the same runs.
    proxy = await startCli(
      {
        TWILIO_BASE_URL: upstreamUrl,
        VAPI_BASE_URL: upstreamUrl,
        RATE_LIMIT_PER_MINUTE: '100000',
        NODE_OPTIONS: `--max-semi-space-size=1 --require ${GC_TICKER}`,
        GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=16384:glibc.malloc.trim_threshold=65536',
      },
      policyFile,
    );

    // Warm up the pool, the JIT and the heap before taking a baseline.
    for (let i = 0; i < 3; i++) {
      const r = await download(proxy.proxyPort, 2, 0);
      expect(r.status).toBe(200);
    }
  });

  afterAll(async () => {
    await proxy?.stop();
    if (upstream) {
      const closed = new Promise<void>((r) => upstream.close(() => r()));
      upstream.closeAllConnections();
      await closed;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** GETs /vapi/download?mib=N, pausing `stallMs` after the first chunk; samples the proxy's RSS meanwhile. */
  function download(
    port: number,
    mib: number,
    stallMs: number,
    onSample?: () => void,
  ): Promise<{ status: number; bytes: number; sha256: string; headers: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: `/vapi/download?mib=${mib}`, agent: false }, (res) => {
        const h = createHash('sha256');
        let bytes = 0;
        let stalled = false;
        const sampler = onSample ? setInterval(onSample, 10) : undefined;
        res.on('data', (c: Buffer) => {
          h.update(c);
          bytes += c.length;
          if (!stalled && stallMs > 0) {
            stalled = true;
            res.pause();
            setTimeout(() => res.resume(), stallMs);
          }
        });
        res.on('end', () => {
          clearInterval(sampler);
          onSample?.();
          resolve({ status: res.statusCode!, bytes, sha256: h.digest('hex'), headers: res.headers });
        });
        res.on('error', (e) => {
          clearInterval(sampler);
          reject(e);
        });
      });
      req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
      req.on('error', reject);
    });
  }

  function upload(
    port: number,
    method: string,
    path: string,
    total: number,
    chunked: boolean,
    onSample?: () => void,
  ): Promise<{ status: number; text: string; headers: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (!chunked) headers['content-length'] = String(total);
      const sampler = onSample ? setInterval(onSample, 10) : undefined;
      const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          clearInterval(sampler);
          onSample?.();
          resolve({ status: res.statusCode!, text, headers: res.headers });
        });
      });
      req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
      req.on('error', (e) => {
        clearInterval(sampler);
        reject(e);
      });
      void pump(req, total).then(() => req.end());
    });
  }

  it('passes a 20 MiB response through intact while the proxy RSS stays flat', async () => {
    const before = await settledRss(proxy.pid);
    let peak = before;
    const r = await download(proxy.proxyPort, 20, 400, () => {
      peak = Math.max(peak, rssBytes(proxy.pid));
    });
    expect(r.status).toBe(200);
    expect(r.headers['x-request-id']).toEqual(expect.any(String));
    expect(r.bytes).toBe(TOTAL);
    expect(r.sha256).toBe(EXPECTED);
    expect(peak - before, `RSS grew from ${before} to ${peak}`).toBeLessThan(MAX_GROWTH);
  });

  it('streams a 20 MiB upload with a Content-Length to the upstream intact, with flat memory', async () => {
    stallUploadsMs = 400;
    const n = uploads.length;
    const before = await settledRss(proxy.pid);
    let peak = before;
    const r = await upload(proxy.proxyPort, 'POST', '/vapi/files?kind=audio', TOTAL, false, () => {
      peak = Math.max(peak, rssBytes(proxy.pid));
    });
    stallUploadsMs = 0;
    expect(r.status).toBe(201);
    expect(uploads.length).toBe(n + 1);
    const seen = uploads.at(-1)!;
    expect(seen).toMatchObject({ method: 'POST', url: '/files?kind=audio', bytes: TOTAL, sha256: EXPECTED, contentLength: String(TOTAL) });
    expect(peak - before, `RSS grew from ${before} to ${peak}`).toBeLessThan(MAX_GROWTH);
  });

  it('streams a 20 MiB chunked upload (no Content-Length) intact, with flat memory', async () => {
    stallUploadsMs = 400;
    const n = uploads.length;
    const before = await settledRss(proxy.pid);
    let peak = before;
    const r = await upload(proxy.proxyPort, 'PUT', '/twilio/2010-04-01/Accounts/AC1/Media', TOTAL, true, () => {
      peak = Math.max(peak, rssBytes(proxy.pid));
    });
    stallUploadsMs = 0;
    expect(r.status).toBe(201);
    expect(uploads.length).toBe(n + 1);
    expect(uploads.at(-1)).toMatchObject({ method: 'PUT', url: '/2010-04-01/Accounts/AC1/Media', bytes: TOTAL, sha256: EXPECTED });
    expect(peak - before, `RSS grew from ${before} to ${peak}`).toBeLessThan(MAX_GROWTH);
  });

  it('keeps small bodies byte-exact too (the buffered path)', async () => {
    const body = 'To=%2B15555550100&From=%2B15555550111&Body=hello%20%F0%9F%8C%8A';
    const n = uploads.length;
    const r = await request(proxy.proxyPort, 'POST', '/twilio/2010-04-01/Accounts/AC1/Messages.json', {
      body,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(r.status).toBe(201);
    expect(uploads.length).toBe(n + 1);
    expect(uploads.at(-1)).toMatchObject({
      bytes: Buffer.byteLength(body),
      sha256: createHash('sha256').update(body).digest('hex'),
      contentLength: String(Buffer.byteLength(body)),
    });
  });

  it('is still serving after the large transfers', async () => {
    expect(proxy.child.exitCode).toBeNull();
    const r = await request(proxy.adminPort, 'GET', '/healthz');
    expect(r.status).toBe(200);
    // No request was cut short or failed along the way. Access lines are written in batches
    // (at most 50 ms late), so wait for all of them.
    const requestLines = () => proxy.logLines().filter((l) => l.msg === 'request');
    await waitFor(() => requestLines().length >= 7, { timeoutMs: 2000 });
    const statuses = requestLines().map((l) => l.status);
    expect(statuses.length).toBeGreaterThanOrEqual(7);
    expect(statuses.filter((s) => s !== 200 && s !== 201)).toEqual([]);
    expect(proxy.logLines().filter((l) => l.aborted !== undefined)).toEqual([]);
  });
});
