// The one writer of replies: every answer reaches the client here, whether the upstream gave it
// (its body piped from the paused attempt), a store or a stub did (a body in memory), or the
// proxy made it (an error from the catalog). One place decides the head, so every reply has the
// same shape, and one place decides what the access line says about how it went.
import { errorBody, type ProxyError } from '../errors.js';
import { clientGone, type Answer, type Exchange } from '../pipeline/exchange.js';
import type { Delivered } from '../pipeline/body.js';
import { responseHeaderPrelude } from './headers.js';

/** The status and outcome a request is counted and logged under. */
export interface Outcome {
  readonly status: number;
  readonly outcome: string;
}

/** Status and outcome of a request whose client left before its answer began (nginx's 499). */
export const CLIENT_CLOSED: Outcome = { status: 499, outcome: 'client_closed' };

/** Writes a reply to the client; resolves once its body is over. */
export function writeReply(ex: Exchange, reply: Answer | ProxyError): Outcome | Promise<Outcome> {
  if (reply.kind === 'error') {
    // The app hung up before any answer began (its own timeout, a cancelled call): nothing can
    // be sent, and the outcome is the app's, not the upstream's. nginx logs 499 and Envoy a
    // downstream disconnect for this; as a 502 it would charge the upstream's error budget and
    // wake the 5xx alerts for every app-side timeout. What the proxy would have answered stays
    // in the access line's cause.
    if (!ex.res.headersSent && clientGone(ex)) {
      ex.cause = reply.detail ?? reply.code;
      return CLIENT_CLOSED;
    }
    if (reply.detail) ex.cause = reply.detail;
    sendError(ex, reply);
    if (reply.status === 413) lingerAndClose(ex);
    return { status: reply.status, outcome: reply.code };
  }
  const res = ex.res;
  if (clientGone(ex)) {
    // Nobody to give it to. A kept answer (an idempotency key's) is still read to its end for the
    // store; any other is dropped.
    reply.body.discard();
    ex.cause = `client closed; the upstream answered ${reply.status}`;
    return CLIENT_CLOSED;
  }
  const out = responseHeaderPrelude(ex);
  const h = reply.headers;
  for (let i = 0; i < h.length; i++) out.push(h[i]!);
  const size = reply.body.size;
  if (size !== undefined) out.push('content-length', String(size));
  res.writeHead(reply.status, out);
  return new Promise<Outcome>((resolve) => {
    reply.body.pipe(res, (d: Delivered) => {
      ex.bytesOut = d.bytes;
      if (d.aborted !== undefined) ex.aborted = d.aborted;
      // A body the upstream cut (a reset, the exchange deadline) must not pass as forwarded.
      resolve({ status: reply.status, outcome: d.end === 'broken' ? 'truncated' : reply.source });
    });
  });
}

function sendError(ex: Exchange, err: ProxyError): void {
  const res = ex.res;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(err, ex.upstream?.name, ex.requestId);
  const headers = responseHeaderPrelude(ex);
  ex.bytesOut = Buffer.byteLength(body);
  headers.push('content-type', 'application/json', 'content-length', String(ex.bytesOut), 'x-breakwater-error', err.code);
  if (err.headers) for (const k in err.headers) headers.push(k, err.headers[k]!);
  if (err.status === 400 || err.status === 405 || err.status === 408 || err.status === 413 || err.status === 431) headers.push('connection', 'close');
  res.writeHead(err.status, headers);
  res.end(body);
}

/**
 * After a 413 the client may still be sending: keep reading and discarding for a bounded time
 * before closing (nginx's lingering close), so it reads our answer instead of an EPIPE.
 */
function lingerAndClose(ex: Exchange): void {
  const req = ex.req;
  const socket = req.socket;
  if (req.complete) return;
  // Node ends a `Connection: close` answer with socket.destroySoon(): a full close as soon as
  // the answer is flushed. Bytes the client is still sending then meet a closed socket, the
  // kernel answers with a RST, and the client gets EPIPE/ECONNRESET, often before it has read
  // the 413. Half-close instead: FIN after the answer, then keep reading (and discarding) until
  // the client stops, or 64 MiB, or 5 s.
  socket.destroySoon = function lingeringClose() {
    socket.end();
  };
  const limit = 64 * 1024 * 1024;
  const from = socket.bytesRead;
  const deadline = Date.now() + 5000;
  // Counted on the socket: once the answer is done, Node drops the request's 'data' listeners.
  const timer = setInterval(() => {
    if (Date.now() >= deadline || socket.bytesRead - from > limit) socket.destroy();
  }, 100);
  timer.unref();
  socket.once('close', () => clearInterval(timer));
  req.on('error', () => {});
  // A chunked body read through an async iterator left a 'readable' listener behind, which
  // keeps the stream paused whatever resume() says.
  req.removeAllListeners('readable');
  req.resume();
}
