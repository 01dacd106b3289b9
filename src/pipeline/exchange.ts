// The per-request state that flows through the stages, and the Reply a stage returns.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { proxyError, type ProxyError } from '../errors.js';
import type { RouteTable } from '../routing/route-table.js';

/** The response has been written to the client by the stage that produced it. */
export interface Sent {
  readonly kind: 'sent';
  readonly status: number;
  readonly outcome: 'forwarded' | 'stub' | 'replayed' | 'cached';
  /** The response broke after its head was relayed: by the upstream (a reset) or the client. */
  readonly broken?: 'upstream' | 'client';
  /**
   * The app left before this answer (or its end) reached it, and the upstream's answer was read
   * whole anyway, for the idempotency store to give the app's retry.
   */
  readonly unread?: true;
}

/**
 * An upstream answer held back (buffered, small) so the retry stage can decide whether to try
 * again. If no retry happens it is sent as it is.
 */
export interface Held {
  readonly kind: 'held';
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

/** A transport failure talking to the upstream; `sentBody` false means it certainly never left. */
export interface Failed {
  readonly kind: 'failed';
  readonly error: ProxyError;
  /** `client`: the app went away before the answer began (not the upstream's doing). */
  readonly cause: 'connect' | 'timeout' | 'reset' | 'client';
  readonly mayHaveReachedUpstream: boolean;
}

export type Reply = Sent | Held | Failed | ProxyError;

export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** performance.now() at arrival. */
  readonly start: number;
  requestId: string;
  readonly method: string;
  /** Path as received, without the query. */
  readonly path: string;
  /** `?…` or ''. */
  readonly query: string;
  /** The upstream routing chose (written by routing alone): what a request may know of it. */
  upstream: UpstreamRef | undefined;
  /** Route name from the policy: the only route label metrics ever carry. */
  route: string;
  params: Record<string, string>;
  /** Upstream path without the query: what route patterns match. */
  routePath: string;
  /** Path and query to send upstream (prefix stripped). */
  upstreamPath: string;
  /** Origin to dispatch to (`https://api.twilio.com`). */
  origin: string;
  /** Host header for the upstream. */
  host: string;
  clientKey: string;
  /** A small body read whole (retryable, hashable); undefined when streamed or absent. */
  body: Buffer | undefined;
  /** The request carries a body that is streamed (too large to buffer). */
  streamed: boolean;
  /** `RateLimit` field value for the response, when a limit applied. */
  rateLimit: string | undefined;
  rateLimitPolicy: string | undefined;
  retries: number;
  /** Seconds spent waiting on the upstream (all attempts). */
  upstreamSeconds: number;
  /** Why a proxy-made error happened (an undici error code, say), for the access line. */
  cause: string | undefined;
  /** The upstream's own request id (Twilio-Request-Id), for the access line. */
  upstreamRequestId: string | undefined;
  /** The head of a non-2xx upstream body (at most ERROR_HEAD_LIMIT bytes), for its error code. */
  errorHead: Buffer | undefined;
  /** The provider's error code of that body (upstream-errors.ts), for the access line. */
  upstreamErrorCode: string | undefined;
  /** The sanitised server a forward-proxy attempt named (routing sets it on refusing one), for the access line. */
  probeHost: string | undefined;
  /** Set when the response broke after its head was relayed: the error code. */
  aborted: string | undefined;
  /** Response body bytes relayed to the client. */
  bytesOut: number;
  /**
   * Set by the cache stage when it revalidates a stale copy: the validators sent upstream as
   * If-None-Match / If-Modified-Since (with 304 among the held statuses, so the 304 comes back to it).
   */
  revalidate: { readonly etag: string | undefined; readonly lastModified: string | undefined } | undefined;
  /** Set by the hold stage once it has sent a 429 again after its hold (at most once a request). */
  resent: boolean;
  /** Set by the idempotency stage to receive a copy of the forwarded answer. */
  capture: Capture | undefined;
  /** The Authorization header as sent upstream (after injection); undefined: none. */
  authorization: string | undefined;
  /** A large request body, streamed (with its size enforced) rather than buffered. */
  bodyStream: AsyncIterable<Buffer> | NodeJS.ReadableStream | undefined;
  /** Upstream statuses to hold back for a retry decision (set by the retry stage). */
  holdStatuses: ReadonlySet<number> | undefined;
  /** Header list sent upstream, built once per request and reused by retries. */
  outHeaders: string[] | undefined;
  upstreamStatus: number;
  /** The upstream's Retry-After on a 429, for the hold stage. */
  upstreamRetryAfter: string | undefined;
  /** The upstream's Twilio-Concurrent-Requests on the last attempt, unparsed: fed back to the fleet bulkhead. */
  upstreamConcurrent: string | undefined;
  /** Peer address (after trusted X-Forwarded-For). */
  clientIp: string;
  /** Parsed body fields, cached for key extraction (null: none or unparsable). */
  fields: URLSearchParams | Record<string, unknown> | null | undefined;
}

export interface Capture {
  status: number;
  headers: Record<string, string | string[]>;
  chunks: Buffer[];
  bytes: number;
  overflow: boolean;
  readonly maxBytes: number;
}

/**
 * A fresh exchange. Every field exists from the start, so all exchanges share one hidden class
 * and the stages' property reads stay monomorphic.
 */
export function newExchange(req: IncomingMessage, res: ServerResponse, start: number, requestId: string, method: string, path: string, query: string): Exchange {
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
    params: {},
    routePath: '',
    upstreamPath: '',
    origin: '',
    host: '',
    clientKey: '',
    clientIp: '',
    body: undefined,
    bodyStream: undefined,
    streamed: false,
    rateLimit: undefined,
    rateLimitPolicy: undefined,
    retries: 0,
    upstreamSeconds: 0,
    cause: undefined,
    upstreamRequestId: undefined,
    errorHead: undefined,
    upstreamErrorCode: undefined,
    probeHost: undefined,
    aborted: undefined,
    bytesOut: 0,
    revalidate: undefined,
    resent: false,
    capture: undefined,
    authorization: undefined,
    holdStatuses: undefined,
    outHeaders: undefined,
    upstreamStatus: 0,
    upstreamRetryAfter: undefined,
    upstreamConcurrent: undefined,
    fields: undefined,
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
  return { kind: 'failed', cause: 'client', mayHaveReachedUpstream: false, error: proxyError('upstream_unavailable', { detail: `client closed before ${where}` }) };
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
  readonly dropHeaders: ReadonlySet<string>;
}
