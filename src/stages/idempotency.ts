// Idempotency keys: a create carrying `Idempotency-Key` is forwarded once. Duplicates that
// arrive while it is in flight wait and get a replay of its answer; later duplicates (within the
// TTL) get the stored answer with `Idempotent-Replayed: true`; the same key with a different
// body is 422. Neither Twilio nor Vapi takes such a header, so the sidecar is where a retried
// `POST /Messages.json` or `POST /call` stops being a second SMS or a second call.
//
// What is stored (docs/adr/0003): every answer the upstream gave except 429 and 503, which both
// say "not processed, try later"; and the proxy's own ambiguous answers (timeout or reset after
// the request was sent), because re-sending those could duplicate. An upstream answer that cannot
// be replayed (too large, or cut off) is stored as a proxy 502 that says so, for the same reason.
// Proxy refusals that prove nothing was sent (rate limits, open breaker, full bulkhead,
// connection refused) are not stored: the key is released so a retry really goes through.
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { errorBody, proxyError, type ProxyError } from '../errors.js';
import type { IdempotencyPolicy } from '../policy/schema.js';
import type { Clock } from '../resilience/clock.js';
import { PENDING_FINGERPRINT, type IdempotencyStore, type StoredAnswer } from '../store/idempotency-store.js';
import {
  bufferedAnswer,
  clientGone,
  goneBeforeSending,
  headerObject,
  type Answer,
  type Exchange,
  type Failed,
  type Next,
  type Reply,
  type Stage,
} from '../pipeline/exchange.js';
import { tracing } from '../tracing.js';

export interface IdempotencyDeps {
  counter(outcome: 'forwarded' | 'replayed' | 'joined' | 'in_flight' | 'mismatch' | 'not_stored' | 'unavailable' | 'orphaned'): { inc(): void };
  clock: Clock;
  /** The longest an original may stay in flight (all attempts, waits and queues): its claim's life. */
  claimMs: number;
}

const REPLAYED = ['idempotent-replayed', 'true'] as const;
const KEY = /^[\x21-\x7e]{1,255}$/;

export function idempotency(upstream: string, policy: IdempotencyPolicy, store: IdempotencyStore, deps: IdempotencyDeps): Stage {
  const header = policy.header.toLowerCase();
  const methods = new Set<string>(policy.methods);
  const ttlMs = policy.ttl;
  const waitMs = policy.waitTimeout;
  type Outcome = Parameters<IdempotencyDeps['counter']>[0];
  /** Counts a decision, and shows it on the request's trace when tracing is on. */
  const decision = (outcome: Outcome) => {
    const counter = deps.counter(outcome);
    const attributes = { 'breakwater.decision': outcome };
    return (ex: Exchange): void => {
      counter.inc();
      tracing?.event(ex, 'breakwater.idempotency', attributes);
    };
  };
  const c = {
    forwarded: decision('forwarded'),
    replayed: decision('replayed'),
    joined: decision('joined'),
    inFlight: decision('in_flight'),
    mismatch: decision('mismatch'),
    notStored: decision('not_stored'),
    unavailable: decision('unavailable'),
    orphaned: decision('orphaned'),
  };

  const replay = (ex: Exchange, a: StoredAnswer): Reply => {
    // A duplicate that waited for its original may find its own app gone by then.
    if (clientGone(ex)) return goneBeforeSending(ex, 'the replay');
    c.replayed(ex);
    return bufferedAnswer(a.status, a.headers, a.body, 'replayed', REPLAYED);
  };

  // Most requests carry no key: they pass straight through, without an async frame of our own.
  return function idempotencyStage(ex: Exchange, next: Next): Promise<Reply> {
    const raw = ex.req.headers[header];
    if (raw === undefined || !methods.has(ex.method)) return next(ex);
    return keyed(ex, next, raw);
  };

  async function keyed(ex: Exchange, next: Next, raw: string | string[]): Promise<Reply> {
    if (typeof raw !== 'string' || !KEY.test(raw)) return proxyError('bad_request', { message: `Invalid ${policy.header} header.` });
    const key = scopeKey(upstream, ex, raw);
    // A streamed body (too large to buffer) is hashed as it passes: the original claims the key
    // before its hash is known, and a duplicate reads (and discards) its own body to compare.
    const streamed = ex.body === undefined && ex.streamed;
    let fingerprint = streamed
      ? undefined
      : createHash('sha256')
          .update(ex.body ?? '')
          .digest('base64url');
    const own = async () => (fingerprint ??= await drainHash(ex));
    const deadline = deps.clock() + waitMs;
    for (let round = 0; round < 8; round++) {
      const found = await store.lookup(key);
      if (found.state === 'unavailable') return unavailable(ex);
      if (found.state === 'orphaned') {
        if (found.fingerprint !== PENDING_FINGERPRINT && found.fingerprint !== (await own())) return mismatch(ex, c.mismatch);
        c.orphaned(ex);
        return proxyError('internal_error', {
          message:
            'The original request with this Idempotency-Key may have reached the upstream, but the Breakwater replica handling it stopped before its answer was stored; whether it took effect is unknown. It is not sent again.',
        });
      }
      if (found.state === 'done') {
        if (found.fingerprint !== (await own())) return mismatch(ex, c.mismatch);
        return replay(ex, found.answer);
      }
      if (found.state === 'in_flight') {
        if (found.fingerprint !== PENDING_FINGERPRINT && found.fingerprint !== (await own())) return mismatch(ex, c.mismatch);
        const left = deadline - deps.clock();
        if (left <= 0 || !(await within(found.done, left))) {
          c.inFlight(ex);
          return proxyError('idempotency_in_flight', { headers: { 'retry-after': '1' } });
        }
        c.joined(ex);
        continue; // the original finished: replay it, or take the key if it was released
      }
      // A body already read to compare cannot be sent: the app's retry will be the original.
      if (streamed && fingerprint !== undefined) break;
      const claimed = await store.claim(key, fingerprint ?? PENDING_FINGERPRINT, deps.claimMs, ttlMs);
      if (claimed === 'unavailable') return unavailable(ex);
      if (claimed === 'taken') continue;
      c.forwarded(ex);
      return original(ex, next, key, fingerprint);
    }
    return proxyError('idempotency_in_flight', { headers: { 'retry-after': '1' } });
  }

  function unavailable(ex: Exchange): Reply {
    c.unavailable(ex);
    return proxyError('idempotency_unavailable', { headers: { 'retry-after': '1' } });
  }

  async function original(ex: Exchange, next: Next, key: string, known: string | undefined): Promise<Reply> {
    ex.keepsAnswer = true;
    const hashing = known === undefined ? hashed(ex) : undefined;
    let completed = false;
    /** Stores what the key's retries get (undefined: nothing, the key is released). */
    const complete = async (answer: StoredAnswer | undefined): Promise<void> => {
      if (completed) return;
      completed = true;
      if (answer === undefined) c.notStored(ex);
      let fingerprint = known ?? PENDING_FINGERPRINT;
      if (hashing !== undefined) {
        // The body never arrived whole: no fingerprint to hold a duplicate to. Keep the answer
        // (the create may have happened) under a fingerprint no body matches: a retry gets 422.
        const fp = await hashing.finish();
        fingerprint = fp ?? `incomplete:${randomUUID()}`;
      }
      store.complete(key, fingerprint, answer, ttlMs);
    };
    try {
      let reply = await next(ex);
      // The create left and no complete answer came back (a reset, a timeout, or a protocol
      // fault such as an unsolicited `100 Continue`, which undici 7 cannot skip): it may have
      // happened. The app is told so, now and on every retry, rather than "could not be reached".
      if (reply.kind === 'failed' && reply.mayHaveReachedUpstream && reply.cause !== 'client' && !clientGone(ex)) {
        reply = { ...reply, error: maybeSent(reply.error) };
      }
      if (reply.kind === 'answer') keep(ex, reply, complete);
      else void complete(failedAnswer(ex, reply));
      return reply;
    } catch (err) {
      void complete(undefined);
      throw err;
    }
  }

  /** Copies an answer as its body passes, and stores it once the body is over. */
  function keep(ex: Exchange, reply: Answer, complete: (a: StoredAnswer | undefined) => Promise<void>): void {
    // Not processed (a 429) or not available (a 503): the key stays usable. A cached answer never
    // reached the upstream.
    if (reply.status === 429 || reply.status === 503 || (reply.source !== 'forwarded' && reply.source !== 'stub')) {
      reply.body.tap({ end: () => void complete(undefined) });
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    let overflow = false;
    reply.body.tap({
      data(chunk) {
        if (overflow) return false;
        if (bytes + chunk.length > policy.maxBodyBytes) {
          overflow = true;
          return false;
        }
        chunks.push(chunk);
        bytes += chunk.length;
        return true;
      },
      end(how) {
        // The upstream answered, so the create happened; if its answer cannot be replayed (too
        // large to keep, or cut off mid-body) the key must still never reach the upstream again:
        // store an ambiguous proxy answer that says so instead of releasing the key. An answer
        // read whole after the app left is kept: it is what the retry needs.
        if (overflow || how !== 'complete') {
          void complete(
            ambiguous(
              ex,
              proxyError('upstream_unavailable', {
                message: `The original request was answered ${reply.status} by the upstream${how === 'client' ? ' after its client disconnected' : ''}, but that answer could not be kept for replay. It is not sent again.`,
              }),
            ),
          );
        } else void complete({ status: reply.status, headers: headerObject(reply), body: Buffer.concat(chunks, bytes) });
      },
    });
  }

  /** A proxy-made answer stored in place of one that may have created something upstream. */
  function ambiguous(ex: Exchange, error: ProxyError): StoredAnswer {
    return {
      status: error.status,
      headers: { 'content-type': 'application/json', 'x-breakwater-error': error.code },
      body: Buffer.from(errorBody(error, upstream, ex.requestId)),
    };
  }

  /** What a failure before any answer leaves for the key's retries. */
  function failedAnswer(ex: Exchange, reply: Failed | ProxyError): StoredAnswer | undefined {
    if (reply.kind !== 'failed' || !reply.mayHaveReachedUpstream) return undefined;
    // The app left and the upstream then failed or never answered in time: say that, not
    // "could not be reached", which would send the operator looking at the upstream.
    if (reply.cause === 'client' || clientGone(ex)) {
      return ambiguous(
        ex,
        proxyError(reply.error.code, {
          message:
            'The original request reached the upstream, its client disconnected, and no complete answer followed; whether it took effect is unknown. It is not sent again.',
        }),
      );
    }
    return ambiguous(ex, reply.error);
  }
}

/** The same code and status, with a message that says what the app must know: it may have happened. */
function maybeSent(error: ProxyError): ProxyError {
  const what = error.code === 'upstream_timeout' ? 'no complete answer came in time' : 'the connection failed before a complete answer';
  return proxyError(error.code, {
    headers: error.headers,
    detail: error.detail,
    message: `The request was sent to the upstream and ${what}: it may have taken effect. It is not sent again under this Idempotency-Key.`,
  });
}

function mismatch(ex: Exchange, count: (ex: Exchange) => void): Reply {
  count(ex);
  return proxyError('idempotency_mismatch');
}

function within(p: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.then(() => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

// Fleet-wide and stable across restarts (every replica must derive the same scope), so the key is
// a fixed label: what matters is that neither memory nor Redis ever holds the credential itself.
const SCOPE_KEY = 'breakwater/idempotency-scope/v1';

/**
 * The scope of a key (Stripe scopes keys to the account, the IETF draft to the client): upstream,
 * credential identity, client, method, path and query, key. Another credential, or none, never
 * sees a stored answer; `?dryRun=true` is not the create without it.
 */
export function scopeKey(upstream: string, ex: Exchange, key: string): string {
  const auth = ex.authorization;
  const who = auth === undefined ? '-' : createHmac('sha256', SCOPE_KEY).update(auth).digest('base64url');
  return `${upstream}\u0000${who}\u0000${ex.clientKey}\u0000${ex.method} ${ex.routePath}${ex.query}\u0000${key}`;
}

/** Reads a streamed body to its end, hashing and discarding it; undefined if it broke off. */
async function drainHash(ex: Exchange): Promise<string | undefined> {
  const h = createHash('sha256');
  try {
    for await (const chunk of ex.bodyStream as AsyncIterable<Buffer>) h.update(chunk);
  } catch {
    return undefined;
  }
  ex.bodyStream = undefined;
  return h.digest('base64url');
}

/** Wraps the streamed body so that the bytes sent upstream are hashed as they pass. */
function hashed(ex: Exchange): { finish(): Promise<string | undefined> } {
  const h = createHash('sha256');
  const source = ex.bodyStream as AsyncIterable<Buffer>;
  const it = source[Symbol.asyncIterator]();
  let ended = false;
  let broken = false;
  async function* tee(): AsyncGenerator<Buffer> {
    for (;;) {
      let r: IteratorResult<Buffer>;
      try {
        r = await it.next();
      } catch (e) {
        broken = true;
        throw e;
      }
      if (r.done) {
        ended = true;
        return;
      }
      h.update(r.value);
      yield r.value;
    }
  }
  ex.bodyStream = tee();
  return {
    async finish() {
      if (broken) return undefined;
      // The upstream may answer before reading it all: read the rest so the hash is of the body.
      if (!ended) {
        try {
          for (;;) {
            const r = await it.next();
            if (r.done) break;
            h.update(r.value);
          }
        } catch {
          return undefined;
        }
      }
      return h.digest('base64url');
    },
  };
}
