// The terminal stage: one upstream attempt through undici's `dispatch`, the cheapest undici
// API that still streams with back-pressure both ways (no Readable per response, no header
// object parsing). Response bytes go straight from the upstream socket into the client's.
import { ERROR_HEAD_LIMIT } from '../upstream-errors.js';
import { tracing, type ClientSpan } from '../tracing.js';
import type { Dispatcher } from 'undici';
import { BODY_TOO_LARGE, proxyError, type ProxyError } from '../errors.js';
import { clientGone, goneBeforeSending, type Exchange, type Failed, type Held, type Reply } from '../pipeline/exchange.js';
import { connectionNamed, droppedFromResponse, isHopByHop, isOursOnly, responseHeaderPrelude, upstreamRequestHeaders } from '../http/headers.js';

/** The largest upstream answer held back for a retry decision (5xx bodies are small). */
const HOLD_LIMIT = 64 * 1024;

const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_SSL_WRONG_VERSION_NUMBER',
  'UND_ERR_MAX_ORIGINS_REACHED', // refused locally: too many host-routed origins at once
]);

export function classify(err: Error & { code?: string }): Failed | ProxyError {
  const code = err.code ?? '';
  if (code === BODY_TOO_LARGE) return proxyError('payload_too_large');
  if (CONNECT_CODES.has(code)) {
    return { kind: 'failed', cause: 'connect', mayHaveReachedUpstream: false, error: proxyError('upstream_unavailable', { detail: code }) };
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === EXCHANGE_TIMEOUT) {
    return { kind: 'failed', cause: 'timeout', mayHaveReachedUpstream: true, error: proxyError('upstream_timeout', { detail: code }) };
  }
  return { kind: 'failed', cause: 'reset', mayHaveReachedUpstream: true, error: proxyError('upstream_unavailable', { detail: code || err.message }) };
}

/**
 * undici enforces `headersTimeout` on its coarse timer wheel (about half-second ticks), which is
 * fine for the 15 s default but makes `UPSTREAM_TIMEOUT=0.3` fire near 1 s. Below this bound a
 * precise native timer also guards the wait for headers; above it, undici's own is enough and the
 * hot path stays free of a timer per request.
 */
const PRECISE_BELOW_MS = 2000;

class HeadersTimeout extends Error {
  readonly code = 'UND_ERR_HEADERS_TIMEOUT';
}

class BadStatus extends Error {
  readonly code = 'BW_BAD_STATUS';
}

export const EXCHANGE_TIMEOUT = 'BW_EXCHANGE_TIMEOUT';
class ExchangeTimeout extends Error {
  readonly code = EXCHANGE_TIMEOUT;
}
/** What the access line's `aborted` says when a client stopped reading for longer than sendTimeout. */
export const SEND_TIMEOUT = 'send_timeout';

export interface ForwardLimits {
  /**
   * ms a paused answer may wait for the client to take more bytes (nginx send_timeout): undici's
   * body timeout does not run while the attempt is paused on back-pressure.
   */
  sendTimeoutMs?: number;
  /**
   * ms the whole exchange may take, 1xx, headers and body (Envoy's route timeout): undici's timers
   * are re-armed by each 1xx and each body chunk, so a trickling upstream is otherwise unbounded.
   */
  deadlineMs?: number;
}

/**
 * One coarse sweep for the deadlines that undici does not keep (total exchange, send timeout,
 * headers across 1xx): a timer per request would be the hot path's dearest allocation, and these
 * limits are seconds long, so a 100 ms tick is precise enough.
 */
const SWEEP_MS = 100;
const live = new Set<Attempt>();
let sweeper: NodeJS.Timeout | undefined;
function track(a: Attempt): void {
  live.add(a);
  if (sweeper === undefined) {
    sweeper = setInterval(sweep, SWEEP_MS);
    sweeper.unref();
  }
}
function untrack(a: Attempt): void {
  live.delete(a);
  if (live.size === 0 && sweeper !== undefined) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}
function sweep(): void {
  const now = performance.now();
  for (const a of live) a.check(now);
}

export function forward(dispatcher: Pick<Dispatcher, 'dispatch'>, timeoutMs = Number.POSITIVE_INFINITY, limits: ForwardLimits = {}): (ex: Exchange) => Promise<Reply> {
  const precise = timeoutMs < PRECISE_BELOW_MS ? timeoutMs : 0;
  const bounds: Bounds = { headersMs: timeoutMs, sendMs: limits.sendTimeoutMs ?? Number.POSITIVE_INFINITY, deadlineMs: limits.deadlineMs ?? Number.POSITIVE_INFINITY };
  return function forwardAttempt(ex: Exchange): Promise<Reply> {
    // The app hung up while the request waited in an earlier stage (its pacing turn, a Redis
    // round trip, a retry's backoff). Nobody is left to read the answer and the app will retry,
    // so sending it now could only duplicate it; and the close it would have signalled has
    // already happened, so an attempt started now would never hear of it.
    if (clientGone(ex)) return Promise.resolve(goneBeforeSending(ex, 'forwarding'));
    return new Promise<Reply>((resolve) => {
      const attempt = new Attempt(ex, resolve, precise, bounds);
      const span = tracing?.startClient(ex);
      attempt.span = span;
      try {
        dispatcher.dispatch(
          {
            origin: ex.origin,
            path: ex.upstreamPath,
            method: ex.method as Dispatcher.HttpMethod,
            headers: span ? withTraceContext(upstreamRequestHeaders(ex), span.headers) : upstreamRequestHeaders(ex),
            // undici also takes an async iterable (the size-limited chunked body) though its types omit it.
            body: (ex.body ?? ex.bodyStream ?? null) as Dispatcher.DispatchOptions['body'],
          },
          attempt,
        );
      } catch (err) {
        attempt.finish(classify(err as Error));
      }
    });
  };
}

/**
 * One upstream attempt: undici's dispatch handler and the state it keeps, as one object with
 * its methods on the prototype. Written as closures it was a dozen functions allocated per
 * request, the request path's largest allocation site.
 */
class Attempt implements Dispatcher.DispatchHandler {
  private readonly res: Exchange['res'];
  private readonly hold: Exchange['holdStatuses'];
  private readonly began = performance.now();
  private status = 0;
  /** This attempt's CLIENT span, when tracing is on. */
  span: ClientSpan | undefined = undefined;
  /** The head of a non-2xx body, for its provider error code (upstream-errors.ts). */
  private errorHead: Buffer[] | undefined = undefined;
  private errorHeadBytes = 0;
  private held: { headers: Record<string, string | string[]>; chunks: Buffer[]; bytes: number } | undefined = undefined;
  private abort: ((err?: Error) => void) | undefined = undefined;
  private done = false;
  /** The app went away during this attempt (its response or, paused, its socket closed). */
  private clientLeft = false;
  /** The app left but the answer is read on for the idempotency store: its failures are the upstream's. */
  private readingOn = false;
  private resumeUpstream: (() => void) | undefined = undefined;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** Bound once: res.on/off need the same function. */
  private readonly onClientClose = (): void => {
    if (this.res.writableFinished || this.clientLeft) return;
    this.clientLeft = true;
    // An original whose answer the idempotency stage keeps (it carried an Idempotency-Key): read
    // that answer to its end, as nginx does with proxy_ignore_client_abort, so that the app's
    // retry with the same key is given what the upstream really did (the call it created) rather
    // than "outcome unknown". The upstream timeouts still bound the wait. Any other attempt has
    // nobody left to answer: stop it.
    if (this.ex.capture !== undefined && this.abort !== undefined) {
      this.readingOn = true;
      this.resumeUpstream?.(); // it may be paused on the departed client's back-pressure
      return;
    }
    this.abort?.(new Error('client closed'));
  };
  private onDrain: (() => void) | undefined = undefined;
  /** The client socket's 'close' is watched too (see onData). */
  private socketWatched = false;

  constructor(
    private readonly ex: Exchange,
    private readonly resolve: (reply: Reply) => void,
    /** ms of a precise headers timeout, 0 for none. */
    private readonly precise: number,
    private readonly bounds: Bounds,
  ) {
    this.res = ex.res;
    this.hold = ex.holdStatuses;
    this.res.on('close', this.onClientClose);
    if (Number.isFinite(bounds.headersMs) || Number.isFinite(bounds.deadlineMs) || Number.isFinite(bounds.sendMs)) track(this);
  }

  /** performance.now() since when the answer waits on the client's back-pressure, 0 when flowing. */
  private pausedSince = 0;
  /** performance.now() of the first 1xx, 0 before one. */
  private interimAt = 0;
  /** The client was cut off for not reading (send timeout). */
  private sendTimedOut = false;

  /** Called by the sweep: enforces the deadlines undici does not. */
  check(now: number): void {
    if (this.done) return;
    const elapsed = now - this.began;
    if (elapsed > this.bounds.deadlineMs) {
      this.abort?.(new ExchangeTimeout('upstream exchange deadline'));
      return;
    }
    // undici re-arms its headers timer on every 1xx: once one came, the final head must follow
    // within the headers timeout. (Before any, undici's own timer holds, paused while a slow
    // request body is still being written.)
    if (this.interimAt > 0 && this.status < 200 && now - this.interimAt > this.bounds.headersMs) {
      this.abort?.(new HeadersTimeout('upstream headers timeout'));
      return;
    }
    if (this.pausedSince > 0 && !this.clientLeft && now - this.pausedSince > this.bounds.sendMs) {
      // The client stopped reading: drop it (freeing its connection) and, through its close,
      // the attempt, which frees the bulkhead slot and the upstream connection.
      this.sendTimedOut = true;
      this.ex.aborted = SEND_TIMEOUT;
      this.res.destroy();
      this.ex.req.socket.destroy();
    }
  }

  finish(reply: Reply): void {
    if (this.done) return;
    this.done = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    untrack(this);
    this.res.off('close', this.onClientClose);
    if (this.socketWatched) this.ex.req.socket.off('close', this.onClientClose);
    this.ex.upstreamSeconds += (performance.now() - this.began) / 1000;
    this.span?.end(this.status, reply.kind === 'failed' ? reply.error.code : undefined, this.ex.upstreamRequestId);
    this.resolve(reply);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    // undici calls this only when the request is written to a connection, which can be later
    // (a new connection, a busy pool): a client that left meanwhile must not be sent on.
    if (this.clientLeft) {
      this.finish(goneBeforeSending(this.ex, 'forwarding'));
      abort(new Error('client closed'));
      return;
    }
    if (this.precise > 0) this.timer = setTimeout(() => abort(new HeadersTimeout('upstream headers timeout')), this.precise);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const ex = this.ex;
    // The socket can be gone a tick before the response's 'close' says so.
    if (!this.clientLeft && clientGone(ex)) this.onClientClose();
    if (this.done) return false;
    this.status = statusCode;
    if (this.timer !== undefined && statusCode >= 200) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (statusCode < 200) {
      // 1xx: undici delivers the final answer next.
      if (this.interimAt === 0) this.interimAt = performance.now();
      return true;
    }
    if (statusCode > 599) {
      // Not a status HTTP defines a class for (RFC 9110 §15): the answer means nothing we can relay.
      this.abort?.(new BadStatus(`upstream status ${statusCode}`));
      return false;
    }
    const named = connectionNamed(rawHeaders);
    if (this.hold?.has(statusCode)) {
      this.held = { headers: toObject(rawHeaders, named), chunks: [], bytes: 0 };
      // What the upstream said, for the stages that learn from it (a 429's hold and its Retry-After).
      ex.upstreamStatus = statusCode;
      if (statusCode === 429) {
        const ra = this.held.headers['retry-after'];
        ex.upstreamRetryAfter = typeof ra === 'string' ? ra : undefined;
      }
      // A held 304 (a cache revalidation) is whole at its head, as below.
      if (statusCode === 204 || statusCode === 304) this.finish({ kind: 'held', status: statusCode, headers: this.held.headers, body: EMPTY } satisfies Held);
      return true;
    }
    this.resumeUpstream = resume;
    const out = responseHeaderPrelude(ex);
    const capture = ex.capture;
    // 204 and 304 never have a body (RFC 9110 §15.3.5, §15.4.5), whatever Content-Length says.
    const bodiless = statusCode === 204 || statusCode === 304;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const key = rawHeaders[i]!.toString('latin1');
      const lower = key.toLowerCase();
      // A 204 must not carry Content-Length (§8.6); a 304's describes the cached representation.
      if (statusCode === 204 && lower === 'content-length') continue;
      if (droppedFromResponse(lower) || named?.has(lower)) continue;
      // The upstream's Date is not relayed; the answer gets this server's own (nginx's default:
      // proxy_pass_header Date is off). It also spares node a validated header on every answer.
      if (lower === 'date') continue;
      const value = rawHeaders[i + 1]!.toString('latin1');
      out.push(key, value);
      if (statusCode === 429 && lower === 'retry-after') ex.upstreamRetryAfter = value;
      else if (lower === 'twilio-request-id') ex.upstreamRequestId = value;
      else if (lower === 'twilio-concurrent-requests') ex.upstreamConcurrent = value;
    }
    ex.upstreamStatus = statusCode;
    if (statusCode >= 400) this.errorHead = [];
    if (capture) {
      capture.status = statusCode;
      capture.headers = toObject(rawHeaders, named);
    }
    if (!this.clientLeft) this.res.writeHead(statusCode, out);
    if (bodiless) {
      // The answer is whole now. undici would go on to fault a 304 whose Content-Length it sees
      // unmet (UND_ERR_RES_CONTENT_LENGTH_MISMATCH), which must not break the app's connection
      // nor count against the upstream: what follows on this attempt is ignored.
      if (!this.clientLeft) this.res.end();
      this.finish({ kind: 'sent', status: statusCode, outcome: 'forwarded' });
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.done) return true;
    const held = this.held;
    if (held) {
      if (held.bytes + chunk.length > HOLD_LIMIT) return true; // keep the head of a huge error body
      held.chunks.push(chunk);
      held.bytes += chunk.length;
      return true;
    }
    const errorHead = this.errorHead;
    if (errorHead !== undefined) {
      if (this.errorHeadBytes + chunk.length > ERROR_HEAD_LIMIT) this.errorHead = undefined; // larger than an error body
      else {
        errorHead.push(chunk);
        this.errorHeadBytes += chunk.length;
      }
    }
    const capture = this.ex.capture;
    if (capture && !capture.overflow) {
      if (capture.bytes + chunk.length > capture.maxBytes) capture.overflow = true;
      else {
        capture.chunks.push(chunk);
        capture.bytes += chunk.length;
      }
    }
    if (this.clientLeft) {
      // Read on for the idempotency store only, and only while the answer still fits in it.
      if (capture?.overflow === true && this.readingOn) this.stopReading();
      return true;
    }
    this.ex.bytesOut += chunk.length;
    if (this.res.write(chunk)) return true;
    // Back-pressure: the client is slower than the upstream; resume once it has drained.
    this.onDrain ??= () => {
      this.pausedSince = 0;
      this.resumeUpstream?.();
    };
    this.pausedSince = performance.now();
    this.res.once('drain', this.onDrain);
    // A pipelined response queued behind an earlier one hears neither 'drain' nor 'close' from
    // its connection, and undici's body timeout does not run while paused: if the client left,
    // only the socket says so. Watched only here, on the rare paused path.
    if (!this.socketWatched) {
      this.socketWatched = true;
      this.ex.req.socket.once('close', this.onClientClose);
    }
    return false;
  }

  onComplete(): void {
    if (this.done) return;
    const held = this.held;
    if (held) {
      const body = Buffer.concat(held.chunks, held.bytes);
      // A held error answer is classified like a relayed one; a later attempt's answer replaces it.
      if (this.status >= 400 && held.bytes <= ERROR_HEAD_LIMIT) this.ex.errorHead = body;
      this.finish({ kind: 'held', status: this.status, headers: held.headers, body } satisfies Held);
      return;
    }
    if (this.clientLeft) {
      // Left mid-body: what it got was cut short, like any client that stops reading.
      if (this.res.headersSent) this.ex.aborted = 'client closed';
      this.finish({ kind: 'sent', status: this.status, outcome: 'forwarded', unread: true });
      return;
    }
    this.res.end();
    if (this.errorHead !== undefined) this.ex.errorHead = Buffer.concat(this.errorHead, this.errorHeadBytes);
    this.finish({ kind: 'sent', status: this.status, outcome: 'forwarded' });
  }

  /** Ends an attempt that was reading on for a departed app, as if stopped when it left. */
  private stopReading(): void {
    this.readingOn = false;
    this.abort?.(new Error('client closed'));
  }

  onError(err: Error): void {
    // Already answered (a bodiless 204/304): a later fault of this exchange changes nothing.
    if (this.done) return;
    // After the app left, a failure while reading on is the upstream's own (a reset, a timeout):
    // the breaker should count it; one the proxy caused by stopping the attempt is not.
    const byUs = this.clientLeft && !this.readingOn;
    if (this.res.headersSent) {
      // Mid-stream failure: the status is already out, so the only honest signal left is a
      // truncated response. Destroying it makes the client see the break.
      if (!this.sendTimedOut) this.ex.aborted = (err as Error & { code?: string }).code ?? err.message;
      this.res.destroy();
      this.finish({ kind: 'sent', status: this.status, outcome: 'forwarded', broken: byUs ? 'client' : 'upstream' });
      return;
    }
    // undici reports the attempt (onConnect) just before it writes the request: without that, a
    // failure (a refused or timed-out connect) means the request never left.
    if (this.clientLeft && this.abort === undefined) this.finish(goneBeforeSending(this.ex, 'forwarding'));
    // The app hung up before the answer began: that says nothing about the upstream, so it
    // must not count as a breaker failure or be retried (cause 'client'). The request may
    // still have reached the upstream, which idempotency needs to know.
    else if (byUs) this.finish({ kind: 'failed', cause: 'client', mayHaveReachedUpstream: true, error: proxyError('upstream_unavailable', { detail: 'client closed' }) });
    else this.finish(classify(err));
  }
}

const EMPTY = Buffer.alloc(0);

interface Bounds {
  readonly headersMs: number;
  readonly sendMs: number;
  readonly deadlineMs: number;
}

function toObject(raw: Buffer[], named: Set<string> | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const key = raw[i]!.toString('latin1').toLowerCase();
    if (isHopByHop(key) || isOursOnly(key) || named?.has(key)) continue;
    const value = raw[i + 1]!.toString('latin1');
    const prev = out[key];
    out[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

/** The upstream headers with this attempt's trace context in place of the app's. */
function withTraceContext(headers: string[], trace: Record<string, string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const k = headers[i]!.toLowerCase();
    if (k === 'traceparent' || k === 'tracestate') continue;
    out.push(headers[i]!, headers[i + 1]!);
  }
  for (const [k, v] of Object.entries(trace)) out.push(k, v);
  return out;
}
