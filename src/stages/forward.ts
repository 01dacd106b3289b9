// The terminal stage: one upstream attempt through undici's `dispatch`, the cheapest undici
// API that still streams with back-pressure both ways (no Readable per response, no header
// object parsing). It resolves at the answer's head, holding the first chunks (or, past a few
// KiB, pausing the upstream) until a reader comes; once the reply writer pipes it, bytes go
// straight from the upstream socket into the client's.
import { ERROR_HEAD_LIMIT } from '../upstream-errors.js';
import { tracing, type ClientSpan } from '../tracing.js';
import type { Dispatcher } from 'undici';
import { BODY_TOO_LARGE, proxyError, type ProxyError } from '../errors.js';
import { clientGone, goneBeforeSending, type Exchange, type Failed, type Reply } from '../pipeline/exchange.js';
import { TappedBody, type Body, type BodyEnd, type Delivered, type Sink } from '../pipeline/body.js';
import { connectionNamed, droppedFromResponse, upstreamRequestHeaders } from '../http/headers.js';

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_SSL_WRONG_VERSION_NUMBER',
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
  /** Request headers this upstream never receives (the client-id header, the idempotency key). */
  dropHeaders?: ReadonlySet<string>;
}

const NONE: ReadonlySet<string> = new Set();

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

export function forward(
  dispatcher: Pick<Dispatcher, 'dispatch'>,
  timeoutMs = Number.POSITIVE_INFINITY,
  limits: ForwardLimits = {},
): (ex: Exchange) => Promise<Reply> {
  const precise = timeoutMs < PRECISE_BELOW_MS ? timeoutMs : 0;
  const drop = limits.dropHeaders ?? NONE;
  const bounds: Bounds = {
    headersMs: timeoutMs,
    sendMs: limits.sendTimeoutMs ?? Number.POSITIVE_INFINITY,
    deadlineMs: limits.deadlineMs ?? Number.POSITIVE_INFINITY,
  };
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
            headers: span ? withTraceContext(upstreamRequestHeaders(ex, drop), span.headers) : upstreamRequestHeaders(ex, drop),
            // undici also takes an async iterable (the size-limited chunked body) though its types omit it.
            body: (ex.body ?? ex.bodyStream ?? null) as Dispatcher.DispatchOptions['body'],
          },
          attempt,
        );
      } catch (err) {
        attempt.failHead(classify(err as Error));
      }
    });
  };
}

/** Bytes of an unwanted body read and dropped to keep its connection; past it the connection is closed instead. */
const DISCARD_LIMIT = 64 * 1024;
/** Bytes of an answer held before any reader came, beyond which the upstream is paused. */
const EARLY_LIMIT = 16 * 1024;

/**
 * One upstream attempt: undici's dispatch handler, and the body of the answer it resolves with,
 * as one object with its methods on the prototype. Written as closures it was a dozen functions
 * allocated per request, the request path's largest allocation site.
 *
 * Two moments: at the final head it resolves with an Answer; the body then reaches a reader only
 * once the reply writer pipes it, or a stage reads or discards it. Until then its chunks are
 * held (up to EARLY_LIMIT; past it the upstream is paused, undici's `resume` being the flow
 * control).
 */
class Attempt extends TappedBody implements Dispatcher.DispatchHandler, Body {
  private readonly res: Exchange['res'];
  private readonly began = performance.now();
  private status = 0;
  /** This attempt's CLIENT span, when tracing is on. */
  span: ClientSpan | undefined = undefined;
  /** The head of a non-2xx body, for its provider error code (upstream-errors.ts). */
  private errorHead: Buffer[] | undefined = undefined;
  private errorHeadBytes = 0;
  private abort: ((err?: Error) => void) | undefined = undefined;
  /** The forward promise has its reply (the head, or a failure before one). */
  private headDone = false;
  /** Nothing more happens on this attempt: its body ended, or it failed before a head. */
  private over = false;
  /** The upstream's answer is whole but its reader has not come yet (a bodiless 204/304, HEAD). */
  private whole = false;
  private sink: Sink | undefined = undefined;
  /**
   * Chunks that came before any reader: a small answer usually arrives in the read that carried
   * its head, and holding it here spares undici's parser a pause and a resume per answer. Past
   * EARLY_LIMIT the upstream is paused instead. Replayed through onData once a reader comes, so
   * taps attached after the head still see every byte.
   */
  private early: Buffer[] | undefined = undefined;
  private earlyBytes = 0;
  /** The upstream's body ended while its chunks waited in `early`. */
  private earlyComplete = false;
  private delivered: ((d: Delivered) => void) | undefined = undefined;
  /** Written to the sink. */
  private bytes = 0;
  private aborted: string | undefined = undefined;
  /** Discarded: read on to nowhere. */
  private dropping = false;
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
    if (this.ex.keepsAnswer && this.abort !== undefined) {
      this.readingOn = true;
      // Paused on the departed client's back-pressure: go on (a body not yet taken by a reader
      // stays paused for the stage that holds it).
      if (this.sink === this.res) this.resumeUpstream?.();
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
    super();
    this.res = ex.res;
    this.res.on('close', this.onClientClose);
    if (Number.isFinite(bounds.headersMs) || Number.isFinite(bounds.deadlineMs) || Number.isFinite(bounds.sendMs)) track(this);
  }

  readonly size = undefined;

  /** performance.now() since when the answer waits on the client's back-pressure, 0 when flowing. */
  private pausedSince = 0;
  /** performance.now() of the first 1xx, 0 before one. */
  private interimAt = 0;
  /** The client was cut off for not reading (send timeout). */
  private sendTimedOut = false;

  /** Called by the sweep: enforces the deadlines undici does not. */
  check(now: number): void {
    if (this.over) return;
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
      this.aborted = SEND_TIMEOUT;
      this.res.destroy();
      this.ex.req.socket.destroy();
    }
  }

  /** The attempt is over: its timers, watchers and span. */
  private close(errorType: string | undefined): void {
    this.over = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    untrack(this);
    this.res.off('close', this.onClientClose);
    if (this.socketWatched) this.ex.req.socket.off('close', this.onClientClose);
    this.ex.upstreamSeconds += (performance.now() - this.began) / 1000;
    this.span?.end(this.status, errorType, this.ex.upstreamRequestId);
  }

  /** No answer came: the forward promise gets the failure. */
  failHead(reply: Failed | ProxyError): void {
    if (this.over || this.headDone) return;
    this.headDone = true;
    this.close(reply.kind === 'failed' ? reply.error.code : undefined);
    this.resolve(reply);
  }

  /** The body is over: taps, then its reader, hear how. */
  private finish(how: BodyEnd): void {
    if (this.over) return;
    this.close(how === 'broken' ? (this.aborted ?? 'reset') : undefined);
    if (this.errorHead !== undefined && how === 'complete') this.ex.errorHead = Buffer.concat(this.errorHead, this.errorHeadBytes);
    this.emitEnd(how);
    this.delivered?.({ end: how, bytes: this.bytes, aborted: this.aborted });
  }

  pipe(sink: Sink, done: (d: Delivered) => void): void {
    if (this.ended !== undefined) {
      // It broke (or was given up) while waiting for its reader: the reader must see it cut.
      if (this.ended === 'complete') sink.end();
      else sink.destroy();
      done({ end: this.ended, bytes: 0, aborted: this.aborted });
      return;
    }
    this.sink = sink;
    this.delivered = done;
    if (this.whole) {
      sink.end();
      this.finish('complete');
      return;
    }
    this.replayEarly();
  }

  /** Hands the chunks that came before the reader to it, then lets the upstream go on. */
  private replayEarly(): void {
    const early = this.early;
    let more = true;
    if (early !== undefined) {
      this.early = undefined;
      for (let i = 0; i < early.length && !this.over; i++) more = this.take(early[i]!) && more;
    }
    if (this.over) return;
    if (this.earlyComplete) {
      this.earlyComplete = false;
      this.completed();
      return;
    }
    // Paused by back-pressure during the replay: its 'drain' resumes.
    if (more) this.resumeUpstream?.();
  }

  discard(): void {
    if (this.over) return;
    if (this.whole) {
      this.finish('complete');
      return;
    }
    this.dropping = true;
    this.replayEarly();
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    // undici calls this only when the request is written to a connection, which can be later
    // (a new connection, a busy pool): a client that left meanwhile must not be sent on.
    if (this.clientLeft) {
      this.failHead(goneBeforeSending(this.ex, 'forwarding'));
      abort(new Error('client closed'));
      return;
    }
    if (this.precise > 0) this.timer = setTimeout(() => abort(new HeadersTimeout('upstream headers timeout')), this.precise);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const ex = this.ex;
    // The socket can be gone a tick before the response's 'close' says so.
    if (!this.clientLeft && clientGone(ex)) this.onClientClose();
    if (this.over || this.headDone) return false;
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
    this.resumeUpstream = resume;
    const named = connectionNamed(rawHeaders);
    const out: string[] = [];
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
      if (lower === 'twilio-request-id') ex.upstreamRequestId = value;
    }
    // A later attempt's answer replaces an earlier one's error head.
    ex.errorHead = undefined;
    if (statusCode >= 400) this.errorHead = [];
    this.headDone = true;
    // 204 and 304 never have a body (RFC 9110 §15.3.5, §15.4.5), whatever Content-Length says.
    // The answer is whole now. undici would go on to fault a 304 whose Content-Length it sees
    // unmet (UND_ERR_RES_CONTENT_LENGTH_MISMATCH), which must not break the app's connection
    // nor count against the upstream: what follows on this attempt is ignored.
    if (statusCode === 204 || statusCode === 304) this.whole = true;
    this.resolve({ kind: 'answer', status: statusCode, headers: out, body: this, source: 'forwarded' });
    // Not paused: the first chunks wait in `early` until a reader takes the body.
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.over || this.whole) return true;
    // No reader yet (none has piped or discarded it; the taps of the stages above may not be on
    // yet either), or chunks still waiting ahead of this one: it waits too, in order.
    if (this.early !== undefined || (this.sink === undefined && !this.dropping)) {
      (this.early ??= []).push(chunk);
      this.earlyBytes += chunk.length;
      return this.earlyBytes <= EARLY_LIMIT;
    }
    return this.take(chunk);
  }

  /** A chunk for the reader (or the taps alone, when discarded or read on). */
  private take(chunk: Buffer): boolean {
    const wanted = this.emitData(chunk);
    const errorHead = this.errorHead;
    if (errorHead !== undefined) {
      if (this.errorHeadBytes + chunk.length > ERROR_HEAD_LIMIT)
        this.errorHead = undefined; // larger than an error body
      else {
        errorHead.push(chunk);
        this.errorHeadBytes += chunk.length;
      }
    }
    const sink = this.sink;
    if (sink === undefined || (sink === this.res && this.clientLeft)) {
      // Discarded, or read on for the idempotency store after the app left: only as long as the
      // store still wants it.
      if (this.readingOn && !wanted) this.stopReading();
      else if (this.dropping && !this.ex.keepsAnswer && (this.bytes += chunk.length) > DISCARD_LIMIT) this.abort?.(new Error('discarded'));
      return true;
    }
    this.bytes += chunk.length;
    if (sink.write(chunk)) return true;
    // Back-pressure: the client is slower than the upstream; resume once it has drained.
    this.onDrain ??= () => {
      this.pausedSince = 0;
      this.resumeUpstream?.();
    };
    this.pausedSince = performance.now();
    sink.once('drain', this.onDrain);
    // A pipelined response queued behind an earlier one hears neither 'drain' nor 'close' from
    // its connection, and undici's body timeout does not run while paused: if the client left,
    // only the socket says so. Watched only here, on the rare paused path.
    if (sink === this.res && !this.socketWatched) {
      this.socketWatched = true;
      this.ex.req.socket.once('close', this.onClientClose);
    }
    return false;
  }

  onComplete(): void {
    if (this.over || this.whole) return;
    if (this.early !== undefined) {
      this.earlyComplete = true;
      return;
    }
    if (this.sink === undefined && !this.dropping && !this.readingOn) {
      // Ended before any reader with nothing to wait for: a HEAD answer.
      this.whole = true;
      return;
    }
    this.completed();
  }

  private completed(): void {
    // Read to its end, unwanted: its taps saw all of it.
    if (this.dropping) {
      this.finish('complete');
      return;
    }
    if (this.clientLeft && this.sink === this.res) {
      // Left mid-body: what it got was cut short, like any client that stops reading.
      if (this.res.headersSent) this.aborted = 'client closed';
      this.finish('complete');
      return;
    }
    this.sink?.end();
    this.finish('complete');
  }

  /** Ends an attempt that was reading on for a departed app, as if stopped when it left. */
  private stopReading(): void {
    this.readingOn = false;
    this.abort?.(new Error('client closed'));
  }

  onError(err: Error): void {
    // Already answered (a bodiless 204/304): a later fault of this exchange changes nothing.
    if (this.over || this.whole) return;
    // After the app left, a failure while reading on is the upstream's own (a reset, a timeout):
    // the breaker should count it; one the proxy caused by stopping the attempt is not.
    const byUs = !this.readingOn && (this.clientLeft || this.dropping);
    if (this.headDone) {
      // Mid-body failure: the status is already out, so the only honest signal left is a
      // truncated response. Destroying the sink makes the client see the break.
      if (!this.sendTimedOut && !this.dropping) this.aborted = (err as Error & { code?: string }).code ?? err.message;
      this.sink?.destroy();
      this.finish(!byUs ? 'broken' : this.clientLeft ? 'client' : 'discarded');
      return;
    }
    // undici reports the attempt (onConnect) just before it writes the request: without that, a
    // failure (a refused or timed-out connect) means the request never left.
    if (this.clientLeft && this.abort === undefined) this.failHead(goneBeforeSending(this.ex, 'forwarding'));
    // The app hung up before the answer began: that says nothing about the upstream, so it
    // must not count as a breaker failure or be retried (cause 'client'). The request may
    // still have reached the upstream, which idempotency needs to know.
    else if (byUs)
      this.failHead({ kind: 'failed', cause: 'client', mayHaveReachedUpstream: true, error: proxyError('upstream_unavailable', { detail: 'client closed' }) });
    else this.failHead(classify(err));
  }
}

interface Bounds {
  readonly headersMs: number;
  readonly sendMs: number;
  readonly deadlineMs: number;
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
