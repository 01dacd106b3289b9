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
import type { Clock } from '../resilience/clock.js';
import { clientGone, goneBeforeSending, type Exchange, type Held, type Next, type Reply, type Stage } from '../pipeline/exchange.js';
import { keyFn } from '../pipeline/keys.js';
import { MapCursor } from '../resilience/map-cursor.js';
import { tracing } from '../tracing.js';

interface HoldEntry {
  until: number;
  strikes: number;
}

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

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

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

export class HoldTable {
  readonly entries = new Map<string, HoldEntry>();
  private readonly cursor = new MapCursor(this.entries);
  constructor(private readonly maxKeys: number) {}

  active(now: number): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.until > now) n++;
    return n;
  }

  get(key: string): HoldEntry | undefined {
    return this.entries.get(key);
  }

  set(key: string, e: HoldEntry, now: number): void {
    this.entries.set(key, e);
    // Bounded work per call: drop expired holds at the cursor, then any while over the cap.
    for (let i = 0; i < 16; i++) {
      const c = this.cursor.next();
      if (c === undefined) return;
      const over = this.entries.size > this.maxKeys;
      if (c[0] !== key && (over || c[1].until <= now)) this.entries.delete(c[0]);
      else if (!over && i >= 1) return;
    }
  }
}

export function hold(policy: HoldPolicy, table: HoldTable, deps: HoldDeps): Stage | undefined {
  if (!policy.enabled) return undefined;
  const key = keyFn(policy.key);
  const wall = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const maxMs = policy.maxHold * 1000;
  const defMs = policy.defaultHold * 1000;
  const also = policy.also;
  const alsoStatuses: ReadonlySet<number> | undefined = also.length === 0 ? undefined : new Set(also.map((a) => a.status));

  const resendMs = policy.retryWithin * 1000;
  const sleep = deps.sleep ?? defaultSleep;
  // The answers this stage reads before they are relayed: the `also` rules', and the 429 itself
  // when it may be sent again (an answer already relayed cannot be taken back).
  const ownStatuses: ReadonlySet<number> | undefined = resendMs > 0 ? new Set([...(alsoStatuses ?? []), 429]) : alsoStatuses;
  // An earlier stage may hold statuses of its own (the cache's 304 on a revalidation): added to, not replaced.
  const unions = new WeakMap<ReadonlySet<number>, ReadonlySet<number>>();
  function withOwn(outer: ReadonlySet<number> | undefined): ReadonlySet<number> | undefined {
    if (outer === undefined || ownStatuses === undefined) return ownStatuses ?? outer;
    let u = unions.get(outer);
    if (u === undefined) unions.set(outer, (u = new Set([...outer, ...ownStatuses])));
    return u;
  }

  /** A held answer that a rule in `also` names as back-pressure. */
  function backPressure(reply: Reply): boolean {
    if (reply.kind !== 'held' || alsoStatuses?.has(reply.status) !== true) return false;
    const body = reply.body.toString('utf8');
    return also.some((a) => a.status === reply.status && body.includes(a.bodyIncludes));
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

  /**
   * After the answer: start (or extend) a hold on an upstream 429, end one on anything else. A 429
   * the upstream documents as not processed (Twilio's 20429) is sent once more when the hold it
   * starts ends within `retryWithin` and the retry budget allows, whatever the method: nothing
   * was created, and the app would otherwise retry into the hold itself (Envoy's
   * rate_limited_retry_back_off, which skips the retry when Retry-After is longer than it waits).
   */
  function learn(ex: Exchange, next: Next, k: string, entry: HoldEntry | undefined, reply: Reply): Reply | Promise<Reply> {
    if (ex.upstreamStatus !== 429) {
      if (entry !== undefined && ex.upstreamStatus !== 0) table.entries.delete(k);
      return reply;
    }
    const { ms, asked } = startHold(ex, k, entry, ex.upstreamRetryAfter);
    // Once per request; a streamed body was spent on the first attempt. Compared before jitter,
    // so a Retry-After equal to `retryWithin` is waited for.
    if (reply.kind !== 'held' || asked > resendMs || ex.resent || ex.streamed || deps.tryResend?.() !== true) return reply;
    ex.resent = true;
    ex.retries++;
    deps.onResend?.();
    tracing?.event(ex, 'breakwater.retry', { 'breakwater.decision': 'retry', 'breakwater.reason': 'upstream_429', 'http.request.resend_count': ex.retries });
    return sleep(ms).then(() => (clientGone(ex) ? goneBeforeSending(ex, 'sending again after the hold') : next(ex))).then((again) => learn(ex, next, k, table.get(k), again));
  }

  return function holdStage(ex: Exchange, next: Next): Promise<Reply> {
    // Nearly always nothing is held and no rule reads the answer: then the key (a match on the
    // path) is worked out only if the answer is a 429 that starts a hold.
    if (alsoStatuses === undefined && table.entries.size === 0) {
      if (resendMs > 0) ex.holdStatuses = withOwn(ex.holdStatuses);
      return next(ex).then((reply) => {
        if (ex.upstreamStatus !== 429) return reply;
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
    if (ownStatuses !== undefined) ex.holdStatuses = withOwn(ex.holdStatuses);
    // A continuation rather than an async frame: this stage is on every request.
    return next(ex).then((reply) => {
      if (alsoStatuses !== undefined && backPressure(reply)) {
        const h = (reply as Held).headers['retry-after'];
        const { ms } = startHold(ex, k, entry, typeof h === 'string' ? h : undefined);
        return proxyError('upstream_rate_limited', { headers: { 'retry-after': retryAfterSeconds(ms) } });
      }
      return learn(ex, next, k, entry, reply);
    });
  };
}
