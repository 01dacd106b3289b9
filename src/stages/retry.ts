// Retry stage. The one rule that matters for Twilio and Vapi: a request that may have reached
// the upstream is never sent again unless its method is idempotent, because a re-sent
// `POST /Messages.json` is a second SMS and a re-sent `POST /call` a second phone call.
// So: idempotent methods retry on connect errors, resets and the listed statuses (not on
// timeouts: UPSTREAM_TIMEOUT bounds the whole exchange, as Envoy's route timeout does);
// any method retries when the request certainly never left (connection refused, DNS, TLS), or
// when the upstream answered a status it documents as "not processed" (`unprocessed`: Twilio's
// 429, error 20429).
// Every retry spends from a per-upstream budget and passes the breaker again.
import type { RetryPolicy } from '../policy/schema.js';
import type { RetryBudget } from '../resilience/retry-budget.js';
import { sleep as defaultSleep } from '../resilience/clock.js';
import { clientGone, type Exchange, type Next, type Reply, type Stage } from '../pipeline/exchange.js';
import { BufferedBody, readBody } from '../pipeline/body.js';
import { tracing } from '../tracing.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export interface RetryDeps {
  onRetry(reason: string): void;
  onSkipped(reason: 'budget' | 'breaker'): void;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export function retry(policy: RetryPolicy, budget: RetryBudget, deps: RetryDeps): Stage {
  const statuses: ReadonlySet<number> = new Set(policy.on);
  // Answers the upstream documents as "not processed" (Twilio's 429): nothing happened, so any
  // method may be sent again.
  const unprocessed: ReadonlySet<number> = new Set(policy.unprocessed);
  const random = deps.random ?? Math.random;
  const sleep = deps.sleep ?? defaultSleep;
  const baseMs = policy.backoffBase;
  const maxMs = policy.backoffMax;

  /** Why this answer may be tried again, or undefined when it stands. */
  function reasonFor(ex: Exchange, reply: Reply, idempotent: boolean): string | undefined {
    let reason: string | undefined;
    if (reply.kind === 'answer')
      reason = reply.source === 'forwarded' && ((idempotent && statuses.has(reply.status)) || unprocessed.has(reply.status)) ? String(reply.status) : undefined;
    // A timeout has spent the whole UPSTREAM_TIMEOUT the app allowed: answering 504 now beats
    // answering after attempts × timeout (Envoy's route timeout spans all retries the same way).
    else if (reply.kind === 'failed' && reply.cause !== 'timeout' && reply.cause !== 'client' && (idempotent || !reply.mayHaveReachedUpstream))
      reason = reply.cause;
    // Nobody is left to read a retry's answer when the app itself went away (an answer read on
    // for the idempotency store included). Checked last: most answers have no reason at all.
    return reason !== undefined && clientGone(ex) ? undefined : reason;
  }

  /** A retry that never left: refused locally, or its app hung up during the back-off. */
  function neverLeft(reply: Reply): boolean {
    if (reply.kind === 'error') return reply.code === 'circuit_open' || reply.code === 'bulkhead_full';
    return reply.kind === 'failed' && reply.cause === 'client' && !reply.mayHaveReachedUpstream;
  }

  /**
   * An answer about to be retried: read (its head kept) so it can still stand if the retry never
   * leaves, which also frees its connection for the next attempt.
   */
  async function kept(reply: Reply): Promise<Reply> {
    if (reply.kind !== 'answer') return reply;
    const { buf } = await readBody(reply.body, KEEP_LIMIT);
    return { kind: 'answer', status: reply.status, headers: withoutLength(reply.headers), body: new BufferedBody(buf), source: reply.source };
  }

  /** Attempts after the first, once `first` turned out retryable. */
  async function again(ex: Exchange, next: Next, first: Reply, idempotent: boolean): Promise<Reply> {
    let reply = first;
    let previous: Reply | undefined;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        reply = await next(ex);
        if (previous && neverLeft(reply)) {
          // What the upstream last said stands: it may have been reached, which an idempotency
          // key must remember.
          ex.retries--;
          if (reply.kind === 'error') {
            deps.onSkipped('breaker');
            tracing?.event(ex, 'breakwater.retry', { 'breakwater.decision': 'skipped', 'breakwater.reason': 'breaker' });
          }
          return previous;
        }
        if (attempt >= policy.attempts) return reply;
      }
      const reason = reasonFor(ex, reply, idempotent);
      if (reason === undefined) return reply;
      if (!budget.tryRetry()) {
        deps.onSkipped('budget');
        tracing?.event(ex, 'breakwater.retry', { 'breakwater.decision': 'skipped', 'breakwater.reason': 'budget' });
        return reply;
      }
      deps.onRetry(reason);
      tracing?.event(ex, 'breakwater.retry', { 'breakwater.decision': 'retry', 'breakwater.reason': reason, 'http.request.resend_count': attempt + 1 });
      previous = await kept(reply);
      ex.retries = attempt + 1;
      // Exponential back-off with full jitter (AWS architecture blog): spreads retries of many
      // clients instead of synchronising them.
      await sleep(random() * Math.min(maxMs, baseMs * 2 ** attempt));
    }
  }

  return function retryStage(ex: Exchange, next: Next): Promise<Reply> {
    budget.recordRequest();
    // A streamed body has been consumed by the first attempt and cannot be replayed.
    if (ex.streamed || policy.attempts === 0) return next(ex);
    const idempotent = IDEMPOTENT.has(ex.method);
    // The first attempt needs no frame of its own: most answers stand as they are.
    return next(ex).then((reply) => (reasonFor(ex, reply, idempotent) === undefined ? reply : again(ex, next, reply, idempotent)));
  };
}

/** The most of a retried answer's body kept in case it must stand (5xx bodies are small). */
const KEEP_LIMIT = 64 * 1024;

/** The headers of an answer whose body is now in memory: its length is recomputed when written. */
function withoutLength(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const k = headers[i]!;
    if (k.length === 14 && k.toLowerCase() === 'content-length') continue;
    out.push(k, headers[i + 1]!);
  }
  return out;
}
