// Learn from upstream 429s. Twilio's 429 (error 20429) means that account hit its concurrency
// ceiling; sending more only burns more 429s. So after one, requests for the same key (the
// account by default) are answered locally with 429 upstream_rate_limited until the upstream's
// Retry-After (seconds or HTTP-date, capped, jittered) or a doubling back-off when it gave none.
// Other accounts are unaffected. Twilio's 429 says the request was not processed, whatever its
// method, so it holds the account for any method.
//
// Some upstreams refuse for concurrency with another status: Vapi answers 400
// `{"error":"Over Concurrency Limit"}`. Listed in `also`, such an answer is asked to be held
// (buffered, not streamed) so its body can be read, starts a hold like a 429, and reaches the app
// as 429 upstream_rate_limited: back-pressure, never a breaker failure, and a status every SDK
// already treats as "wait and retry".
import { proxyError, retryAfterSeconds } from '../errors.js';
import type { HoldPolicy } from '../policy/schema.js';
import { sleep as defaultSleep, type Clock } from '../resilience/clock.js';
import { answerHeader, clientGone, goneBeforeSending, type Answer, type Exchange, type Next, type Reply, type Stage } from '../pipeline/exchange.js';
import { BufferedBody, readBody } from '../pipeline/body.js';
import { keyFn } from '../pipeline/keys.js';
import type { HoldEntry, HoldTable } from '../resilience/hold-table.js';
import { tracing } from '../tracing.js';

export interface HoldDeps {
  clock: Clock;
  /** Wall clock (ms since epoch) for HTTP-date Retry-After. */
  now?: () => number;
  random?: () => number;
  onHold(key: string, ms: number, reqId: string): void;
  onHeld(): void;
  /** The retry budget's say on sending a 429 again (see `retryWithin`); absent: never. */
  tryResend?(): boolean;
  onResend?(): void;
  sleep?(ms: number): Promise<void>;
}

// The three HTTP-date forms (RFC 9110 §5.6.7): IMF-fixdate, obsolete RFC 850, asctime. Date.parse
// alone is far more lenient ("1, 2" is a date to V8), and a garbage value read as a past date
// would cancel the hold instead of falling back to the default.
const IMF_OR_RFC850 = /^[a-z]{3,9}, \d{2}[ -][a-z]{3}[ -]\d{2}(?:\d{2})? \d{2}:\d{2}:\d{2} GMT$/i;
const ASCTIME = /^[a-z]{3} [a-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/i;

/** Parses Retry-After: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). Returns ms or undefined. */
export function parseRetryAfter(v: string | undefined, nowMs: number): number | undefined {
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  // asctime carries no zone but is GMT by definition.
  const at = IMF_OR_RFC850.test(s) ? Date.parse(s) : ASCTIME.test(s) ? Date.parse(`${s} GMT`) : Number.NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

export function hold(policy: HoldPolicy, table: HoldTable, deps: HoldDeps): Stage | undefined {
  if (!policy.enabled) return undefined;
  const key = keyFn(policy.key);
  const wall = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const maxMs = policy.maxHold;
  const defMs = policy.defaultHold;
  const also = policy.also;
  const alsoStatuses: ReadonlySet<number> | undefined = also.length === 0 ? undefined : new Set(also.map((a) => a.status));

  const resendMs = policy.retryWithin;
  const sleep = deps.sleep ?? defaultSleep;

  /**
   * An answer that a rule in `also` names as back-pressure: its body (a small error) is read to
   * tell. Anything else comes back as it was, its body now in memory.
   */
  async function backPressure(reply: Answer): Promise<{ pressed: boolean; reply: Answer }> {
    const { buf } = await readBody(reply.body, BACK_PRESSURE_LIMIT);
    const text = buf.toString('utf8');
    const pressed = also.some((a) => a.status === reply.status && text.includes(a.bodyIncludes));
    const headers: string[] = [];
    for (let i = 0; i < reply.headers.length; i += 2)
      if (reply.headers[i]!.toLowerCase() !== 'content-length') headers.push(reply.headers[i]!, reply.headers[i + 1]!);
    return { pressed, reply: { kind: 'answer', status: reply.status, headers, body: new BufferedBody(buf), source: reply.source } };
  }

  /** Starts a hold; returns its length in ms, and before jitter (what the upstream or the back-off asked). */
  function startHold(ex: Exchange, k: string, entry: HoldEntry | undefined, retryAfter: string | undefined): { ms: number; asked: number } {
    const strikes = (entry?.strikes ?? 0) + 1;
    const given = parseRetryAfter(retryAfter, wall());
    const base = Math.min(maxMs, given ?? defMs * 2 ** (strikes - 1));
    const ms = base * (1 + random() * policy.jitter);
    table.set(k, { until: deps.clock() + ms, strikes }, deps.clock());
    deps.onHold(k, ms, ex.requestId);
    tracing?.event(ex, 'breakwater.hold', { 'breakwater.decision': 'hold_started', 'breakwater.hold_ms': Math.round(ms), 'breakwater.strikes': strikes });
    return { ms, asked: base };
  }

  /** Whether the upstream itself (or a stub standing in for it) gave this answer. */
  const upstreamAnswer = (reply: Reply): reply is Answer => reply.kind === 'answer' && (reply.source === 'forwarded' || reply.source === 'stub');

  /**
   * After the answer: start (or extend) a hold on an upstream 429, end one on anything else. A 429
   * the upstream documents as not processed (Twilio's 20429) is sent once more when the hold it
   * starts ends within `retryWithin` and the retry budget allows, whatever the method: nothing
   * was created, and the app would otherwise retry into the hold itself (Envoy's
   * rate_limited_retry_back_off, which skips the retry when Retry-After is longer than it waits).
   */
  function learn(ex: Exchange, next: Next, k: string, entry: HoldEntry | undefined, reply: Reply): Reply | Promise<Reply> {
    if (!upstreamAnswer(reply)) return reply;
    if (reply.status !== 429) {
      if (entry !== undefined) table.delete(k);
      return reply;
    }
    const { ms, asked } = startHold(ex, k, entry, answerHeader(reply, 'retry-after'));
    // Once per request; a streamed body was spent on the first attempt. Compared before jitter,
    // so a Retry-After equal to `retryWithin` is waited for.
    if (resendMs <= 0 || asked > resendMs || ex.resent || ex.streamed || deps.tryResend?.() !== true) return reply;
    reply.body.discard();
    ex.resent = true;
    ex.retries++;
    deps.onResend?.();
    tracing?.event(ex, 'breakwater.retry', { 'breakwater.decision': 'retry', 'breakwater.reason': 'upstream_429', 'http.request.resend_count': ex.retries });
    return sleep(ms)
      .then(() => (clientGone(ex) ? goneBeforeSending(ex, 'sending again after the hold') : next(ex)))
      .then((again) => learn(ex, next, k, table.get(k), again));
  }

  return function holdStage(ex: Exchange, next: Next): Promise<Reply> {
    // Nearly always nothing is held and no rule reads the answer: then the key (a match on the
    // path) is worked out only if the answer is a 429 that starts a hold.
    if (alsoStatuses === undefined && table.size === 0) {
      return next(ex).then((reply) => {
        if (reply.kind !== 'answer' || reply.status !== 429) return reply;
        const k = key(ex);
        return k === undefined ? reply : learn(ex, next, k, table.get(k), reply);
      });
    }
    const k = key(ex);
    if (k === undefined) return next(ex);
    const entry = table.get(k);
    if (entry !== undefined) {
      const left = entry.until - deps.clock();
      if (left > 0) {
        deps.onHeld();
        tracing?.event(ex, 'breakwater.hold', { 'breakwater.decision': 'held', 'breakwater.retry_after_ms': Math.round(left) });
        return Promise.resolve(proxyError('upstream_rate_limited', { headers: { 'retry-after': retryAfterSeconds(left) } }));
      }
    }
    // A continuation rather than an async frame: this stage is on every request.
    return next(ex).then(async (reply) => {
      if (alsoStatuses !== undefined && upstreamAnswer(reply) && alsoStatuses.has(reply.status)) {
        const read = await backPressure(reply);
        if (read.pressed) {
          const { ms } = startHold(ex, k, entry, answerHeader(read.reply, 'retry-after'));
          return proxyError('upstream_rate_limited', { headers: { 'retry-after': retryAfterSeconds(ms) } });
        }
        reply = read.reply;
      }
      return learn(ex, next, k, entry, reply);
    });
  };
}

/** The most of an answer's body read to tell back-pressure (an error body is far smaller). */
const BACK_PRESSURE_LIMIT = 64 * 1024;
