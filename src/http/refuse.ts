// The one writer of answers that go straight onto a socket, where Node has no request object
// (parse errors, CONNECT, upgrades): the same catalog body and headers as every other refusal.
import http from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, proxyError, type ErrorCode } from '../errors.js';

/** How long a refused connection may stay open after its answer was written. */
const REFUSE_LINGER_MS = 1000;

export function refuseRaw(socket: Socket, code: ErrorCode, message?: string): void {
  const err = proxyError(code, message === undefined ? {} : { message });
  const status = err.status;
  const body = errorBody(err, undefined, '-');
  lingerThenDestroy(
    socket,
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-breakwater-error: ${code}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Ends the connection (after `last`, if given) and destroys it soon, read or not. */
export function lingerThenDestroy(socket: Socket, last?: string): void {
  if (last === undefined) socket.end();
  else socket.end(last);
  // Node's server sockets are half-open: end() only sends our FIN, and a client that never reads
  // (so never sees it) nor closes keeps the connection, and its maxConnections slot, for ever.
  // Linger briefly so a reading client gets the answer before a reset could eat it (nginx's
  // lingering_close), then destroy. Bytes it still sends are read and dropped meanwhile.
  socket.resume();
  const linger = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
}
