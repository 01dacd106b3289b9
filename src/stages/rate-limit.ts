// Rate-limit stage: every limit that applies to the request must allow it (a per-route limit
// and an upstream-wide one, say). Rejections carry Retry-After equal to the real wait for a
// token and the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers); allowed requests
// carry RateLimit too. A shadow limit only counts and logs what it would have refused.
import { proxyError, retryAfterSeconds, type ProxyError } from '../errors.js';
import type { RateLimitPolicy } from '../policy/schema.js';
import { RouteTable } from '../routing/route-table.js';
import type { LimiterStore } from '../store/store.js';
import { limitId } from '../store/store.js';
import type { Decision } from '../resilience/token-bucket.js';
import { sleep as defaultSleep } from '../resilience/clock.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import { isPhoneKey, keyFn, maskKey, maskPhone } from '../pipeline/keys.js';
import { oneByte } from '../http/headers.js';
import { tracing } from '../tracing.js';

export interface RateLimitDeps {
  store: LimiterStore;
  /** The local store, for limits that ask for `store: memory`. */
  memory: LimiterStore;
  counter(limit: string, outcome: 'allowed' | 'limited' | 'shadow_limited' | 'delayed'): { inc(): void };
  log(fields: Record<string, unknown>, msg: string): void;
  /** Registers a scrape-time reader of each limit's local key count. */
  collect(read: () => void): void;
  keys(limit: string): { set(n: number): void };
  sleep?: (ms: number) => Promise<void>;
}

export function rateLimit(upstream: string, limits: readonly RateLimitPolicy[], deps: RateLimitDeps): Stage | undefined {
  if (limits.length === 0) return undefined;
  const sleep = deps.sleep ?? defaultSleep;
  const compiled = limits.map((l) => {
    const burst = l.burst ?? l.rate;
    const limit = { ratePerMs: l.rate / l.per, burst, maxDelayMs: l.maxDelay };
    const store = l.store === 'memory' ? deps.memory : deps.store;
    let match: RouteTable<true> | undefined;
    if (l.route !== null) {
      match = new RouteTable<true>();
      match.add(l.route, true);
    }
    const window = Math.round(((burst / l.rate) * l.per) / 1000);
    // One-byte copies (see oneByte): both go into a response header on every request.
    return {
      name: oneByte(l.name),
      shadow: l.shadow,
      // Each header field on every answer costs node measurably (docs/performance.md): the
      // RateLimit-Policy field goes only where it was asked for.
      reports: l.headers !== 'limited',
      reportsPolicy: l.headers === 'always',
      key: keyFn(l.key),
      mask: isPhoneKey(l.key),
      match,
      buckets: store.buckets(limitId(`${upstream}/${l.name}`, limit), limit),
      policyField: oneByte(`"${l.name}";q=${burst};w=${window}`),
      // What the refusal names: a recipient cap must not read as "this client" to the app.
      quota: `${burst} per ${window} s`,
      counts: l.key.map(describeKeyPart).join(' and '),
      allowed: deps.counter(l.name, 'allowed'),
      limited: deps.counter(l.name, l.shadow ? 'shadow_limited' : 'limited'),
      delayed: deps.counter(l.name, 'delayed'),
      keysGauge: deps.keys(l.name),
    };
  });

  deps.collect(() => {
    for (const c of compiled) c.keysGauge.set(c.buckets.size());
  });

  type Compiled = (typeof compiled)[number];
  /** What the limits decided so far for one request. */
  interface Tally {
    delayMs: number;
    /** The non-shadow reporting limit (headers remaining or always) with the fewest tokens left: the one the RateLimit field reports. */
    best: Compiled | undefined;
    bestD: Decision | undefined;
    /** Tokens granted so far: if a later limit refuses, they go back, so a refused request costs
     * the client nothing (otherwise a tight per-route limit would drain the upstream-wide one). */
    granted: { c: Compiled; key: string; d: Decision }[] | undefined;
  }

  /** Applies one limit's decision; returns the refusal if it refuses. */
  function apply(ex: Exchange, c: Compiled, key: string, d: Decision, tally: Tally): ProxyError | undefined {
    if (!d.allowed) {
      c.limited.inc();
      tracing?.event(ex, 'breakwater.rate_limit', {
        'breakwater.decision': c.shadow ? 'shadow_limited' : 'limited',
        'breakwater.limit': c.name,
        'breakwater.retry_after_ms': Math.round(d.resetMs),
      });
      if (c.shadow) {
        deps.log(
          { reqId: ex.requestId, upstream, limit: c.name, key: c.mask ? maskPhone(key) : maskKey(key), retryAfterMs: Math.round(d.resetMs) },
          'rate limit would reject (shadow)',
        );
        return undefined;
      }
      if (tally.granted) for (const g of tally.granted) g.c.buckets.refund(g.key, g.d);
      const t = retryAfterSeconds(d.resetMs);
      ex.rateLimit = `"${c.name}";r=0;t=${t}`;
      ex.rateLimitPolicy = c.policyField;
      return proxyError('rate_limited', {
        headers: { 'retry-after': t },
        message: `Rate limit "${c.name}" (${c.quota}) exceeded for this ${c.counts}; retry in ${t} s.`,
      });
    }
    if (compiled.length > 1) (tally.granted ??= []).push({ c, key, d });
    if (d.delayMs > 0) {
      c.delayed.inc();
      tracing?.event(ex, 'breakwater.rate_limit', {
        'breakwater.decision': 'delayed',
        'breakwater.limit': c.name,
        'breakwater.delay_ms': Math.round(d.delayMs),
      });
      if (d.delayMs > tally.delayMs) tally.delayMs = d.delayMs;
    } else c.allowed.inc();
    if (c.reports && !c.shadow && (tally.bestD === undefined || d.remaining < tally.bestD.remaining)) {
      tally.best = c;
      tally.bestD = d;
    }
    return undefined;
  }

  /**
   * Runs the limits from `from` on. Synchronous while the decisions are (the memory store), so
   * the common case, a memory-store allow, costs no promise of its own; a decision that is a
   * promise (Redis) continues the loop once it settles.
   */
  function evaluate(ex: Exchange, next: Next, from: number, tally: Tally): Promise<Reply> {
    for (let i = from; i < compiled.length; i++) {
      const c = compiled[i]!;
      if (c.match && !c.match.match(ex.method, ex.routePath)) continue;
      const key = c.key(ex);
      if (key === undefined) continue;
      const d = c.buckets.take(key);
      if (d instanceof Promise) return d.then((settled) => apply(ex, c, key, settled, tally) ?? evaluate(ex, next, i + 1, tally));
      const refused = apply(ex, c, key, d, tally);
      if (refused) return Promise.resolve(refused);
    }
    const { best, bestD } = tally;
    if (best !== undefined && bestD !== undefined) {
      ex.rateLimit = `"${best.name}";r=${bestD.remaining};t=${Math.ceil(bestD.resetMs / 1000)}`;
      if (best.reportsPolicy) ex.rateLimitPolicy = best.policyField;
    }
    return tally.delayMs > 0 ? sleep(tally.delayMs).then(() => next(ex)) : next(ex);
  }

  return function rateLimitStage(ex: Exchange, next: Next): Promise<Reply> {
    return evaluate(ex, next, 0, { delayMs: 0, best: undefined, bestD: undefined, granted: undefined });
  };
}

/** A key part as a refusal names it: `body:To` is the recipient (`To`), `client` the client. */
function describeKeyPart(part: string): string {
  if (part === 'client' || part === 'account' || part === 'route') return part;
  if (part === 'ip') return 'IP address';
  if (part === 'basic-user' || part === 'authorization') return 'credential';
  const [kind, name] = part.split(':');
  if (kind === 'header') return `${name} header`;
  if (name === 'To') return 'recipient (To)';
  if (name === 'From') return 'sender (From)';
  return `${name}`;
}
