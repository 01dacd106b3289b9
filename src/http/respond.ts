// Writing replies the proxy makes (errors, held upstream answers, stubs, replays). One place
// decides their headers, so every proxy-made reply has the same shape.
import { errorBody, type ProxyError } from '../errors.js';
import type { Exchange } from '../pipeline/exchange.js';
import { responseHeaderPrelude } from './headers.js';

export function sendError(ex: Exchange, err: ProxyError): void {
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

/** Sends a complete answer from memory (held upstream reply, stub, idempotent replay). */
export function sendBuffered(ex: Exchange, status: number, headers: Readonly<Record<string, string | string[]>>, body: Buffer | string, extra?: readonly string[]): void {
  const res = ex.res;
  const out = responseHeaderPrelude(ex);
  for (const k in headers) {
    if (k === 'content-length' || k === 'x-request-id' || k === 'transfer-encoding' || k === 'connection') continue;
    const v = headers[k]!;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, v);
  }
  if (extra) out.push(...extra);
  ex.bytesOut = Buffer.byteLength(body);
  out.push('content-length', String(ex.bytesOut));
  res.writeHead(status, out);
  res.end(body);
}
