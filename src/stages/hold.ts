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
import type { Exchange, Held, Next, Reply, Stage } from '../pipeline/exchange.js';
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

  // An earlier stage may hold statuses of its own (the cache's 304 on a revalidation): added to, not replaced.
  const unions = new WeakMap<ReadonlySet<number>, ReadonlySet<number>>();
  function withAlso(outer: ReadonlySet<number> | undefined): ReadonlySet<number> | undefined {
    if (outer === undefined || alsoStatuses === undefined) return alsoStatuses ?? outer;
    let u = unions.get(outer);
    if (u === undefined) unions.set(outer, (u = new Set([...outer, ...alsoStatuses])));
    return u;
  }

  /** A held answer that a rule in `also` names as back-pressure. */
  function backPressure(reply: Reply): boolean {
    if (reply.kind !== 'held' || alsoStatuses?.has(reply.status) !== true) return false;
    const body = reply.body.toString('utf8');
    return also.some((a) => a.status === reply.status && body.includes(a.bodyIncludes));
  }

  function startHold(ex: Exchange, k: string, entry: HoldEntry | undefined, retryAfter: string | undefined): number {
    const strikes = (entry?.strikes ?? 0) + 1;
    const given = parseRetryAfter(retryAfter, wall());
    const base = Math.min(maxMs, given ?? defMs * 2 ** (strikes - 1));
    const ms = base * (1 + random() * policy.jitter);
    table.set(k, { until: deps.clock() + ms, strikes }, deps.clock());
    deps.onHold(k, ms, ex.requestId);
    tracing?.event(ex, 'breakwater.hold', { 'breakwater.decision': 'hold_started', 'breakwater.hold_ms': Math.round(ms), 'breakwater.strikes': strikes });
    return ms;
  }

  /** After the answer: start (or extend) a hold on an upstream 429, end one on anything else. */
  function learn(ex: Exchange, k: string, entry: HoldEntry | undefined): void {
    if (ex.upstreamStatus === 429) {
      startHold(ex, k, entry, ex.upstreamRetryAfter);
    } else if (entry !== undefined && ex.upstreamStatus !== 0) {
      table.entries.delete(k);
    }
  }

  return function holdStage(ex: Exchange, next: Next): Promise<Reply> {
    // Nearly always nothing is held and no rule reads the answer: then the key (a match on the
    // path) is worked out only if the answer is a 429 that starts a hold.
    if (alsoStatuses === undefined && table.entries.size === 0) {
      return next(ex).then((reply) => {
        if (ex.upstreamStatus === 429) {
          const k = key(ex);
          if (k !== undefined) learn(ex, k, table.get(k));
        }
        return reply;
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
    if (alsoStatuses !== undefined) ex.holdStatuses = withAlso(ex.holdStatuses);
    // A continuation rather than an async frame: this stage is on every request.
    return next(ex).then((reply) => {
      if (alsoStatuses !== undefined && backPressure(reply)) {
        const h = (reply as Held).headers['retry-after'];
        const ms = startHold(ex, k, entry, typeof h === 'string' ? h : undefined);
        return proxyError('upstream_rate_limited', { headers: { 'retry-after': retryAfterSeconds(ms) } });
      }
      learn(ex, k, entry);
      return reply;
    });
  };
}
