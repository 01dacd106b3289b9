// Request bodies. Small ones (≤ bufferBodyBytes, the usual Twilio form or Vapi JSON) are read
// whole: that is what makes a retry replayable, an idempotency key hashable and a body field
// usable as a limit key (Envoy buffers for retries the same way). Larger ones stream through
// with their size enforced as bytes pass, never buffered.
import { BODY_TOO_LARGE, proxyError } from '../errors.js';
import type { ProxyError } from '../errors.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';

export interface BodyLimits {
  maxBodyBytes: number;
  bufferBodyBytes: number;
  /** Run on a buffered body before anything else sees it (a repeated limit-key field is refused). */
  guard?: (ex: Exchange) => ProxyError | undefined;
}

class TooLarge extends Error {
  readonly code = BODY_TOO_LARGE;
}

export function requestBody(limits: BodyLimits): Stage {
  const { maxBodyBytes, bufferBodyBytes, guard } = limits;
  const buffered =
    guard === undefined
      ? (ex: Exchange, next: Next) => next(ex)
      : (ex: Exchange, next: Next) => {
          const refused = guard(ex);
          return refused === undefined ? next(ex) : Promise.resolve(refused);
        };
  // No body (every GET): pass straight through, without an async frame of our own.
  return function requestBodyStage(ex: Exchange, next: Next): Promise<Reply> {
    const h = ex.req.headers;
    const cl = h['content-length'];
    const chunked = h['transfer-encoding'] !== undefined;
    if (cl === undefined && !chunked) return next(ex);
    return withBody(ex, next, cl, chunked);
  };

  async function withBody(ex: Exchange, next: Next, cl: string | undefined, chunked: boolean): Promise<Reply> {
    const declared = cl === undefined ? -1 : Number(cl);
    if (declared === 0 && !chunked) {
      ex.body = Buffer.alloc(0);
      return next(ex);
    }
    if (declared > maxBodyBytes) return proxyError('payload_too_large');
    if (declared >= 0 && declared <= bufferBodyBytes) {
      const body = await readAll(ex, declared);
      if (body === undefined) return proxyError('bad_request', { message: 'The request body ended early.' });
      ex.body = body;
      return buffered(ex, next);
    }
    ex.streamed = true;
    if (declared >= 0) {
      // A declared length is enforced by Node's parser: no more bytes than that can arrive.
      ex.bodyStream = ex.req;
      return next(ex);
    }
    // Chunked: read up to the buffer size first; a body that ends there is small after all.
    const iter = ex.req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const head: Buffer[] = [];
    let bytes = 0;
    while (bytes <= bufferBodyBytes) {
      const r = await iter.next().catch(() => undefined);
      if (r === undefined) return proxyError('bad_request', { message: 'The request body ended early.' });
      if (r.done) {
        ex.streamed = false;
        ex.body = Buffer.concat(head, bytes);
        return buffered(ex, next);
      }
      head.push(r.value);
      bytes += r.value.length;
      if (bytes > maxBodyBytes) return proxyError('payload_too_large');
    }
    ex.bodyStream = limited(head, iter, bytes, maxBodyBytes);
    return next(ex);
  }
}

async function* limited(head: Buffer[], iter: AsyncIterator<Buffer>, already: number, max: number): AsyncGenerator<Buffer> {
  let bytes = already;
  for (const b of head) yield b;
  for (;;) {
    const r = await iter.next();
    if (r.done) return;
    bytes += r.value.length;
    if (bytes > max) throw new TooLarge('request body too large');
    yield r.value;
  }
}

function readAll(ex: Exchange, expected: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const req = ex.req;
    const chunks: Buffer[] = [];
    let bytes = 0;
    const onData = (c: Buffer) => {
      chunks.push(c);
      bytes += c.length;
    };
    const onEnd = () => {
      cleanup();
      resolve(bytes === expected ? (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes)) : undefined);
    };
    const onError = () => {
      cleanup();
      resolve(undefined);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onError);
  });
}
