// Rate-limit stage: every limit that applies to the request must allow it (a per-route limit
// and an upstream-wide one, say). Rejections carry Retry-After equal to the real wait for a
// token and the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers); allowed requests
// carry RateLimit too. A shadow limit only counts and logs what it would have refused.
import { proxyError, retryAfterSeconds } from '../errors.js';
import type { RateLimitPolicy } from '../policy/schema.js';
import { RouteTable } from '../routing/route-table.js';
import type { LimiterStore } from '../store/store.js';
import { limitId } from '../store/store.js';
import type { Decision } from '../resilience/token-bucket.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import { isPhoneKey, keyFn, maskPhone } from './keys.js';
import { oneByte } from '../http/headers.js';

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

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function rateLimit(upstream: string, limits: readonly RateLimitPolicy[], deps: RateLimitDeps): Stage | undefined {
  if (limits.length === 0) return undefined;
  const sleep = deps.sleep ?? defaultSleep;
  const compiled = limits.map((l) => {
    const burst = l.burst ?? l.rate;
    const limit = { ratePerMs: l.rate / (l.per * 1000), burst, maxDelayMs: l.maxDelay * 1000 };
    const store = l.store === 'memory' ? deps.memory : deps.store;
    let match: RouteTable<true> | undefined;
    if (l.route !== null) {
      match = new RouteTable<true>();
      match.add(l.route, true);
    }
    const window = Math.round((burst / l.rate) * l.per);
    // One-byte copies (see oneByte): both go into a response header on every request.
    return {
      name: oneByte(l.name),
      shadow: l.shadow,
      key: keyFn(l.key),
      mask: isPhoneKey(l.key),
      match,
      buckets: store.buckets(limitId(`${upstream}/${l.name}`, limit), limit),
      policyField: oneByte(`"${l.name}";q=${burst};w=${window}`),
      allowed: deps.counter(l.name, 'allowed'),
      limited: deps.counter(l.name, l.shadow ? 'shadow_limited' : 'limited'),
      delayed: deps.counter(l.name, 'delayed'),
      keysGauge: deps.keys(l.name),
    };
  });

  deps.collect(() => {
    for (const c of compiled) c.keysGauge.set(c.buckets.size());
  });

  return async function rateLimitStage(ex: Exchange, next: Next): Promise<Reply> {
    let delayMs = 0;
    let reported: { c: (typeof compiled)[number]; d: Decision } | undefined;
    // Tokens granted so far: if a later limit refuses, they go back, so a refused request costs
    // the client nothing (otherwise a tight per-route limit would drain the upstream-wide one).
    let granted: { c: (typeof compiled)[number]; key: string; d: Decision }[] | undefined;
    for (const c of compiled) {
      if (c.match && !c.match.match(ex.method, ex.routePath)) continue;
      const key = c.key(ex);
      if (key === undefined) continue;
      let d = c.buckets.take(key);
      if (d instanceof Promise) d = await d;
      if (!d.allowed) {
        c.limited.inc();
        if (c.shadow) {
          deps.log({ reqId: ex.requestId, upstream, limit: c.name, key: c.mask ? maskPhone(key) : key, retryAfterMs: Math.round(d.resetMs) }, 'rate limit would reject (shadow)');
          continue;
        }
        if (granted) for (const g of granted) g.c.buckets.refund(g.key, g.d);
        const t = retryAfterSeconds(d.resetMs);
        ex.rateLimit = `"${c.name}";r=0;t=${t}`;
        ex.rateLimitPolicy = c.policyField;
        return proxyError('rate_limited', { headers: { 'retry-after': t } });
      }
      if (compiled.length > 1) (granted ??= []).push({ c, key, d });
      if (d.delayMs > 0) {
        c.delayed.inc();
        if (d.delayMs > delayMs) delayMs = d.delayMs;
      } else c.allowed.inc();
      if (!c.shadow && (reported === undefined || d.remaining < reported.d.remaining)) reported = { c, d };
    }
    if (reported) {
      ex.rateLimit = `"${reported.c.name}";r=${reported.d.remaining};t=${Math.ceil(reported.d.resetMs / 1000)}`;
      ex.rateLimitPolicy = reported.c.policyField;
    }
    if (delayMs > 0) await sleep(delayMs);
    return next(ex);
  };
}
