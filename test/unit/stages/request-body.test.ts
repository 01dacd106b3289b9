// The request-body stage on an in-memory request stream: what is read whole (and shown to the
// guard), what streams through, and what is refused before anything is forwarded: a declared
// length over the limit, a body that ends early, a chunked body that grows past the limit.
import { PassThrough, Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { BODY_TOO_LARGE, proxyError, type ProxyError } from '../../../src/errors.js';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { requestBody, type BodyLimits } from '../../../src/stages/request-body.js';
import { fakeExchange, SENT_200 } from '../support/exchange.js';

const LIMITS: BodyLimits = { maxBodyBytes: 100, bufferBodyBytes: 10 };

/** An exchange whose request is a stream of `chunks` with these headers. */
function exchangeWith(headers: Record<string, string>, source: Readable): Exchange {
  const req = Object.assign(source, { headers }) as unknown as IncomingMessage;
  return { ...fakeExchange({ headers }), req };
}
const chunksOf = (...parts: string[]) => Readable.from(parts.map((p) => Buffer.from(p)));

async function run(limits: BodyLimits, ex: Exchange): Promise<{ reply: Reply; seen: Exchange | undefined }> {
  let seen: Exchange | undefined;
  const reply = await requestBody(limits)(ex, (e) => {
    seen = e;
    return Promise.resolve(SENT_200);
  });
  return { reply, seen };
}

async function drain(s: AsyncIterable<Buffer> | NodeJS.ReadableStream): Promise<string> {
  const out: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) out.push(Buffer.from(c));
  return Buffer.concat(out).toString();
}

describe('request-body stage', () => {
  it('a request without a body passes straight through', async () => {
    const ex = exchangeWith({}, chunksOf());
    const { reply, seen } = await run(LIMITS, ex);
    expect(reply).toBe(SENT_200);
    expect(seen).toBe(ex);
    expect(ex.body).toBeUndefined();
    expect(ex.streamed).toBe(false);
  });

  it('Content-Length: 0 is an empty buffered body', async () => {
    const ex = exchangeWith({ 'content-length': '0' }, chunksOf());
    await run(LIMITS, ex);
    expect(ex.body).toEqual(Buffer.alloc(0));
    expect(ex.streamed).toBe(false);
  });

  it('a small declared body is read whole, across chunks, before the next stage runs', async () => {
    const ex = exchangeWith({ 'content-length': '9' }, chunksOf('To=', '+15', '555'));
    const { seen } = await run(LIMITS, ex);
    expect(seen?.body?.toString()).toBe('To=+15555');
    expect(ex.streamed).toBe(false);
    expect(ex.bodyStream).toBeUndefined();
  });

  it('a declared length over maxBodyBytes is refused 413 without reading or forwarding', async () => {
    const ex = exchangeWith({ 'content-length': '101' }, chunksOf('x'));
    const { reply, seen } = await run(LIMITS, ex);
    expect(seen).toBeUndefined();
    expect(reply).toMatchObject({ kind: 'error', code: 'payload_too_large', status: 413 });
  });

  it('a body shorter than its Content-Length is refused 400 (ended early)', async () => {
    const ex = exchangeWith({ 'content-length': '8' }, chunksOf('abc'));
    const { reply, seen } = await run(LIMITS, ex);
    expect(seen).toBeUndefined();
    expect(reply).toMatchObject({ code: 'bad_request', status: 400, message: expect.stringMatching(/ended early/) });
  });

  it('a request stream that errors while read whole is refused 400', async () => {
    const src = new PassThrough();
    const ex = exchangeWith({ 'content-length': '8' }, src);
    const pending = run(LIMITS, ex);
    src.write('abc');
    src.destroy(new Error('socket hang up'));
    const { reply, seen } = await pending;
    expect(seen).toBeUndefined();
    expect(reply).toMatchObject({ code: 'bad_request' });
  });

  it('the guard sees the buffered body and its refusal is the reply', async () => {
    const refusal: ProxyError = proxyError('bad_request', { message: 'repeated key field' });
    const bodies: string[] = [];
    const guard = (ex: Exchange) => {
      bodies.push(ex.body!.toString());
      return ex.body!.toString().includes('To=1&To=2') ? refusal : undefined;
    };
    const refused = await run({ ...LIMITS, guard }, exchangeWith({ 'content-length': '9' }, chunksOf('To=1&To=2')));
    expect(refused.reply).toBe(refusal);
    expect(refused.seen).toBeUndefined();
    const passed = await run({ ...LIMITS, guard }, exchangeWith({ 'content-length': '4' }, chunksOf('To=1')));
    expect(passed.reply).toBe(SENT_200);
    expect(bodies).toEqual(['To=1&To=2', 'To=1']);
  });

  it('a declared body over bufferBodyBytes streams: the request itself is the body stream, unread', async () => {
    const src = chunksOf('0123456789', 'abcdef');
    const ex = exchangeWith({ 'content-length': '16' }, src);
    const { seen } = await run(LIMITS, ex);
    expect(seen).toBe(ex);
    expect(ex.streamed).toBe(true);
    expect(ex.body).toBeUndefined();
    expect(ex.bodyStream).toBe(ex.req);
    expect(await drain(ex.bodyStream!)).toBe('0123456789abcdef');
  });

  it('a small chunked body is buffered after all (and shown to the guard)', async () => {
    let guarded = false;
    const ex = exchangeWith({ 'transfer-encoding': 'chunked' }, chunksOf('ab', 'cd'));
    await run({ ...LIMITS, guard: () => ((guarded = true), undefined) }, ex);
    expect(ex.streamed).toBe(false);
    expect(ex.body?.toString()).toBe('abcd');
    expect(guarded).toBe(true);
  });

  it('a larger chunked body streams, every byte in order, the first ones already read included', async () => {
    const ex = exchangeWith({ 'transfer-encoding': 'chunked' }, chunksOf('01234', '56789', 'ab', 'cdefgh'));
    await run(LIMITS, ex);
    expect(ex.streamed).toBe(true);
    expect(ex.body).toBeUndefined();
    expect(await drain(ex.bodyStream!)).toBe('0123456789abcdefgh');
  });

  it('a chunked body that grows past maxBodyBytes while streaming fails the stream with BODY_TOO_LARGE', async () => {
    const parts = Array.from({ length: 12 }, () => '0123456789'); // 120 bytes > 100
    const ex = exchangeWith({ 'transfer-encoding': 'chunked' }, chunksOf(...parts));
    await run(LIMITS, ex);
    expect(ex.streamed).toBe(true);
    await expect(drain(ex.bodyStream!)).rejects.toMatchObject({ code: BODY_TOO_LARGE });
  });

  it('a chunked body past maxBodyBytes before the buffer fills is refused 413 at once', async () => {
    const ex = exchangeWith({ 'transfer-encoding': 'chunked' }, chunksOf('0123456789', 'abc'));
    const { reply, seen } = await run({ maxBodyBytes: 12, bufferBodyBytes: 50 }, ex);
    expect(seen).toBeUndefined();
    expect(reply).toMatchObject({ code: 'payload_too_large' });
  });

  it('a chunked request that errors before the buffer fills is refused 400', async () => {
    const src = new PassThrough();
    const ex = exchangeWith({ 'transfer-encoding': 'chunked' }, src);
    const pending = run(LIMITS, ex);
    src.write('abc');
    src.destroy(new Error('socket hang up'));
    const { reply, seen } = await pending;
    expect(seen).toBeUndefined();
    expect(reply).toMatchObject({ code: 'bad_request' });
  });
});
