// The listener apps talk to: Node's HTTP server with the limits that make its timeouts mean what
// they say, refusals for what never reaches the pipeline (CONNECT, upgrades, parse errors), and
// the per-connection bookkeeping the drain needs.
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, proxyError } from '../errors.js';
import { sanitisedHost, type Metrics } from '../metrics.js';
import type { Log } from '../log.js';
import type { Policy } from '../policy/schema.js';
import { lingerThenDestroy, refuseRaw } from '../http/refuse.js';

export interface ClientListener {
  readonly server: Server;
  /** Connections with a request in flight. */
  inFlight(): number;
  /** Stops accepting: idle connections close now, a busy one after the answer it is writing. */
  drain(): void;
  destroyAll(): void;
}

const kConn = Symbol('breakwater.connection');
/** A client connection with its drain bookkeeping: requests in flight and the newest response. */
type TrackedSocket = Socket & { [kConn]: { inFlight: number; current: ServerResponse | undefined } | undefined };
const kSocketOf = Symbol('breakwater.socketOf');
type TrackedResponse = ServerResponse & { [kSocketOf]: TrackedSocket | undefined };

/**
 * `settings` is read at start for what Node fixes per server (timeouts, header limits) and per
 * request for the rest; `handle` is called with each request the pipeline should see.
 */
export function clientListener(
  settings: () => Policy['server'],
  metrics: Metrics,
  log: Log,
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
): ClientListener {
  const atStart = settings();
  let draining = false;
  const sockets = new Set<Socket>();
  let busy = 0;

  // Per-connection bookkeeping lives on the connection itself, and the response 'close'
  // listener is one shared function: a closure and a Map entry per request kept part of every
  // request alive into the old generation (docs/performance.md, "Where the time goes").
  function onResponseClose(this: TrackedResponse): void {
    // The response's own note of its connection: by now Node may have detached both.
    const socket = this[kSocketOf];
    const conn = socket?.[kConn];
    if (socket === undefined || conn === undefined || conn.inFlight === 0) return;
    if (conn.current === this) conn.current = undefined;
    if (--conn.inFlight === 0) {
      busy--;
      if (draining) socket.end();
    }
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as TrackedSocket;
    // A request read from a connection the drain has already half-closed can never be answered:
    // never start it, so it cannot reach an upstream (a lost answer to a forwarded POST is a
    // duplicate SMS when the app retries). The client sees the connection close unanswered, the
    // keep-alive race every HTTP/1.1 client must be ready to retry.
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const conn = (socket[kConn] ??= { inFlight: 0, current: undefined });
    if (conn.inFlight++ === 0) busy++;
    conn.current = res;
    (res as TrackedResponse)[kSocketOf] = socket;
    if (draining) res.shouldKeepAlive = false;
    res.on('close', onResponseClose);
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'request handling failed');
      if (res.headersSent) return res.destroy();
      const body = errorBody(proxyError('internal_error'), undefined, '-');
      res.writeHead(500, { 'content-type': 'application/json', 'x-breakwater-error': 'internal_error', connection: 'close' });
      res.end(body);
    });
  };

  const server = http.createServer(
    {
      maxHeaderSize: atStart.maxHeaderBytes,
      headersTimeout: atStart.headersTimeout,
      requestTimeout: atStart.requestTimeout,
      keepAliveTimeout: atStart.keepAliveTimeout,
      // Node enforces headersTimeout/requestTimeout only when it sweeps its connection list,
      // every 30 s by default: a 10 s header timeout would really be up to 40 s. Sweep often
      // enough that the limits mean what they say.
      connectionsCheckingInterval: Math.min(1000, atStart.headersTimeout / 2),
      // Node's parser already rejects conflicting Content-Length/Transfer-Encoding; keep it strict.
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
    },
    onRequest,
  );
  server.maxConnections = atStart.maxConnections;
  // One line more than the limit is kept, so a head over it is seen and refused (431) rather than
  // cut to size: Node drops lines past its limit silently, and a late Content-Length or
  // Authorization would vanish.
  server.maxHeadersCount = atStart.maxHeaders + 1;
  // Node answers `Expect: 100-continue` with 100 by itself before the request is seen, inviting a
  // body the proxy is about to refuse: a declared oversize gets its 413 without the 100 (the
  // request-body stage answers it), as nginx does.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const declared = Number(req.headers['content-length']);
    if (!(declared > settings().maxBodyBytes)) res.writeContinue();
    onRequest(req, res);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    metrics.clientConnections.inc();
    (s as TrackedSocket)[kConn] = { inFlight: 0, current: undefined };
    s.on('close', () => {
      sockets.delete(s);
      const conn = (s as TrackedSocket)[kConn];
      if (conn !== undefined && conn.inFlight > 0) busy--;
      // Zeroed, not removed: writing undefined over the field would generalise the Socket map and
      // deoptimise every compiled function in node's HTTP and stream code that has seen a socket.
      if (conn !== undefined) conn.inFlight = 0;
      metrics.clientConnections.dec();
    });
  });
  // CONNECT would make us a tunnel to anywhere: refuse it on the wire.
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    // No request reaches the pipeline, so no access line: this is its line.
    metrics.openProxyRefusals.labels('connect').inc();
    log.warn(
      { reqId: '-', method: 'CONNECT', probeHost: sanitisedHost(req.url ?? ''), status: 405, outcome: 'method_not_allowed' },
      'open-proxy attempt refused',
    );
    refuseRaw(socket, 'method_not_allowed', 'CONNECT is not supported: Breakwater is not a forward proxy.');
  });
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => refuseRaw(socket, 'bad_request', 'Protocol upgrades are not supported.'));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // The parser can fail after it handed us a request whose answer is already written (a framing
    // error found past the head, e.g. an unknown transfer coding): a second, raw answer would
    // read as the answer to a request the client never sent. Close after the first one instead.
    const current = (socket as TrackedSocket)[kConn]?.current;
    if (current !== undefined && current.headersSent) {
      lingerThenDestroy(socket);
      return;
    }
    if (err.code === 'HPE_HEADER_OVERFLOW') refuseRaw(socket, 'headers_too_large');
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') refuseRaw(socket, 'request_timeout');
    else refuseRaw(socket, 'bad_request', 'Malformed HTTP request.');
  });

  return {
    server,
    inFlight: () => busy,
    drain() {
      draining = true;
      server.close();
      // Idle keep-alive connections carry no request: close them now. On a busy one, an answer
      // not yet started goes out with Connection: close, so its client sends nothing more on a
      // connection about to close. With HTTP pipelining only the newest response is marked, which
      // is enough: it is the last one sent on that connection.
      for (const s of sockets) {
        const conn = (s as TrackedSocket)[kConn];
        if (conn === undefined || conn.inFlight === 0) s.end();
        else if (conn.current !== undefined && !conn.current.headersSent) conn.current.shouldKeepAlive = false;
      }
    },
    destroyAll() {
      for (const s of sockets) s.destroy();
    },
  };
}
