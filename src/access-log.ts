// The per-request access line, written by an encoder that knows its fields. Going through
// pino's generic path (an object built per request, every key walked, redaction checked, each
// value stringified, the pieces concatenated, the result flattened and encoded) was the largest
// single item of the sidecar's own per-request cost (README, design notes). The line is
// byte-for-byte what pino would write: its level prefix, time, bindings and message key are read
// once from the logger, and the line goes to the logger's own destination, in order with every
// other line. On Breakwater's own stdout (BatchedStdout) the line is encoded straight into the
// batch buffer: no string is built for it at all, so it leaves no garbage behind.
import pino, { type Logger } from 'pino';
import type { Exchange } from './pipeline/exchange.js';
import { maskKey } from './pipeline/keys.js';
import { BatchedStdout, isoTime, timeKeyAndSecond } from './log.js';
import { tracing } from './tracing.js';

/**
 * The access log of one logger. Most of a line is the same for every request of one (upstream,
 * route, method, status, outcome): the caller asks for that middle once per such series
 * (`segment`) and keeps it beside the series' metric children, so a line is a few block copies
 * and the per-request values. Encoding each field byte by byte cost about 2 ns a character on
 * the request path, several hundred ns a line.
 */
export interface AccessLog {
  /** The fixed middle of the lines of one series (`"upstream":…,"durationMs":`). Cache it. */
  segment(upstream: string, route: string, method: string, status: number, outcome: string): Buffer;
  write(ex: Exchange, segment: Buffer, seconds: number): void;
}

interface PinoInternals {
  [key: symbol]: unknown;
}

/** Bytes a line can take besides its head, segment and escaped strings (keys and numbers). */
const FIXED_BYTES = 256;
// Short keys are copied by ascii(): TypedArray#set has a fixed cost per call that is several
// times a short key's copy loop.
const UPSTREAM_MS = ',"upstreamMs":';
const BYTES_IN = ',"bytesIn":';
const BYTES_OUT = ',"bytesOut":';
const CLIENT = ',"client":';

export function accessLog(log: Logger): AccessLog {
  const s = pino.symbols;
  const internals = log as unknown as PinoInternals;
  const levelPrefix = Buffer.from((internals[s.lsCacheSym] as Record<number, string>)[log.levels.values.info!]!);
  const time = internals[s.timeSym] as () => string;
  const bindingsAndId = Buffer.from(`${internals[s.chindingsSym] as string},"reqId":"`);
  const end = Buffer.from(`,${JSON.stringify(internals[s.messageKeySym])}:"request"${internals[s.endSym] as string}`);
  const stream = internals[s.streamSym] as { write(line: string): unknown };
  const batched = stream instanceof BatchedStdout ? stream : undefined;
  // Level, time, bindings and the reqId key. With Breakwater's own timestamp the level and the
  // time up to the second are one cached block, rebuilt once a second, and the milliseconds are
  // written as digits: a sidecar at tens of requests a second sees a new millisecond on nearly
  // every line, so a head cached per millisecond (string, Buffer.from, Buffer.concat) was rebuilt
  // per line. Another timestamp function (tests) gets the head rebuilt whenever its value changes.
  const ownTime = time === isoTime;
  let second = Number.NaN;
  let lastTime = '';
  let head = Buffer.alloc(0);
  let scratch = Buffer.allocUnsafe(4096);
  // Everything a line can take besides the time and its per-request strings, summed once.
  const fixed = FIXED_BYTES + levelPrefix.length + 64 + bindingsAndId.length + end.length;

  function encode(buf: Buffer, at: number, ex: Exchange, segment: Buffer, seconds: number): number {
    let o: number;
    if (ownTime) {
      const now = Date.now();
      let ms = now - second;
      if (!(ms >= 0 && ms < 1000)) {
        ms = now % 1000;
        second = now - ms;
        head = Buffer.from(levelPrefix.toString('latin1') + timeKeyAndSecond(second), 'latin1');
      }
      buf.set(head, at);
      o = at + head.length;
      buf[o] = 48 + Math.floor(ms / 100);
      buf[o + 1] = 48 + (Math.floor(ms / 10) % 10);
      buf[o + 2] = 48 + (ms % 10);
      buf[o + 3] = 90; // Z
      buf[o + 4] = 34; // "
      buf.set(bindingsAndId, o + 5);
      o += 5 + bindingsAndId.length;
    } else {
      const t = time();
      if (t !== lastTime) {
        lastTime = t;
        head = Buffer.concat([levelPrefix, Buffer.from(t), bindingsAndId]);
      }
      buf.set(head, at);
      o = at + head.length;
    }
    // The reqId is validated or a UUID: no quote, backslash or control character. Copied natively:
    // cheaper than a character loop at this length.
    o += (buf as unknown as LatinWriter).latin1Write(ex.requestId, o);
    buf.set(segment, o);
    o = tenths(buf, o + segment.length, Math.round(seconds * 1e4));
    o = tenths(buf, ascii(buf, o, UPSTREAM_MS), Math.round(ex.upstreamSeconds * 1e4));
    o = num(buf, ascii(buf, o, BYTES_IN), ex.body?.length ?? (Number(ex.req.headers['content-length']) || 0));
    if (ex.bytesOut > 0) {
      o = num(buf, ascii(buf, o, BYTES_OUT), ex.bytesOut);
    }
    // Every field is a value Breakwater produced or validated (ids, names, numbers): none can
    // carry a credential, so there is nothing to redact (a test keeps it that way). The ones
    // below come from a client or an upstream and are escaped.
    if (ex.clientKey !== '') {
      o = jsonString(buf, ascii(buf, o, CLIENT), loggedClient(ex.clientKey));
    }
    if (ex.cache !== undefined) {
      o = ascii(buf, o, ',"cache":"');
      o = ascii(buf, o, ex.cache);
      buf[o++] = 34;
    }
    if (ex.retries > 0) {
      o = ascii(buf, o, ',"retries":');
      o = num(buf, o, ex.retries);
    }
    if (ex.upstreamRequestId !== undefined) {
      o = ascii(buf, o, ',"twilioRequestId":');
      o = jsonString(buf, o, ex.upstreamRequestId);
    }
    const traceId = tracing?.traceId(ex);
    if (traceId !== undefined) {
      o = ascii(buf, o, ',"trace_id":"');
      o = ascii(buf, o, traceId);
      buf[o++] = 34;
    }
    if (ex.upstreamErrorCode !== undefined) {
      o = ascii(buf, o, ',"upstreamErrorCode":');
      o = jsonString(buf, o, ex.upstreamErrorCode);
    }
    if (ex.cause !== undefined) {
      o = ascii(buf, o, ',"cause":');
      o = jsonString(buf, o, ex.cause);
    }
    if (ex.probeHost !== undefined) {
      o = ascii(buf, o, ',"probeHost":');
      o = jsonString(buf, o, ex.probeHost);
    }
    if (ex.aborted !== undefined) {
      o = ascii(buf, o, ',"aborted":');
      o = jsonString(buf, o, ex.aborted);
    }
    buf.set(end, o);
    return o + end.length;
  }

  return {
    segment(upstream, route, method, status, outcome) {
      // Escaped here, once: policy names and catalog codes need none, but nothing relies on it.
      const middle = `","upstream":${JSON.stringify(upstream)},"route":${JSON.stringify(route)},"method":${JSON.stringify(method)},"status":${status},"outcome":${JSON.stringify(outcome)},"durationMs":`;
      return Buffer.from(middle); // led by the closing quote of the reqId
    },
    write(ex, segment, seconds) {
      // The most the line can take: escaping turns a character into at most 6 bytes.
      const max =
        fixed +
        96 +
        // `,"cache":"revalidated"`
        24 +
        lastTime.length * 3 +
        segment.length +
        6 *
          (ex.requestId.length +
            ex.clientKey.length +
            (ex.upstreamRequestId?.length ?? 0) +
            (ex.upstreamErrorCode?.length ?? 0) +
            48 +
            (ex.cause?.length ?? 0) +
            (ex.aborted?.length ?? 0) +
            (ex.probeHost?.length ?? 0));
      const at = batched ? batched.claim(max) : -1;
      if (batched && at >= 0) {
        batched.commit(encode(batched.buffer, at, ex, segment, seconds));
        return;
      }
      if (scratch.length < max) scratch = Buffer.allocUnsafe(max);
      stream.write(scratch.toString('utf8', 0, encode(scratch, 0, ex, segment, seconds)));
    },
  };
}

/** Node's one-byte copy (Buffer#write(s, at, 'latin1') without the encoding lookup), not in @types/node. */
interface LatinWriter {
  latin1Write(s: string, at: number): number;
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

/**
 * A client id as the access line shows it: an app may use a phone number or a Twilio SID as its
 * `X-Client-Id`, and neither is written whole. Peer addresses (a '.' or ':' in them) pass untouched
 * without a regular expression, which keeps the common line as cheap as before.
 */
function loggedClient(c: string): string {
  const first = c.charCodeAt(0);
  if (first === 43 /* + */ || c.length >= 34) return maskKey(c);
  if (first >= 48 && first <= 57 && !c.includes('.') && !c.includes(':')) return maskKey(c);
  return c;
}
