// A scriptable fake upstream on 127.0.0.1. Its behaviour can change while it runs:
// answer, fail (5xx), 429 (with or without Retry-After), hang, reset before or mid-response,
// trickle bytes slowly, send malformed HTTP, close keep-alive sockets early, or a custom handler.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Mode =
  | 'ok'
  | 'fail'
  | '429'
  | 'hang'
  | 'reset' // read the request, then RST without answering
  | 'reset-mid' // send headers and part of the body, then RST
  | 'trickle' // send the body one byte every `trickleMs`
  | 'malformed' // answer garbage instead of HTTP
  | 'close-after' // answer, then close the keep-alive socket
  | 'slow';

export interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  at: number;
}

export interface FakeUpstream {
  readonly url: string;
  readonly port: number;
  readonly seen: Seen[];
  mode: Mode;
  status: number;
  delayMs: number;
  trickleMs: number;
  retryAfter: string | undefined;
  /** Response body for 'ok' (default: a JSON echo). */
  body: Buffer | string | undefined;
  /** Takes over answering when set. */
  handler: ((req: IncomingMessage, res: ServerResponse, body: Buffer) => void) | undefined;
  /** Requests whose headers arrived (including ones whose body never finished). */
  started: number;
  sockets: Set<Socket>;
  /** Stops listening (new connections are refused) and leaves open connections alone. */
  stopListening(): void;
  close(): Promise<void>;
}

export async function fakeUpstream(name = 'upstream'): Promise<FakeUpstream> {
  const sockets = new Set<Socket>();
  const state: FakeUpstream = {
    url: '',
    port: 0,
    seen: [],
    mode: 'ok',
    status: 200,
    delayMs: 0,
    trickleMs: 20,
    retryAfter: undefined,
    body: undefined,
    handler: undefined,
    started: 0,
    sockets,
    stopListening: () => {},
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    state.started++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      state.seen.push({ method: req.method!, url: req.url!, headers: req.headers, body, at: Date.now() });
      if (state.handler) return state.handler(req, res, body);
      const echo = () => JSON.stringify({ upstream: name, method: req.method, url: req.url, bodyBytes: body.length });
      switch (state.mode) {
        case 'hang':
          return;
        case 'reset':
          return req.socket.resetAndDestroy();
        case 'malformed':
          req.socket.end('HTTP/1.1 2OO WHAT\r\nthis is not http\r\n\r\n');
          return;
        case 'fail':
          res.writeHead(state.status >= 500 ? state.status : 503, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ upstream: name, error: 'down' }));
        case '429': {
          const h: Record<string, string> = { 'content-type': 'application/json' };
          if (state.retryAfter !== undefined) h['retry-after'] = state.retryAfter;
          res.writeHead(429, h);
          return res.end(JSON.stringify({ code: 20429, message: 'Too Many Requests', status: 429 }));
        }
        case 'reset-mid':
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
          res.write('{"partial":');
          setTimeout(() => req.socket.resetAndDestroy(), 20);
          return;
        case 'trickle': {
          const text = Buffer.from(state.body ?? echo());
          res.writeHead(state.status, { 'content-type': 'application/json', 'content-length': String(text.length) });
          let i = 0;
          const t = setInterval(() => {
            if (res.destroyed) return clearInterval(t);
            res.write(text.subarray(i, i + 1));
            if (++i >= text.length) {
              clearInterval(t);
              res.end();
            }
          }, state.trickleMs);
          return;
        }
        case 'slow':
          setTimeout(() => {
            res.writeHead(state.status, { 'content-type': 'application/json' });
            res.end(state.body ?? echo());
          }, state.delayMs);
          return;
        case 'close-after':
          res.writeHead(state.status, { 'content-type': 'application/json', connection: 'close' });
          return res.end(state.body ?? echo());
        default:
          res.writeHead(state.status, { 'content-type': 'application/json', 'twilio-request-id': 'RQ0123' });
          res.end(state.body ?? echo());
      }
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  Object.assign(state, {
    port,
    url: `http://127.0.0.1:${port}`,
    stopListening: () => {
      if (server.listening) server.close();
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
  return state;
}
