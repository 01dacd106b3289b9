// Breaker stage: refuse at once while open (no upstream contact), and feed each attempt's
// outcome back to the state machine. Sits inside the retry loop so every retry is admitted
// by the breaker too.
//
// Retry-After on circuit_open is short (breaker.retryAfterMax, 1 s by default) while the message
// says the time left until half-open: the Vapi SDK sleeps on Retry-After (up to 60 s) before each
// of its retries, so an honest 30 s header turned a fast 503 into a 60 s stall. A retry after 1 s
// costs one more local refusal, not an upstream call. A forced open never ends by itself, so it
// says so rather than promising a time.
import { proxyError, retryAfterSeconds, type ProxyError } from '../errors.js';
import type { BreakerPolicy } from '../policy/schema.js';
import { BreakerScopes, type BreakerOptions, type CircuitBreaker } from '../resilience/circuit-breaker.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import type { BodyEnd } from '../pipeline/body.js';
import { tracing } from '../tracing.js';

/** The state machine's options from the policy's breaker section: the one place its seconds become milliseconds. */
export function breakerOptions(b: BreakerPolicy): BreakerOptions {
  return {
    enforce: b.enabled,
    threshold: b.threshold,
    recoveryMs: b.recoveryTimeout,
    halfOpenProbes: b.halfOpenProbes,
    failureRatio: b.failureRatio,
    window: b.window,
    minCalls: b.minCalls,
    slowCallMs: b.slowCall,
    backoffMultiplier: b.backoffMultiplier,
    maxRecoveryMs: b.maxRecoveryTimeout,
    failureWindowMs: b.failureWindow,
  };
}

/** Told which breaker counted the failure or refused the call (the base's or a destination's). */
export interface BreakerDeps {
  onFailure(breaker: CircuitBreaker): void;
  onRejected(breaker: CircuitBreaker): void;
}

const FORCED_MESSAGE = 'The circuit breaker for this upstream was forced open by an operator; it stays open until it is closed through the admin API.';

/** The circuit_open reply for a refusal: a capped Retry-After, the honest wait in the message. */
export function circuitOpen(retryAfterMs: number, forced: boolean, capMs: number): ProxyError {
  const header = { 'retry-after': retryAfterSeconds(Math.min(retryAfterMs, capMs)) };
  if (forced) return proxyError('circuit_open', { headers: header, message: FORCED_MESSAGE });
  return proxyError('circuit_open', {
    headers: header,
    message: `The circuit breaker for this upstream is open; retry in ${retryAfterSeconds(retryAfterMs)} s.`,
  });
}

/**
 * `scopes` gives each destination its own breaker: requests to the base URL (the /prefix route)
 * use the base breaker, host-routed ones their host's (by host, not origin: with a host target
 * every host shares one origin). A plain breaker serves every request.
 * deps are told which breaker counted or refused, so metrics can tell the base from a destination.
 */
export function breaker(scopes: CircuitBreaker | BreakerScopes, policy: BreakerPolicy, deps: BreakerDeps, baseUrl?: { origin: string; host: string }): Stage {
  const base = scopes instanceof BreakerScopes ? scopes.base : scopes;
  const scoped = scopes instanceof BreakerScopes ? scopes : undefined;
  const capMs = policy.retryAfterMax;
  const failOn = new Set(policy.failOn);
  const on5xx = failOn.has('5xx');
  const onReset = failOn.has('reset');
  const timed = policy.slowCall !== null;

  // One app request moves the breaker by at most one failure, however many attempts its retries
  // made: with the default threshold (3) equal to one attempt plus two retries, one failed GET
  // (or one request to an unreachable host) would otherwise open the breaker for everyone. A
  // probe's failure always counts: it is what re-opens a half-open breaker. Kept here, not on the
  // exchange, and only for requests that failed once (weakly held: gone with the exchange).
  const counted = new WeakSet<Exchange>();

  /** Feeds one attempt's outcome back to the state machine; an answer's once its body is over. */
  function record(breaker: CircuitBreaker, ex: Exchange, reply: Reply, probe: boolean, ms: number, body?: BodyEnd): void {
    let failed = false;
    let neutral = false;
    switch (reply.kind) {
      case 'failed':
        // A client that hung up ('client') says nothing about the upstream's health: neutral.
        failed = reply.cause !== 'client' && failOn.has(reply.cause);
        neutral = !failed;
        break;
      case 'answer':
        // A body the upstream cut off mid-stream is a reset, whatever status went out first.
        if (body === 'broken' || body === 'client') {
          failed = body === 'broken' && onReset;
          neutral = !failed;
          break;
        }
        // 429 is back-pressure and 4xx the caller's fault: neither says the upstream is unhealthy.
        if (reply.status >= 500) failed = on5xx;
        else if (reply.status === 429 || (reply.source !== 'forwarded' && reply.source !== 'stub')) neutral = true;
        break;
      default:
        neutral = true; // a local refusal further in (bulkhead, body too large)
    }
    if (failed && !probe && counted.has(ex)) {
      failed = false;
      neutral = true;
    }
    if (failed) {
      counted.add(ex);
      deps.onFailure(breaker);
      breaker.onFailure(probe);
    } else if (neutral) breaker.onNeutral(probe);
    else breaker.onSuccess(ms, probe);
  }

  return function breakerStage(ex: Exchange, next: Next): Promise<Reply> {
    const breaker = scoped === undefined || (ex.origin === baseUrl?.origin && ex.host === baseUrl.host) ? base : scoped.get(ex.host);
    const admission = breaker.tryAcquire();
    if (!admission.ok) {
      deps.onRejected(breaker);
      tracing?.event(ex, 'breakwater.breaker', {
        'breakwater.decision': 'rejected',
        'breakwater.breaker.scope': breaker === base ? 'base' : ex.host,
        'breakwater.breaker.forced': admission.forced,
      });
      return Promise.resolve(circuitOpen(admission.retryAfterMs, admission.forced, capMs));
    }
    const probe = admission.probe;
    if (probe) tracing?.event(ex, 'breakwater.breaker', { 'breakwater.decision': 'probe', 'breakwater.breaker.scope': breaker === base ? 'base' : ex.host });
    // The duration only matters to slow-call detection: without it, no clock reads.
    const began = timed ? performance.now() : 0;
    // A continuation rather than an async frame: this stage is on every request.
    return next(ex).then((reply) => {
      if (reply.kind === 'answer') reply.body.tap({ end: (how) => record(breaker, ex, reply, probe, timed ? performance.now() - began : 0, how) });
      else record(breaker, ex, reply, probe, timed ? performance.now() - began : 0);
      return reply;
    });
  };
}
