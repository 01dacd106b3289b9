// A fake Exchange for stage unit tests: only plain fields, a request object carrying headers and
// a peer address, and no sockets. Stages under test read what they need from it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bufferedAnswer, newExchange, type Answer, type Exchange, type Reply } from '../../../src/pipeline/exchange.js';
import { TappedBody, type Body, type BodyEnd, type Delivered, type Sink } from '../../../src/pipeline/body.js';

export interface FakeExchangeInit extends Partial<Omit<Exchange, 'req' | 'res'>> {
  headers?: Record<string, string | string[]>;
  remoteAddress?: string;
}

export function fakeExchange(init: FakeExchangeInit = {}): Exchange {
  const { headers = {}, remoteAddress = '127.0.0.1', ...rest } = init;
  const req = { headers, rawHeaders: [], socket: { remoteAddress } } as unknown as IncomingMessage;
  return {
    ...newExchange(req, {} as ServerResponse, 0, 'req-1', 'GET', '/', ''),
    routePath: '/',
    upstreamPath: '/',
    origin: 'https://upstream.test',
    host: 'upstream.test',
    clientKey: 'client-a',
    clientIp: '127.0.0.1',
    ...rest,
  };
}

/** An upstream answer at its head, its body in memory (what forward resolves with, minus the socket). */
export function answer(status: number, headers: Record<string, string> = {}, body = '', source: Answer['source'] = 'forwarded'): Answer {
  return bufferedAnswer(status, headers, Buffer.from(body), source);
}

/** A forwarded 200 (shared: a body already over tells each new tap at once). */
export const SENT_200: Reply = answer(200);

/** Reads an answer's body to its end, as the reply writer would; resolves with how it ended. */
export function drain(reply: Reply): Promise<BodyEnd | undefined> {
  if (reply.kind !== 'answer') return Promise.resolve(undefined);
  const sink = { write: () => true, end() {}, destroy() {}, once() {} };
  return new Promise((resolve) => reply.body.pipe(sink, (d) => resolve(d.end)));
}

/** A body that ends as scripted when read: a reset mid-body (`broken`), a client that left. */
class ScriptedBody extends TappedBody implements Body {
  readonly size = undefined;
  constructor(private readonly how: BodyEnd) {
    super();
  }
  pipe(sink: Sink, done: (d: Delivered) => void): void {
    if (this.how === 'complete') sink.end();
    else sink.destroy();
    this.emitEnd(this.how);
    done({ end: this.how, bytes: 0, aborted: this.how === 'complete' ? undefined : 'scripted' });
  }
  discard(): void {
    this.emitEnd('discarded');
  }
}

/** A forwarded answer whose body ends as `how` once read. */
export function answerEnding(status: number, how: BodyEnd): Answer {
  return { kind: 'answer', status, headers: [], body: new ScriptedBody(how), source: 'forwarded' };
}
