// The per-request access line, written by an encoder that knows its fields. Going through
// pino's generic path (an object built per request, every key walked, redaction checked, each
// value stringified, the pieces concatenated, the result flattened and encoded) cost about
// 9 µs per request, the largest single item of the sidecar's own budget. The line is
// byte-for-byte what pino would write: its level prefix, time, bindings and message key are read
// once from the logger, and the line goes to the logger's own destination, in order with every
// other line. On Breakwater's own stdout (BatchedStdout) the line is encoded straight into the
// batch buffer: no string is built for it at all, so it leaves no garbage behind.
import pino, { type Logger } from 'pino';
import type { Exchange } from './pipeline/exchange.js';
import { BatchedStdout } from './log.js';

export type AccessLine = (ex: Exchange, upstream: string, status: number, outcome: string, seconds: number) => void;

interface PinoInternals {
  [key: symbol]: unknown;
}

/** Bytes a line can take besides its variable strings (every key, number and the constants). */
const FIXED_BYTES = 512;

export function accessLog(log: Logger): AccessLine {
  const s = pino.symbols;
  const internals = log as unknown as PinoInternals;
  const levelPrefix = Buffer.from((internals[s.lsCacheSym] as Record<number, string>)[log.levels.values.info!]!);
  const time = internals[s.timeSym] as () => string;
  const bindings = Buffer.from(internals[s.chindingsSym] as string);
  const end = Buffer.from(`,${JSON.stringify(internals[s.messageKeySym])}:"request"${internals[s.endSym] as string}`);
  const stream = internals[s.streamSym] as { write(line: string): unknown };
  const batched = stream instanceof BatchedStdout ? stream : undefined;
  const head = FIXED_BYTES + levelPrefix.length + bindings.length + end.length;
  // The time string changes once per millisecond at most (see isoTime): encode it once per change.
  let lastTime = '';
  let timeBytes = Buffer.alloc(0);
  let scratch = Buffer.allocUnsafe(4096);

  function encode(buf: Buffer, at: number, ex: Exchange, upstream: string, status: number, outcome: string, seconds: number): number {
    const t = time();
    if (t !== lastTime) {
      lastTime = t;
      timeBytes = Buffer.from(t);
    }
    let o = at;
    buf.set(levelPrefix, o);
    o += levelPrefix.length;
    buf.set(timeBytes, o);
    o += timeBytes.length;
    buf.set(bindings, o);
    o += bindings.length;
    // reqId (validated or a UUID), upstream and route (policy names), method (an HTTP token)
    // and outcome (a catalog code) cannot hold a quote, backslash or control character.
    o = ascii(buf, o, ',"reqId":"');
    o = ascii(buf, o, ex.requestId);
    o = ascii(buf, o, '","upstream":"');
    o = ascii(buf, o, upstream);
    o = ascii(buf, o, '","route":"');
    o = ascii(buf, o, ex.route);
    o = ascii(buf, o, '","method":"');
    o = ascii(buf, o, ex.method);
    o = ascii(buf, o, '","status":');
    o = num(buf, o, status);
    o = ascii(buf, o, ',"outcome":"');
    o = ascii(buf, o, outcome);
    o = ascii(buf, o, '","durationMs":');
    o = tenths(buf, o, Math.round(seconds * 1e4));
    o = ascii(buf, o, ',"upstreamMs":');
    o = tenths(buf, o, Math.round(ex.upstreamSeconds * 1e4));
    o = ascii(buf, o, ',"bytesIn":');
    o = num(buf, o, ex.body?.length ?? (Number(ex.req.headers['content-length']) || 0));
    if (ex.bytesOut > 0) {
      o = ascii(buf, o, ',"bytesOut":');
      o = num(buf, o, ex.bytesOut);
    }
    // Every field is a value Breakwater produced or validated (ids, names, numbers): none can
    // carry a credential, so there is nothing to redact (a test keeps it that way). The ones
    // below come from a client or an upstream and are escaped.
    if (ex.clientKey !== '') {
      o = ascii(buf, o, ',"client":');
      o = jsonString(buf, o, ex.clientKey);
    }
    if (ex.retries > 0) {
      o = ascii(buf, o, ',"retries":');
      o = num(buf, o, ex.retries);
    }
    if (ex.upstreamRequestId !== undefined) {
      o = ascii(buf, o, ',"twilioRequestId":');
      o = jsonString(buf, o, ex.upstreamRequestId);
    }
    if (ex.cause !== undefined) {
      o = ascii(buf, o, ',"cause":');
      o = jsonString(buf, o, ex.cause);
    }
    if (ex.aborted !== undefined) {
      o = ascii(buf, o, ',"aborted":');
      o = jsonString(buf, o, ex.aborted);
    }
    buf.set(end, o);
    return o + end.length;
  }

  return function writeAccessLine(ex, upstream, status, outcome, seconds) {
    // The most the line can take: escaping turns a character into at most 6 bytes.
    const max = head + 6 * (ex.requestId.length + upstream.length + ex.route.length + ex.method.length + outcome.length + ex.clientKey.length + (ex.upstreamRequestId?.length ?? 0) + (ex.cause?.length ?? 0) + (ex.aborted?.length ?? 0));
    const at = batched ? batched.claim(max) : -1;
    if (batched && at >= 0) {
      batched.commit(encode(batched.buffer, at, ex, upstream, status, outcome, seconds));
      return;
    }
    if (scratch.length < max) scratch = Buffer.allocUnsafe(max);
    stream.write(scratch.toString('utf8', 0, encode(scratch, 0, ex, upstream, status, outcome, seconds)));
  };
}

/** Copies a string known to be ASCII, one byte per character. */
function ascii(buf: Buffer, at: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i);
  return at + s.length;
}

/** Printable ASCII without `"` and `\`: the usual value, quoted as it is. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A JSON string literal, encoded as UTF-8. */
function jsonString(buf: Buffer, at: number, v: string): number {
  if (!PLAIN.test(v)) return at + buf.write(JSON.stringify(v), at, 'utf8');
  buf[at] = 34; // "
  const o = ascii(buf, at + 1, v);
  buf[o] = 34;
  return o + 1;
}

/** A JSON string literal exactly as the access line encodes it (for tests and one-off use). */
export function str(v: string): string {
  const buf = Buffer.allocUnsafe(6 * v.length + 2);
  return buf.toString('utf8', 0, jsonString(buf, 0, v));
}

/** A number as JavaScript prints it; the digits written directly for the usual non-negative integers. */
function num(buf: Buffer, at: number, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) return ascii(buf, at, String(n));
  let digits = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
  let m = n;
  for (let p = at + digits - 1; p >= at; p--) {
    buf[p] = 48 + (m % 10);
    m = Math.floor(m / 10);
  }
  return at + digits;
}

/** `n / 10` as JavaScript prints it (`123` → `12.3`, `120` → `12`), for a count of tenths. */
function tenths(buf: Buffer, at: number, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) return ascii(buf, at, String(n / 10));
  const o = num(buf, at, Math.floor(n / 10));
  const d = n % 10;
  if (d === 0) return o;
  buf[o] = 46; // .
  buf[o + 1] = 48 + d;
  return o + 2;
}
