// The forward stage against a scripted dispatcher: the test plays undici's side of one attempt
// (connect, head, body chunks, completion, errors) and the client's (a response that closes), so
// the whole client-gone matrix runs in milliseconds with no sockets.
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { describe, expect, it } from 'vitest';
import { readBody, type BodyEnd, type Delivered, type Sink } from '../../../src/pipeline/body.js';
import { newExchange, type Answer, type Exchange, type Reply } from '../../../src/pipeline/exchange.js';
import { RouteTable } from '../../../src/routing/route-table.js';
import { forward } from '../../../src/stages/forward.js';

/** The client's response: write/end/destroy recorded, 'close' emitted on demand. */
class FakeResponse extends EventEmitter {
  chunks: Buffer[] = [];
  ended = false;
  destroyed = false;
  writableFinished = false;
  headersSent = true;
  /** false: the next write reports back-pressure. */
  accept = true;
  write(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    return this.accept;
  }
  end(): void {
    this.ended = true;
    this.writableFinished = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  /** The app hangs up. */
  hangUp(): void {
    this.destroyed = true;
    this.emit('close');
  }
}

/** undici's side of one attempt, played by the test. */
class ScriptedDispatcher {
  handler: Dispatcher.DispatchHandler | undefined;
  aborted: Error | undefined;
  resumed = 0;
  dispatch(_opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.handler = handler;
    return true;
  }
  connect(): void {
    this.handler!.onConnect!((err?: Error) => {
      if (this.aborted !== undefined) return;
      this.aborted = err ?? new Error('aborted');
      // undici reports an abort through onError.
      this.handler!.onError!(this.aborted);
    });
  }
  /** Returns what onHeaders answered: false pauses the upstream. */
  head(status: number, headers: Record<string, string> = {}): boolean | undefined {
    const raw: Buffer[] = [];
    for (const [k, v] of Object.entries(headers)) raw.push(Buffer.from(k), Buffer.from(v));
    return this.handler!.onHeaders!(status, raw, () => this.resumed++, '') as boolean | undefined;
  }
  data(text: string): boolean | undefined {
    return this.handler!.onData!(Buffer.from(text)) as boolean | undefined;
  }
  complete(): void {
    this.handler!.onComplete!([]);
  }
  fail(code: string): void {
    this.handler!.onError!(Object.assign(new Error(code), { code }));
  }
}

function setup(init: Partial<Exchange> = {}) {
  const res = new FakeResponse();
  const socket = { destroyed: false, writable: true, once() {}, off() {}, destroy() {} };
  const req = { headers: {}, rawHeaders: ['host', 'x'], socket } as unknown as IncomingMessage;
  const ex: Exchange = {
    ...newExchange(req, res as unknown as ServerResponse, 0, 'req-1', 'POST', '/call', ''),
    upstream: { name: 'vapi', routes: new RouteTable<string>() },
    origin: 'https://upstream.test',
    host: 'upstream.test',
    routePath: '/call',
    upstreamPath: '/call',
    ...init,
  };
  const d = new ScriptedDispatcher();
  const attempt = forward(d);
  const replied = attempt(ex);
  return { ex, res, d, replied };
}

/** Pipes an answer to the fake client, as the reply writer does. */
function pipeToClient(a: Answer, res: FakeResponse): Promise<Delivered> {
  return new Promise((resolve) => a.body.pipe(res as unknown as Sink, resolve));
}

async function answerOf(replied: Promise<Reply>): Promise<Answer> {
  const r = await replied;
  if (r.kind !== 'answer') throw new Error(`expected an answer, got ${r.kind}`);
  return r;
}

describe('forward: the answer is a value at its head', () => {
  it('resolves at the head; chunks before a reader wait for it, in order, and go out once piped', async () => {
    const { d, res, replied } = setup();
    d.connect();
    // Not paused at the head: a small answer usually comes in the read that carried it.
    expect(d.head(201, { 'content-type': 'application/json', connection: 'keep-alive', date: 'x' })).toBe(true);
    const a = await answerOf(replied);
    expect(a.status).toBe(201);
    // Hop-by-hop headers and the upstream's Date are not relayed.
    expect(a.headers).toEqual(['content-type', 'application/json']);
    expect(d.data('{"id":')).toBe(true);
    expect(d.data('1}')).toBe(true);
    d.complete();
    expect(res.chunks).toEqual([]);
    const seen: string[] = [];
    a.body.tap({ data: (c) => void seen.push(c.toString()), end: (how) => void seen.push(`end ${how}`) });
    const delivered = pipeToClient(a, res);
    expect(await delivered).toEqual({ end: 'complete', bytes: 8, aborted: undefined });
    expect(Buffer.concat(res.chunks).toString()).toBe('{"id":1}');
    expect(res.ended).toBe(true);
    // A tap attached after the head still sees every byte, then the end.
    expect(seen).toEqual(['{"id":', '1}', 'end complete']);
  });

  it('pauses the upstream once more than 16 KiB wait for a reader, and resumes it when piped', async () => {
    const { d, res, replied } = setup();
    d.connect();
    d.head(200);
    const a = await answerOf(replied);
    const kib = 'x'.repeat(1024);
    let paused = false;
    for (let i = 0; i < 17 && !paused; i++) paused = d.data(kib) === false;
    expect(paused).toBe(true);
    expect(d.resumed).toBe(0);
    const delivered = pipeToClient(a, res);
    expect(d.resumed).toBe(1);
    d.data('end');
    d.complete();
    expect((await delivered).bytes).toBe(17 * 1024 + 3);
    expect(Buffer.concat(res.chunks).toString().endsWith('xend')).toBe(true);
  });

  it('taps see every chunk and the end; a body can be read into memory', async () => {
    const { d, replied } = setup();
    d.connect();
    d.head(200);
    const a = await answerOf(replied);
    const seen: string[] = [];
    a.body.tap({ data: (c) => void seen.push(c.toString()), end: (how) => void seen.push(`end ${how}`) });
    const read = readBody(a.body, 1024);
    d.data('ab');
    d.data('cd');
    d.complete();
    expect((await read).buf.toString()).toBe('abcd');
    expect(seen).toEqual(['ab', 'cd', 'end complete']);
  });

  it('a bodiless 304 is whole at its head: a later Content-Length fault is ignored', async () => {
    const { d, res, replied } = setup({ method: 'GET' });
    d.connect();
    expect(d.head(304, { 'content-length': '10', etag: '"v1"' })).toBe(true);
    const a = await answerOf(replied);
    d.fail('UND_ERR_RES_CONTENT_LENGTH_MISMATCH');
    expect(await pipeToClient(a, res)).toMatchObject({ end: 'complete' });
    expect(res.destroyed).toBe(false);
  });

  it('a 1xx is passed over; a status above 599 is refused as a bad answer', async () => {
    const { d, replied } = setup();
    d.connect();
    expect(d.head(103)).toBe(true);
    expect(d.head(600)).toBe(false);
    const r = await replied;
    expect(r).toMatchObject({ kind: 'failed', cause: 'reset', mayHaveReachedUpstream: true });
  });

  it('a discarded body is drained to nowhere (the connection kept) and ends complete', async () => {
    const { d, replied } = setup({ method: 'GET' });
    d.connect();
    d.head(503);
    const a = await answerOf(replied);
    const ends: BodyEnd[] = [];
    a.body.tap({ end: (how) => void ends.push(how) });
    a.body.discard();
    expect(d.resumed).toBe(1);
    d.data('x'.repeat(100));
    d.complete();
    expect(d.aborted).toBeUndefined();
    expect(ends).toEqual(['complete']);
  });

  it('a discarded body past 64 KiB is stopped instead', async () => {
    const { d, replied } = setup({ method: 'GET' });
    d.connect();
    d.head(503);
    const a = await answerOf(replied);
    const ends: BodyEnd[] = [];
    a.body.tap({ end: (how) => void ends.push(how) });
    a.body.discard();
    d.data('x'.repeat(65 * 1024));
    expect(d.aborted).toBeDefined();
    expect(ends).toEqual(['discarded']);
  });
});

describe('forward: the client-gone matrix', () => {
  it('gone before the request was written: never sent, says so', async () => {
    const { d, res, replied } = setup();
    res.hangUp();
    d.connect();
    expect(await replied).toMatchObject({ kind: 'failed', cause: 'client', mayHaveReachedUpstream: false });
    expect(d.aborted).toBeDefined();
  });

  it('gone while waiting for the head: the attempt stops; it may have reached the upstream', async () => {
    const { d, res, replied } = setup();
    d.connect();
    res.hangUp();
    expect(d.aborted?.message).toBe('client closed');
    expect(await replied).toMatchObject({ kind: 'failed', cause: 'client', mayHaveReachedUpstream: true });
  });

  it('gone while waiting, with a kept answer (a keyed create): read on to the end for the store', async () => {
    const { d, res, replied } = setup({ keepsAnswer: true });
    d.connect();
    res.hangUp();
    expect(d.aborted).toBeUndefined();
    d.head(201);
    const a = await answerOf(replied);
    const kept: string[] = [];
    a.body.tap({ data: (c) => void kept.push(c.toString()), end: (how) => void kept.push(how) });
    a.body.discard(); // what the writer does for a client that is gone
    d.data('{"id":"call-1"}');
    d.complete();
    expect(kept).toEqual(['{"id":"call-1"}', 'complete']);
  });

  it('a kept answer is read on only while the store still wants it', async () => {
    const { d, res, replied } = setup({ keepsAnswer: true });
    d.connect();
    res.hangUp();
    d.head(201);
    const a = await answerOf(replied);
    const ends: BodyEnd[] = [];
    a.body.tap({ data: () => false, end: (how) => void ends.push(how) });
    a.body.discard();
    d.data('too big for the store');
    expect(d.aborted?.message).toBe('client closed');
    expect(ends).toEqual(['client']);
  });

  it("gone mid-body: the attempt stops and the body ends as the client's doing, not a reset", async () => {
    const { d, res, replied } = setup();
    d.connect();
    d.head(200);
    const delivered = pipeToClient(await answerOf(replied), res);
    d.data('part');
    res.hangUp();
    expect(await delivered).toMatchObject({ end: 'client', bytes: 4 });
  });

  it('the upstream cuts the body: the client sees a break (no clean end) and the end is broken', async () => {
    const { d, res, replied } = setup();
    d.connect();
    d.head(200);
    const delivered = pipeToClient(await answerOf(replied), res);
    d.data('part');
    d.fail('ECONNRESET');
    expect(await delivered).toEqual({ end: 'broken', bytes: 4, aborted: 'ECONNRESET' });
    expect(res.destroyed).toBe(true);
    expect(res.ended).toBe(false);
  });

  it('a body that broke while waiting for its reader reaches it cut', async () => {
    const { d, res, replied } = setup();
    d.connect();
    d.head(200);
    const a = await answerOf(replied);
    d.fail('ECONNRESET');
    expect(await pipeToClient(a, res)).toMatchObject({ end: 'broken' });
    expect(res.destroyed).toBe(true);
  });

  it('back-pressure pauses the upstream until the client drains', async () => {
    const { d, res, replied } = setup();
    d.connect();
    d.head(200);
    const delivered = pipeToClient(await answerOf(replied), res);
    res.accept = false;
    expect(d.data('slow')).toBe(false);
    const before = d.resumed;
    res.accept = true;
    res.emit('drain');
    expect(d.resumed).toBe(before + 1);
    d.complete();
    expect(await delivered).toMatchObject({ end: 'complete', bytes: 4 });
  });

  it('a connect failure before the request left is a failure that never reached the upstream', async () => {
    const { d, replied } = setup();
    d.fail('ECONNREFUSED');
    expect(await replied).toMatchObject({ kind: 'failed', cause: 'connect', mayHaveReachedUpstream: false });
  });
});
