// The per-request access line, written by a serializer that knows its fields. Going through
// pino's generic path (an object built per request, every key walked, redaction checked, each
// value stringified, then concatenated) cost about 9 µs per request, the largest single item
// of the sidecar's own budget; this costs about one. The line is byte-for-byte what pino would
// write: its level prefix, time, bindings and message key are read once from the logger, and
// the line goes to the logger's own destination, in order with every other line.
import pino, { type Logger } from 'pino';
import type { Exchange } from './pipeline/exchange.js';

export type AccessLine = (ex: Exchange, upstream: string, status: number, outcome: string, seconds: number) => void;

interface PinoInternals {
  [key: symbol]: unknown;
}

export function accessLog(log: Logger): AccessLine {
  const s = pino.symbols;
  const internals = log as unknown as PinoInternals;
  const levelPrefix = (internals[s.lsCacheSym] as Record<number, string>)[log.levels.values.info!]!;
  const time = internals[s.timeSym] as () => string;
  const bindings = internals[s.chindingsSym] as string;
  const end = `,${JSON.stringify(internals[s.messageKeySym])}:"request"${internals[s.endSym] as string}`;
  const stream = internals[s.streamSym] as { write(line: string): unknown };

  return function writeAccessLine(ex, upstream, status, outcome, seconds) {
    // Every field is a value Breakwater produced or validated (ids, names, numbers): none can
    // carry a credential, so there is nothing to redact (a test keeps it that way).
    // reqId (validated or a UUID), upstream and route (policy names), method (an HTTP token)
    // and outcome (a catalog code) cannot hold a quote, backslash or control character.
    let line = `${levelPrefix}${time()}${bindings},"reqId":"${ex.requestId}","upstream":"${upstream}","route":"${ex.route}","method":"${ex.method}","status":${status},"outcome":"${outcome}","durationMs":${Math.round(seconds * 1e4) / 10},"upstreamMs":${Math.round(ex.upstreamSeconds * 1e4) / 10},"bytesIn":${ex.body?.length ?? (Number(ex.req.headers['content-length']) || 0)}`;
    if (ex.bytesOut > 0) line += `,"bytesOut":${ex.bytesOut}`;
    if (ex.clientKey !== '') line += `,"client":${str(ex.clientKey)}`;
    if (ex.retries > 0) line += `,"retries":${ex.retries}`;
    if (ex.upstreamRequestId !== undefined) line += `,"twilioRequestId":${str(ex.upstreamRequestId)}`;
    if (ex.cause !== undefined) line += `,"cause":${str(ex.cause)}`;
    if (ex.aborted !== undefined) line += `,"aborted":${str(ex.aborted)}`;
    stream.write(line + end);
  };
}

/** Printable ASCII without `"` and `\`: the usual value, quoted as it is. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A JSON string literal. */
export function str(v: string): string {
  return PLAIN.test(v) ? `"${v}"` : JSON.stringify(v);
}
