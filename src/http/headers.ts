// Header handling precomputed at module load: hop-by-hop names, headers that only Breakwater
// reads, and the two lists built per request (to the upstream, to the client).
import type { IncomingMessage } from 'node:http';
import type { Exchange } from '../pipeline/exchange.js';
import { proxyError, type ProxyError } from '../errors.js';

/**
 * The methods the Twilio and Vapi APIs use. TRACE would echo the request, injected credentials
 * included (RFC 9110 §9.3.8), and CONNECT is refused on the wire.
 */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Request-level refusals that come before routing: method, header count, framing. */
export function requestProblem(req: IncomingMessage, maxHeaders: number): ProxyError | undefined {
  if (!METHODS.has(req.method ?? ''))
    return proxyError('method_not_allowed', { message: `${req.method} is not supported; use one of ${[...METHODS].join(', ')}.` });
  // The listener keeps one line more than the limit (process/client-listener.ts), so "more" is visible here.
  if (req.rawHeaders.length > maxHeaders * 2) return proxyError('headers_too_large', { message: `More than ${maxHeaders} header lines.` });
  const te = req.headers['transfer-encoding'];
  // RFC 9112 §6.1 would answer 501 to an unknown coding; the catalog's only 501 is stub_missing,
  // so this is bad_request (400). Relaying a body still gzip- or compress-coded as if it were
  // plain would hand the upstream different bytes from the ones the client meant.
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked')
    return proxyError('bad_request', { message: 'Transfer-Encoding other than chunked is not supported.' });
  return undefined;
}

// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still strip.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * `s` stored one byte per character. Strings cut from a policy file holding any character beyond
 * Latin-1 (the shipped one has "→" in its comments) are kept by V8 two bytes per character, and
 * so is every string built from them: each access line, the RateLimit fields. Writing such a
 * line costs a flattening copy and the slow path of UTF-8 encoding, about 10 µs per request in
 * total. Names are ASCII by the schema, so a Latin-1 copy is exact; anything wider is returned as is.
 */
export function oneByte(s: string): string {
  return LATIN1.test(s) ? Buffer.from(s, 'latin1').toString('latin1') : s;
}
const LATIN1 = /^[\x00-\xff]*$/;

export function isHopByHop(name: string): boolean {
  // Most headers are longer than every hop-by-hop name but two; skip the lowercase for them.
  return name.length <= 19 && HOP_BY_HOP.has(name.toLowerCase());
}

/**
 * Request headers never forwarded: the ones Breakwater sets itself (host, forwarding, correlation),
 * and routing hints some servers honour (X-Original-URL, X-Rewrite-URL) that must not let a
 * client steer anything behind us.
 */
const DROP_REQUEST = new Set([
  'host',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'forwarded',
  'x-original-url',
  'x-rewrite-url',
  'authorization',
  'content-length',
  'expect',
]);

/** The flat [name, value, …] list sent upstream; built once, reused by every retry attempt. */
export function upstreamRequestHeaders(ex: Exchange, drop: ReadonlySet<string>): string[] {
  if (ex.outHeaders) return ex.outHeaders;
  const raw = ex.req.rawHeaders;
  const out: string[] = [];
  let connectionTokens: string | undefined;
  let xff: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower === 'connection') connectionTokens = raw[i + 1];
    if (lower === 'x-forwarded-for') xff = xff === undefined ? raw[i + 1] : `${xff}, ${raw[i + 1]}`;
    if (HOP_BY_HOP.has(lower) || DROP_REQUEST.has(lower) || drop.has(lower)) continue;
    // `X_Forwarded_For` is `X-Forwarded-For` to servers that map both to one CGI variable, so a
    // name with `_` could pass a header this list drops: never relayed (nginx's
    // underscores_in_headers off).
    if (name.includes('_')) continue;
    out.push(name, raw[i + 1]!);
  }
  if (connectionTokens) {
    // Headers named in Connection are hop-by-hop for this request only (RFC 9110 §7.6.1).
    const named = new Set(
      connectionTokens
        .toLowerCase()
        .split(',')
        .map((s) => s.trim()),
    );
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  out.push('host', ex.host, 'x-request-id', ex.requestId);
  out.push('x-forwarded-for', xff ? `${xff}, ${ex.req.socket.remoteAddress ?? ''}` : (ex.req.socket.remoteAddress ?? ''));
  out.push('x-forwarded-proto', 'http');
  if (ex.authorization !== undefined) out.push('authorization', ex.authorization);
  // The app sent no conditional (the cache passes those through untouched): these are the cache's.
  if (ex.revalidate !== undefined) {
    if (ex.revalidate.etag !== undefined) out.push('if-none-match', ex.revalidate.etag);
    else if (ex.revalidate.lastModified !== undefined) out.push('if-modified-since', ex.revalidate.lastModified);
  }
  if (ex.body !== undefined) out.push('content-length', String(ex.body.length));
  else if (ex.bodyStream !== undefined && ex.req.headers['content-length'] !== undefined) out.push('content-length', ex.req.headers['content-length']);
  ex.outHeaders = out;
  return out;
}

/**
 * Response headers an upstream may not set: Breakwater's own (an upstream's X-Breakwater-Error
 * would pass its answer off as one of ours, to the SDKs and to alerting) and the idempotency
 * replay mark.
 */
export function isOursOnly(name: string): boolean {
  if (name.length < 13) return false;
  const lower = name.toLowerCase();
  return lower.startsWith('x-breakwater-') || lower === 'idempotent-replayed';
}

/**
 * A lower-cased upstream response header name that is never relayed: hop-by-hop, Breakwater's own
 * (isOursOnly) or the correlation id Breakwater sets itself. One test per header, on one
 * lower-casing: each check lower-casing for itself was a few lower-casings per header.
 */
export function droppedFromResponse(lower: string): boolean {
  return HOP_BY_HOP.has(lower) || lower === 'x-request-id' || (lower.length >= 13 && (lower.startsWith('x-breakwater-') || lower === 'idempotent-replayed'));
}

/**
 * The lower-case names a `Connection` header in a raw [name, value, …] list makes hop-by-hop
 * (RFC 9110 §7.6.1), or undefined when it names none beyond the usual keep-alive/close.
 */
export function connectionNamed(raw: Buffer[]): Set<string> | undefined {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length !== 10 || k.toString('latin1').toLowerCase() !== 'connection') continue;
    const v = raw[i + 1]!.toString('latin1');
    // The usual value, without splitting it.
    if (v === 'keep-alive' || v === 'close') continue;
    for (const t of v.split(',')) {
      const token = t.trim().toLowerCase();
      if (token !== '' && token !== 'keep-alive' && token !== 'close') (named ??= new Set()).add(token);
    }
  }
  return named;
}

/** The headers Breakwater adds to every response it relays: correlation, rate limit, retries. */
export function responseHeaderPrelude(ex: Exchange): string[] {
  const out = ['x-request-id', ex.requestId];
  if (ex.rateLimit !== undefined) out.push('ratelimit', ex.rateLimit);
  if (ex.rateLimitPolicy !== undefined) out.push('ratelimit-policy', ex.rateLimitPolicy);
  if (ex.retries > 0) out.push('x-breakwater-retries', String(ex.retries));
  return out;
}
