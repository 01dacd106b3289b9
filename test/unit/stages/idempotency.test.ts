// The idempotency stage with a scripted `next` and an in-memory store (or a tiny store double):
// a keyed create is forwarded once and replayed after; a different body under the same key is
// 422; a duplicate in flight waits for its original; upstream 429/503 and refusals that prove
// nothing was sent release the key; an answer that cannot be replayed (cut off, too large) is
// stored as an ambiguous proxy 502; a store that cannot answer refuses with 503; requests
// without a key (or with a method not in the policy) pass straight through.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { proxyError, type ErrorCode, type ProxyError } from '../../../src/errors.js';
import type { BodyEnd } from '../../../src/pipeline/body.js';
import { readBody } from '../../../src/pipeline/body.js';
import { answerHeader, type Answer, type Exchange, type Failed, type Reply } from '../../../src/pipeline/exchange.js';
import { idempotencySchema } from '../../../src/policy/schema.js';
import { manualClock } from '../../../src/resilience/clock.js';
import { idempotency } from '../../../src/stages/idempotency.js';
import { MemoryIdempotencyStore, type Claim, type IdempotencyStore, type Lookup, type StoredAnswer } from '../../../src/store/idempotency-store.js';
import { answer, answerEnding, drain, fakeExchange, type FakeExchangeInit } from '../support/exchange.js';

const BODY = '{"assistantId":"a1","customer":{"number":"+15550001111"}}';
const OTHER_BODY = '{"assistantId":"a1","customer":{"number":"+15550002222"}}';

/** A buffered POST /call, with the key header when one is given. */
function post(key: string | undefined, body = BODY, init: FakeExchangeInit = {}): Exchange {
  return fakeExchange({
    method: 'POST',
    routePath: '/call',
    upstreamPath: '/call',
    body: Buffer.from(body),
    headers: key === undefined ? {} : { 'idempotency-key': key },
    ...init,
  });
}

const created = (id: string): Answer => answer(201, { 'content-type': 'application/json', 'x-upstream-id': id }, `{"id":"${id}"}`);

async function text(reply: Reply): Promise<string> {
  if (reply.kind !== 'answer') throw new Error(`expected an answer, got ${reply.kind}`);
  return (await readBody(reply.body, 1 << 20)).buf.toString();
}

function asAnswer(reply: Reply): Answer {
  if (reply.kind !== 'answer') throw new Error(`expected an answer, got ${reply.kind} ${JSON.stringify(reply)}`);
  return reply;
}

function asError(reply: Reply): ProxyError {
  if (reply.kind !== 'error') throw new Error(`expected a proxy error, got ${reply.kind}`);
  return reply;
}

/** Lets every pending promise callback run (no timers involved). */
const flush = () => new Promise<void>((r) => setImmediate(r));

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A memory store whose calls are recorded. */
class SpyStore implements IdempotencyStore {
  readonly calls: string[] = [];
  constructor(readonly inner: MemoryIdempotencyStore) {}
  lookup(key: string): Lookup {
    this.calls.push('lookup');
    return this.inner.lookup(key);
  }
  claim(key: string, fingerprint: string, _holdMs: number, _keepMs?: number): Claim {
    this.calls.push('claim');
    return this.inner.claim(key, fingerprint);
  }
  complete(key: string, fingerprint: string, a: StoredAnswer | undefined, ttlMs: number): void {
    this.calls.push(a === undefined ? 'release' : 'store');
    this.inner.complete(key, fingerprint, a, ttlMs);
  }
  size(): number {
    return this.inner.size();
  }
}

interface Options {
  policy?: Parameters<typeof idempotencySchema.parse>[0];
  store?: IdempotencyStore;
}

/** The stage, its store and clock, the outcomes it counted, and an upstream scripted by factories (a fresh answer per call). */
function setup(script: (() => Reply | Promise<Reply>)[] = [() => created('call_1')], opts: Options = {}) {
  const policy = idempotencySchema.parse(opts.policy ?? {});
  const clock = manualClock(0);
  const memory = new MemoryIdempotencyStore(100, clock);
  const spy = new SpyStore(memory);
  const store = opts.store ?? spy;
  const outcomes: string[] = [];
  const stage = idempotency('vapi', policy, store, {
    counter: (outcome) => ({ inc: () => outcomes.push(outcome) }),
    clock,
    claimMs: 60_000,
  });
  const calls: Exchange[] = [];
  const next = async (ex: Exchange): Promise<Reply> => {
    calls.push(ex);
    const make = script[Math.min(calls.length - 1, script.length - 1)];
    if (make === undefined) throw new Error('script exhausted');
    return make();
  };
  /** Runs one request through the stage and reads its answer's body, as the reply writer would. */
  const send = async (ex: Exchange) => {
    const reply = await stage(ex, next);
    const body = reply.kind === 'answer' ? await text(reply) : undefined;
    return { ex, reply, body };
  };
  return { stage, next, send, calls, outcomes, policy, clock, memory, spy };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('idempotency stage: forwarded once, then replayed', () => {
  it('forwards a keyed POST once and answers the same key and body from the store, marked Idempotent-Replayed', async () => {
    const s = setup();
    const first = await s.send(post('k-1'));
    expect(s.calls).toHaveLength(1);
    const a1 = asAnswer(first.reply);
    expect(a1.status).toBe(201);
    expect(a1.source).toBe('forwarded');
    expect(answerHeader(a1, 'idempotent-replayed')).toBeUndefined();
    expect(first.body).toBe('{"id":"call_1"}');
    expect(first.ex.keepsAnswer).toBe(true);
    expect(s.memory.size()).toBe(1);

    const again = await s.send(post('k-1'));
    expect(s.calls).toHaveLength(1); // not sent again
    const a2 = asAnswer(again.reply);
    expect(a2.status).toBe(201);
    expect(a2.source).toBe('replayed');
    expect(answerHeader(a2, 'idempotent-replayed')).toBe('true');
    expect(answerHeader(a2, 'content-type')).toBe('application/json');
    expect(answerHeader(a2, 'x-upstream-id')).toBe('call_1');
    expect(again.body).toBe('{"id":"call_1"}');
    expect(s.outcomes).toEqual(['forwarded', 'replayed']);
  });

  it('replays every later duplicate, not just the first', async () => {
    const s = setup([() => created('call_1'), () => created('call_2')]);
    await s.send(post('k-many'));
    for (let i = 0; i < 3; i++) {
      const r = await s.send(post('k-many'));
      expect(r.body).toBe('{"id":"call_1"}');
    }
    expect(s.calls).toHaveLength(1);
  });

  it('stores other upstream error answers too (they were processed): a 4xx or 5xx other than 429/503 is replayed', async () => {
    for (const status of [400, 409, 500, 502]) {
      const s = setup([() => answer(status, { 'content-type': 'application/json' }, `{"status":${status}}`), () => created('call_2')]);
      await s.send(post('k-err'));
      const again = await s.send(post('k-err'));
      expect(s.calls).toHaveLength(1);
      expect(asAnswer(again.reply).status).toBe(status);
      expect(answerHeader(asAnswer(again.reply), 'idempotent-replayed')).toBe('true');
      expect(again.body).toBe(`{"status":${status}}`);
    }
  });

  it('keeps the answer for the policy ttl (seconds, in ms on the clock), then forwards again', async () => {
    const s = setup([() => created('call_1'), () => created('call_2')], { policy: { ttl: 60 } });
    await s.send(post('k-ttl'));
    s.clock.advance(59_999);
    expect((await s.send(post('k-ttl'))).body).toBe('{"id":"call_1"}');
    expect(s.calls).toHaveLength(1);
    s.clock.advance(1);
    const fresh = await s.send(post('k-ttl'));
    expect(s.calls).toHaveLength(2);
    expect(fresh.body).toBe('{"id":"call_2"}');
    expect(answerHeader(asAnswer(fresh.reply), 'idempotent-replayed')).toBeUndefined();
  });

  it('scopes a key to client, credential and path: the same key elsewhere is its own create', async () => {
    const s = setup([() => created('call_1'), () => created('call_2'), () => created('call_3'), () => created('call_4')]);
    await s.send(post('k-scope'));
    await s.send(post('k-scope', BODY, { clientKey: 'client-b' }));
    await s.send(post('k-scope', BODY, { authorization: 'Bearer other' }));
    await s.send(post('k-scope', BODY, { routePath: '/call/other' }));
    expect(s.calls).toHaveLength(4);
    // …and each scope replays its own answer.
    expect((await s.send(post('k-scope', BODY, { clientKey: 'client-b' }))).body).toBe('{"id":"call_2"}');
    expect(s.calls).toHaveLength(4);
  });
});

describe('idempotency stage: the same key with a different body', () => {
  it('refuses it 422 idempotency_mismatch without calling next, and keeps replaying the original', async () => {
    const s = setup([() => created('call_1'), () => created('call_2')]);
    await s.send(post('k-2'));
    const other = await s.send(post('k-2', OTHER_BODY));
    const err = asError(other.reply);
    expect(err.status).toBe(422);
    expect(err.code).toBe('idempotency_mismatch');
    expect(s.calls).toHaveLength(1);
    expect(s.outcomes).toContain('mismatch');

    const same = await s.send(post('k-2'));
    expect(same.body).toBe('{"id":"call_1"}');
    expect(s.calls).toHaveLength(1);
  });

  it('refuses a different body at once while the original is still in flight', async () => {
    const gate = deferred<Reply>();
    const s = setup([() => gate.promise]);
    const original = s.stage(post('k-2b'), s.next);
    await flush();
    expect(s.calls).toHaveLength(1);
    const other = await s.stage(post('k-2b', OTHER_BODY), s.next);
    expect(asError(other).code).toBe('idempotency_mismatch');
    expect(s.calls).toHaveLength(1);
    gate.resolve(created('call_1'));
    await drain(await original);
  });
});

describe('idempotency stage: a duplicate while the original is in flight', () => {
  it('waits for the original and gets its replay; next is called once', async () => {
    const gate = deferred<Reply>();
    const called = deferred<void>();
    const s = setup([
      () => {
        called.resolve();
        return gate.promise;
      },
    ]);
    const original = s.stage(post('k-3'), s.next);
    await called.promise; // the original holds the key and is upstream

    const duplicate = s.stage(post('k-3'), s.next);
    let settled = false;
    void duplicate.then(() => {
      settled = true;
    });
    await flush();
    expect(settled).toBe(false); // waiting on the original

    gate.resolve(created('call_3'));
    const first = await original;
    await flush();
    expect(settled).toBe(false); // the answer is stored only once its body is over
    expect(await text(first)).toBe('{"id":"call_3"}');

    const dup = asAnswer(await duplicate);
    expect(s.calls).toHaveLength(1);
    expect(dup.status).toBe(201);
    expect(dup.source).toBe('replayed');
    expect(answerHeader(dup, 'idempotent-replayed')).toBe('true');
    expect(await text(dup)).toBe('{"id":"call_3"}');
    expect(s.outcomes).toEqual(['forwarded', 'joined', 'replayed']);
  });

  it('takes the key itself when the original it waited for was not stored (an upstream 503)', async () => {
    const gate = deferred<Reply>();
    const s = setup([() => gate.promise, () => created('call_2')]);
    const original = s.stage(post('k-3b'), s.next);
    await flush();
    const duplicate = s.stage(post('k-3b'), s.next);
    await flush();
    gate.resolve(answer(503, {}, 'busy'));
    await drain(await original);
    const dup = asAnswer(await duplicate);
    expect(s.calls).toHaveLength(2);
    expect(dup.status).toBe(201);
    expect(answerHeader(dup, 'idempotent-replayed')).toBeUndefined();
    expect(await text(dup)).toBe('{"id":"call_2"}');
  });

  it('answers 409 idempotency_in_flight with Retry-After once waitTimeout passes', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const gate = deferred<Reply>();
    const s = setup([() => gate.promise], { policy: { waitTimeout: 2 } });
    const original = s.stage(post('k-3c'), s.next);
    await flush();
    const duplicate = s.stage(post('k-3c'), s.next);
    await flush();
    s.clock.advance(s.policy.waitTimeout);
    await vi.advanceTimersByTimeAsync(s.policy.waitTimeout);
    const err = asError(await duplicate);
    expect(err.status).toBe(409);
    expect(err.code).toBe('idempotency_in_flight');
    expect(err.headers?.['retry-after']).toBe('1');
    expect(s.calls).toHaveLength(1);
    expect(s.outcomes).toContain('in_flight');
    gate.resolve(created('call_1'));
    await drain(await original);
  });
});

describe('idempotency stage: answers that say "not processed" release the key', () => {
  it.each([429, 503])('an upstream %i is not stored: the next request with the key goes upstream again', async (status) => {
    const s = setup([() => answer(status, { 'retry-after': '1' }, '{"error":"later"}'), () => created('call_2')]);
    const first = await s.send(post('k-4'));
    expect(asAnswer(first.reply).status).toBe(status);
    expect(first.body).toBe('{"error":"later"}'); // relayed to the app as it came
    expect(s.memory.size()).toBe(0);
    expect(s.spy.calls).toContain('release');
    expect(s.outcomes).toContain('not_stored');

    const again = await s.send(post('k-4'));
    expect(s.calls).toHaveLength(2);
    const a = asAnswer(again.reply);
    expect(a.status).toBe(201);
    expect(answerHeader(a, 'idempotent-replayed')).toBeUndefined();
    expect(again.body).toBe('{"id":"call_2"}');
  });

  const refusals: { desc: string; reply: () => Reply }[] = [
    { desc: 'a local refusal (open breaker)', reply: () => proxyError('circuit_open', { headers: { 'retry-after': '30' } }) },
    { desc: 'a full bulkhead', reply: () => proxyError('bulkhead_full') },
    {
      desc: 'a connect failure (never left)',
      reply: (): Failed => ({ kind: 'failed', cause: 'connect', mayHaveReachedUpstream: false, error: proxyError('upstream_unavailable') }),
    },
  ];
  it.each(refusals)('$desc is not stored: the retry goes upstream', async ({ reply }) => {
    const s = setup([reply, () => created('call_2')]);
    await s.send(post('k-4b'));
    expect(s.memory.size()).toBe(0);
    const again = await s.send(post('k-4b'));
    expect(s.calls).toHaveLength(2);
    expect(again.body).toBe('{"id":"call_2"}');
  });
});

describe('idempotency stage: answers that cannot be replayed are stored as an ambiguous 502', () => {
  it.each<BodyEnd>(['broken', 'client'])('a body that ends %s: the retry gets the stored 502 and next is not called again', async (how) => {
    const s = setup([() => answerEnding(201, how), () => created('call_2')]);
    const first = await s.stage(post('k-5'), s.next);
    expect(asAnswer(first).status).toBe(201); // the app got what came
    expect(await drain(first)).toBe(how);
    expect(s.memory.size()).toBe(1);

    const again = await s.send(post('k-5'));
    expect(s.calls).toHaveLength(1); // no duplicate create
    const a = asAnswer(again.reply);
    expect(a.status).toBe(502);
    expect(answerHeader(a, 'idempotent-replayed')).toBe('true');
    expect(answerHeader(a, 'x-breakwater-error')).toBe('upstream_unavailable');
    expect(answerHeader(a, 'content-type')).toBe('application/json');
    const json = JSON.parse(again.body ?? '') as { code: ErrorCode; status: number; upstream: string; message: string };
    expect(json.code).toBe('upstream_unavailable');
    expect(json.status).toBe(502);
    expect(json.upstream).toBe('vapi');
    expect(json.message).toMatch(/answered 201/);
  });

  it('an answer larger than maxBodyBytes: the app gets it whole once, the retry gets the stored 502', async () => {
    const big = 'x'.repeat(17);
    const s = setup([() => answer(200, {}, big), () => created('call_2')], { policy: { maxBodyBytes: 16 } });
    const first = await s.send(post('k-5b'));
    expect(first.body).toBe(big);

    const again = await s.send(post('k-5b'));
    expect(s.calls).toHaveLength(1);
    const a = asAnswer(again.reply);
    expect(a.status).toBe(502);
    expect(answerHeader(a, 'x-breakwater-error')).toBe('upstream_unavailable');
    expect(again.body).not.toContain(big);
    expect(JSON.parse(again.body ?? '').message).toMatch(/answered 200/);
  });

  it('an answer of exactly maxBodyBytes is stored as it came', async () => {
    const exact = 'y'.repeat(16);
    const s = setup([() => answer(200, {}, exact), () => created('call_2')], { policy: { maxBodyBytes: 16 } });
    await s.send(post('k-5c'));
    const again = await s.send(post('k-5c'));
    expect(s.calls).toHaveLength(1);
    expect(asAnswer(again.reply).status).toBe(200);
    expect(again.body).toBe(exact);
  });

  it('a timeout after sending: the app is told it may have happened, and the retry gets the same 504, not a second create', async () => {
    const timeout: Failed = { kind: 'failed', cause: 'timeout', mayHaveReachedUpstream: true, error: proxyError('upstream_timeout') };
    const s = setup([() => timeout, () => created('call_2')]);
    const first = await s.stage(post('k-5d'), s.next);
    expect(first.kind).toBe('failed');
    if (first.kind !== 'failed') return;
    expect(first.error.code).toBe('upstream_timeout');
    expect(first.error.message).toMatch(/may have taken effect/);

    const again = await s.send(post('k-5d'));
    expect(s.calls).toHaveLength(1);
    const a = asAnswer(again.reply);
    expect(a.status).toBe(504);
    expect(answerHeader(a, 'x-breakwater-error')).toBe('upstream_timeout');
    expect(answerHeader(a, 'idempotent-replayed')).toBe('true');
  });
});

describe('idempotency stage: a store that cannot say', () => {
  function unavailableStore(where: 'lookup' | 'claim', asPromise: boolean) {
    const calls: string[] = [];
    const store: IdempotencyStore = {
      lookup(): Lookup | Promise<Lookup> {
        calls.push('lookup');
        const r: Lookup = where === 'lookup' ? { state: 'unavailable' } : { state: 'absent' };
        return asPromise ? Promise.resolve(r) : r;
      },
      claim(): Claim | Promise<Claim> {
        calls.push('claim');
        const r: Claim = where === 'claim' ? 'unavailable' : 'claimed';
        return asPromise ? Promise.resolve(r) : r;
      },
      complete() {
        calls.push('complete');
      },
      size: () => 0,
    };
    return { store, calls };
  }

  const rows = [
    { where: 'lookup' as const, asPromise: false },
    { where: 'lookup' as const, asPromise: true },
    { where: 'claim' as const, asPromise: false },
    { where: 'claim' as const, asPromise: true },
  ];
  it.each(rows)('$where says unavailable (promise: $asPromise): 503 idempotency_unavailable with Retry-After, nothing sent', async ({ where, asPromise }) => {
    const double = unavailableStore(where, asPromise);
    const s = setup([() => created('call_1')], { store: double.store });
    const { reply } = await s.send(post('k-6'));
    const err = asError(reply);
    expect(err.status).toBe(503);
    expect(err.code).toBe('idempotency_unavailable');
    expect(err.headers?.['retry-after']).toBe('1');
    expect(s.calls).toHaveLength(0);
    expect(s.outcomes).toEqual(['unavailable']);
    expect(double.calls).not.toContain('complete');
    if (where === 'lookup') expect(double.calls).toEqual(['lookup']);
  });
});

describe('idempotency stage: requests it does not take in', () => {
  it('a POST without the key header passes straight through, every time, and nothing is stored', async () => {
    const sent = created('call_1');
    const s = setup([() => sent, () => created('call_2')]);
    const ex = post(undefined);
    const reply = await s.stage(ex, s.next);
    expect(reply).toBe(sent);
    expect(ex.keepsAnswer).toBe(false);
    await drain(reply);
    const again = await s.send(post(undefined));
    expect(again.body).toBe('{"id":"call_2"}');
    expect(s.calls).toHaveLength(2);
    expect(s.spy.calls).toEqual([]);
    expect(s.memory.size()).toBe(0);
  });

  it.each(['GET', 'PUT', 'PATCH', 'DELETE'])('a keyed %s (not in the default methods) passes straight through', async (method) => {
    const s = setup([() => created('call_1'), () => created('call_2')]);
    const first = await s.send(post('k-7', BODY, { method }));
    expect(first.reply.kind).toBe('answer');
    expect(first.ex.keepsAnswer).toBe(false);
    const again = await s.send(post('k-7', BODY, { method }));
    expect(again.body).toBe('{"id":"call_2"}');
    expect(answerHeader(asAnswer(again.reply), 'idempotent-replayed')).toBeUndefined();
    expect(s.calls).toHaveLength(2);
    expect(s.spy.calls).toEqual([]);
  });

  it('follows the policy: its header name (any case) and its methods', async () => {
    const s = setup([() => created('call_1'), () => created('call_2'), () => created('call_3')], {
      policy: { header: 'X-Request-Key', methods: ['PUT'] },
    });
    // A POST is no longer taken in, even with the key.
    await s.send(fakeExchange({ method: 'POST', body: Buffer.from(BODY), headers: { 'x-request-key': 'k-7b' } }));
    expect(s.spy.calls).toEqual([]);
    // The default header name means nothing under this policy.
    await s.send(fakeExchange({ method: 'PUT', body: Buffer.from(BODY), headers: { 'idempotency-key': 'k-7b' } }));
    expect(s.spy.calls).toEqual([]);
    // A PUT with the configured header is keyed, forwarded once, then replayed.
    await s.send(fakeExchange({ method: 'PUT', body: Buffer.from(BODY), headers: { 'x-request-key': 'k-7b' } }));
    const again = await s.send(fakeExchange({ method: 'PUT', body: Buffer.from(BODY), headers: { 'x-request-key': 'k-7b' } }));
    expect(s.calls).toHaveLength(3);
    expect(answerHeader(asAnswer(again.reply), 'idempotent-replayed')).toBe('true');
    expect(again.body).toBe('{"id":"call_3"}');
  });

  it.each([
    { desc: 'empty', value: '' },
    { desc: 'with a space', value: 'has space' },
    { desc: 'longer than 255', value: 'k'.repeat(256) },
    { desc: 'repeated', value: ['k-a', 'k-b'] },
  ])('an invalid key ($desc) is refused 400 bad_request without calling next', async ({ value }) => {
    const s = setup();
    const { reply } = await s.send(fakeExchange({ method: 'POST', body: Buffer.from(BODY), headers: { 'idempotency-key': value } }));
    const err = asError(reply);
    expect(err.status).toBe(400);
    expect(err.code).toBe('bad_request');
    expect(s.calls).toHaveLength(0);
  });
});

describe('idempotency stage: a streamed (unbuffered) body', () => {
  async function* chunks(...parts: string[]): AsyncGenerator<Buffer> {
    for (const p of parts) yield Buffer.from(p);
  }
  const streamedPost = (key: string, ...parts: string[]) =>
    fakeExchange({ method: 'POST', routePath: '/call', headers: { 'idempotency-key': key }, streamed: true, bodyStream: chunks(...parts) });

  it('hashes the bytes sent upstream: the same bytes replay, other bytes are 422', async () => {
    const seen: string[] = [];
    const s = setup([
      async () => {
        const ex = s.calls.at(-1)!;
        let got = '';
        for await (const c of ex.bodyStream as AsyncIterable<Buffer>) got += c.toString();
        seen.push(got);
        return created('call_1');
      },
      () => created('call_2'),
    ]);
    const first = await s.send(streamedPost('k-s', 'ab', 'cd'));
    expect(first.body).toBe('{"id":"call_1"}');
    expect(seen).toEqual(['abcd']); // the upstream got the body whole through the hashing copy

    const same = await s.send(streamedPost('k-s', 'a', 'bcd'));
    expect(s.calls).toHaveLength(1);
    expect(answerHeader(asAnswer(same.reply), 'idempotent-replayed')).toBe('true');
    expect(same.body).toBe('{"id":"call_1"}');

    const other = await s.send(streamedPost('k-s', 'ab', 'ce'));
    expect(asError(other.reply).code).toBe('idempotency_mismatch');
    expect(s.calls).toHaveLength(1);
  });
});
