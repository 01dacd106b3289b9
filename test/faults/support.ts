// Helpers shared by the fault, bad-input, slow-client and drain suites: raw sockets (for bytes
// node's own client refuses to send), a "victim" that must never be contacted, policy edits. Everything binds and connects to 127.0.0.1 only.
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { DEFAULT_POLICY } from '../support/proxy.js';

export const LOCAL = '127.0.0.1';

/** The default policy with `server:` settings set (replaced when present, else added). */
export function policyWithServer(lines: Record<string, number | string>, base = DEFAULT_POLICY): string {
  if (!/^server:\n/m.test(base)) throw new Error('policy has no server: block');
  let out = base;
  for (const [k, v] of Object.entries(lines)) {
    const line = new RegExp(`^  ${k}:.*$`, 'm');
    out = line.test(out) ? out.replace(line, `  ${k}: ${v}`) : out.replace(/^server:\n/m, `server:\n  ${k}: ${v}\n`);
  }
  return out;
}

export interface RawResult {
  /** Everything the server sent. */
  text: string;
  /** The first line of the answer ('' when none came). */
  statusLine: string;
  status: number | undefined;
  /** Socket error code, if any (ECONNRESET, EPIPE …). */
  error: string | undefined;
  /** True when the server closed the connection (rather than our own deadline). */
  closedByPeer: boolean;
}

/**
 * Sends `payload` on a fresh connection and collects the answer until the server closes the
 * connection, or `waitMs` passes, or (with `untilResponse`) a complete head has arrived.
 */
export function rawExchange(port: number, payload: string | Buffer, opts: { waitMs?: number; untilResponse?: boolean } = {}): Promise<RawResult> {
  const waitMs = opts.waitMs ?? 3000;
  return new Promise((resolve) => {
    const s = net.connect(port, LOCAL);
    let text = '';
    let error: string | undefined;
    let closedByPeer = false;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      const statusLine = text.split('\r\n')[0] ?? '';
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
      resolve({ text, statusLine, status: m ? Number(m[1]) : undefined, error, closedByPeer });
    };
    const timer = setTimeout(done, waitMs);
    s.on('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.untilResponse && text.includes('\r\n\r\n')) done();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
    });
    s.on('end', () => {
      closedByPeer = true;
    });
    s.on('close', () => {
      if (!error) closedByPeer = true;
      done();
    });
  });
}

/** Header value (case-insensitive name) from a raw HTTP answer. */
export function rawHeader(text: string, name: string): string | undefined {
  const head = text.split('\r\n\r\n')[0] ?? '';
  for (const line of head.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0 && line.slice(0, i).trim().toLowerCase() === name.toLowerCase()) return line.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * A TCP server that must never be reached: it counts connections and bytes. Used as the
 * destination of every attempt to steer the proxy somewhere that is not configured.
 */
export interface Victim {
  readonly port: number;
  connections: number;
  bytes: number;
  close(): Promise<void>;
}

export async function victim(): Promise<Victim> {
  const sockets = new Set<Socket>();
  const v = { port: 0, connections: 0, bytes: 0, close: async () => {} };
  const server = net.createServer((s) => {
    v.connections++;
    sockets.add(s);
    s.on('data', (d: Buffer) => (v.bytes += d.length));
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, LOCAL, r));
  v.port = (server.address() as AddressInfo).port;
  v.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return v;
}

/** Opens a connection and resolves once it is established (or fails). */
export function connectRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, LOCAL);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

export interface Fetched {
  status: number | undefined;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The response body arrived whole (false: the connection broke mid-body). */
  complete: boolean;
  /** Error code seen by the client (ECONNRESET, 'aborted', …), if any. */
  error: string | undefined;
}

/**
 * One request on a fresh connection that never rejects: a broken response (reset mid-body) is
 * reported as { status, complete: false, error } so a test can assert exactly what the app saw.
 */
export function fetchOnce(
  port: number,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<Fetched> {
  return new Promise((resolve) => {
    let settled = false;
    const out: Fetched = { status: undefined, headers: {}, text: '', complete: false, error: undefined };
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(out);
    };
    const req = http.request({ host: LOCAL, port, method, path, headers: opts.headers, agent: false }, (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        out.text = Buffer.concat(chunks).toString('utf8');
        out.complete = res.complete;
        finish();
      });
      res.on('aborted', () => (out.error ??= 'aborted'));
      res.on('error', (e: NodeJS.ErrnoException) => {
        out.text = Buffer.concat(chunks).toString('utf8');
        out.error ??= e.code ?? e.message;
        finish();
      });
      res.on('close', () => {
        out.text ||= Buffer.concat(chunks).toString('utf8');
        finish();
      });
    });
    const timer = setTimeout(() => {
      out.error ??= 'client-timeout';
      req.destroy();
      finish();
    }, opts.timeoutMs ?? 10_000);
    req.on('error', (e: NodeJS.ErrnoException) => {
      out.error ??= e.code ?? e.message;
      finish();
    });
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}
