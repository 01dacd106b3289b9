// The per-request state that flows through the stages, and the Reply a stage returns.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { proxyError, type ProxyError } from '../errors.js';
import type { RouteTable } from '../routing/route-table.js';
import { BufferedBody, type Body } from './body.js';

/**
 * An answer at its head, its body not yet read: from the upstream (forward), a store (the
 * idempotency replay, the cache) or a stub. Stages above forward may look at it, wrap its body
 * or replace it (discarding the body they drop) before the one writer sends it to the client.
 */
export interface Answer {
  readonly kind: 'answer';
  readonly status: number;
  /** Headers to relay, flat `[name, value, …]` (names as the upstream spelt them); the proxy's own are added when written. */
  readonly headers: readonly string[];
  readonly body: Body;
  readonly source: 'forwarded' | 'stub' | 'replayed' | 'cached';
}

// Headers a stored header set never carries into a new delivery: recomputed for it.
const RECOMPUTED = new Set(['content-length', 'x-request-id', 'transfer-encoding', 'connection']);

/** An answer from memory (a stored answer, a stub): its headers as an object, then `extra`. */
export function bufferedAnswer(
  status: number,
  headers: Readonly<Record<string, string | string[]>>,
  body: Buffer,
  source: Answer['source'],
  extra?: readonly string[],
): Answer {
  const out: string[] = [];
  for (const k in headers) {
    if (RECOMPUTED.has(k)) continue;
    const v = headers[k]!;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, v);
  }
  if (extra !== undefined) out.push(...extra);
  return { kind: 'answer', status, headers: out, body: new BufferedBody(body), source };
}

/** An answer's headers as an object, names in lower case, repeated ones as arrays (what a store keeps). */
export function headerObject(a: Answer): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const h = a.headers;
  for (let i = 0; i < h.length; i += 2) {
    const key = h[i]!.toLowerCase();
    const value = h[i + 1]!;
    const prev = out[key];
    out[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

/** A transport failure talking to the upstream; `sentBody` false means it certainly never left. */
export interface Failed {
  readonly kind: 'failed';
  readonly error: ProxyError;
  /** `client`: the app went away before the answer began (not the upstream's doing). */
  readonly cause: 'connect' | 'timeout' | 'reset' | 'client';
  readonly mayHaveReachedUpstream: boolean;
}

export type Reply = Answer | Failed | ProxyError;

/** The value of a header of an answer (the first, if repeated). */
export function answerHeader(a: Answer, name: string): string | undefined {
  const h = a.headers;
  for (let i = 0; i < h.length; i += 2) if (h[i]!.length === name.length && h[i]!.toLowerCase() === name) return h[i + 1];
  return undefined;
}

/** The same answer with headers added (a stage's own, such as Cache-Status). */
export function withHeaders(a: Answer, extra: readonly string[]): Answer {
  return { kind: 'answer', status: a.status, headers: [...a.headers, ...extra], body: a.body, source: a.source };
}

/** What the client sent. Writer: the server, at arrival (newExchange). */
export interface ClientSent {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** performance.now() at arrival. */
  readonly start: number;
  /** The app's X-Request-Id when valid, else a new one (correlation, at arrival). */
  readonly requestId: string;
  readonly method: string;
  /** Path as received, without the query. */
  readonly path: string;
  /** `?…` or ''. */
  readonly query: string;
}

/** Where the request goes. Writer: routing (proxy.ts `route`), before any stage. */
export interface Routed {
  /** The upstream routing chose: what a request may know of it. */
  upstream: UpstreamRef | undefined;
  /** Route name from the policy: the only route label metrics ever carry. */
  route: string;
  /** Upstream path without the query: what route patterns match. */
  routePath: string;
  /** Path and query to send upstream (prefix stripped). */
  upstreamPath: string;
  /** Origin to dispatch to (`https://api.twilio.com`). */
  origin: string;
  /** Host header for the upstream. */
  host: string;
  /** The sanitised server a forward-proxy attempt named (set on refusing one), for the access line. */
  probeHost: string | undefined;
}

/** What the cache stage did with a request, as counted and logged. */
export type CacheResult = 'hit' | 'miss' | 'stale' | 'coalesced' | 'bypass' | 'revalidated';

/** What the stages decided. Each field names its one writer. */
export interface Decided {
  /** Writer: client identity. The rate-limit and idempotency scope of the caller. */
  clientKey: string;
  /** Writer: client identity. Peer address (after trusted X-Forwarded-For). */
  clientIp: string;
  /** Writer: credentials. The Authorization header as sent upstream (after injection); undefined: none. */
  authorization: string | undefined;
  /** Writer: request body. A small body read whole (retryable, hashable); undefined when streamed or absent. */
  body: Buffer | undefined;
  /** Writer: request body. The request carries a body that is streamed (too large to buffer). */
  streamed: boolean;
  /**
   * Writer: request body; the idempotency stage replaces it with a hashing copy of itself. A large
   * request body, streamed (with its size enforced) rather than buffered.
   */
  bodyStream: AsyncIterable<Buffer> | NodeJS.ReadableStream | undefined;
  /** Writer: keys.ts `bodyField`, on first use. Parsed body fields (null: none or unparsable). */
  fields: URLSearchParams | Record<string, unknown> | null | undefined;
  /** Writer: rate limit. `RateLimit` field value for the response, when a limit applied. */
  rateLimit: string | undefined;
  rateLimitPolicy: string | undefined;
  /** Writers: retry, and the hold's one send after a 429. Attempts after the first (X-Breakwater-Retries). */
  retries: number;
  /** Writer: hold. It has sent a 429 again after its hold (at most once a request). */
  resent: boolean;
  /**
   * Writer: idempotency. The answer is kept for the key's retries: forward reads it whole even if
   * the app leaves (nginx's proxy_ignore_client_abort), so a retry learns what really happened.
   */
  keepsAnswer: boolean;
  /**
   * Writer: cache, when it revalidates a stale copy. The validators sent upstream as
   * If-None-Match / If-Modified-Since.
   */
  revalidate: { readonly etag: string | undefined; readonly lastModified: string | undefined } | undefined;
  /** Writer: cache. What the cache did with the request (hit, miss, stale, …), for the access line; undefined: not a cached route. */
  cache: CacheResult | undefined;
  /** Writer: headers.ts `upstreamRequestHeaders`. Header list sent upstream, built once and reused by retries. */
  outHeaders: string[] | undefined;
}

/** What the upstream answered and what reached the client: read by the access line and metrics. */
export interface Answered {
  /** Writer: forward. Seconds spent waiting on the upstream (all attempts). */
  upstreamSeconds: number;
  /** Writer: the reply writer. Why a proxy-made error happened (an undici error code, say). */
  cause: string | undefined;
  /** Writer: the reply writer. The upstream's own request id (Twilio-Request-Id). */
  upstreamRequestId: string | undefined;
  /** Writer: the reply writer. The head of a non-2xx upstream body (at most ERROR_HEAD_LIMIT bytes). */
  errorHead: Buffer | undefined;
  /** Writer: proxy.ts, from errorHead. The provider's error code of that body (upstream-errors.ts). */
  upstreamErrorCode: string | undefined;
  /** Writer: the reply writer. Set when the response broke after its head was relayed: why. */
  aborted: string | undefined;
  /** Writer: the reply writer. Response body bytes relayed to the client. */
  bytesOut: number;
}

export interface Exchange extends ClientSent, Routed, Decided, Answered {}

/**
 * A fresh exchange. Every field exists from the start, so all exchanges share one hidden class
 * and the stages' property reads stay monomorphic.
 */
export function newExchange(
  req: IncomingMessage,
  res: ServerResponse,
  start: number,
  requestId: string,
  method: string,
  path: string,
  query: string,
): Exchange {
  return {
    req,
    res,
    start,
    requestId,
    method,
    path,
    query,
    upstream: undefined,
    route: 'unmatched',
    routePath: '',
    upstreamPath: '',
    origin: '',
    host: '',
    probeHost: undefined,
    clientKey: '',
    clientIp: '',
    authorization: undefined,
    body: undefined,
    streamed: false,
    bodyStream: undefined,
    fields: undefined,
    rateLimit: undefined,
    rateLimitPolicy: undefined,
    retries: 0,
    resent: false,
    keepsAnswer: false,
    revalidate: undefined,
    cache: undefined,
    outHeaders: undefined,
    upstreamSeconds: 0,
    cause: undefined,
    upstreamRequestId: undefined,
    errorHead: undefined,
    upstreamErrorCode: undefined,
    aborted: undefined,
    bytesOut: 0,
  };
}

/**
 * Nothing written now would reach the app: it hung up (its response or, pipelined, its socket is
 * destroyed), or the server already ended the connection (a raw 408 or 400 from Node's parser).
 */
export function clientGone(ex: Exchange): boolean {
  const socket = ex.req.socket as IncomingMessage['socket'] | null | undefined;
  return ex.res.destroyed || socket?.destroyed === true || socket?.writable === false;
}

/** A reply for a request whose app left before anything was sent for it (not upstream, not to the app). */
export function goneBeforeSending(ex: Exchange, where: string): Failed {
  return {
    kind: 'failed',
    cause: 'client',
    mayHaveReachedUpstream: false,
    error: proxyError('upstream_unavailable', { detail: `client closed before ${where}` }),
  };
}

export type Next = (ex: Exchange) => Promise<Reply>;
export type Stage = (ex: Exchange, next: Next) => Promise<Reply>;

/**
 * The per-request view of an upstream: its name, route table and the headers it never receives.
 * The build-time runtime (dispatcher, breaker, pipeline) stays with the stack that owns it, which
 * also keeps this file free of an import cycle with `upstream.ts`.
 */
export interface UpstreamRef {
  readonly name: string;
  readonly routes: RouteTable<string>;
}
