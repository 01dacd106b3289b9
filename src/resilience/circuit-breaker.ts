// A circuit breaker as a pure state machine: no timers, no I/O, time from an injected clock.
// Trip conditions are Resilience4j's set: N consecutive failures, or a failure ratio over a
// sliding window of the last calls once a minimum volume is reached; slow calls count as
// failures when a threshold is set. The open time may grow on repeated trips (Envoy's
// ejection back-off), reset by a successful close. Consecutive failures age out: only those of
// the current streak within `failureWindowMs` of the newest count, so three unrelated failures
// spread over a quiet hour (no call between them) do not open the breaker as a burst would.
import type { Clock } from './clock.js';

export type BreakerStateName = 'closed' | 'half_open' | 'open';

export type BreakerState =
  | { readonly name: 'closed'; readonly consecutive: number }
  | { readonly name: 'open'; readonly until: number; readonly forced: boolean }
  | { readonly name: 'half_open'; readonly probes: number };

export interface BreakerOptions {
  /** false: count and report, never reject (metrics-only mode). */
  enforce: boolean;
  threshold: number;
  recoveryMs: number;
  halfOpenProbes: number;
  failureRatio: number | null;
  window: number;
  minCalls: number;
  slowCallMs: number | null;
  backoffMultiplier: number;
  maxRecoveryMs: number;
  /** Consecutive failures older than this (relative to the newest) are forgotten; null: never. */
  failureWindowMs: number | null;
}

/**
 * A refusal says honestly when the breaker may next admit a call: `retryAfterMs` is the time
 * left until half-open (Infinity while forced open: only an operator closes it), or a second
 * while half-open with every probe slot taken.
 */
export type Admission = { readonly ok: true; readonly probe: boolean } | { readonly ok: false; readonly retryAfterMs: number; readonly forced: boolean };

export type TransitionCause =
  | 'consecutive_failures'
  | 'failure_ratio'
  | 'probe_failed'
  | 'probe_succeeded'
  | 'recovery_timeout'
  | 'forced_open'
  | 'forced_close'
  | 'reset';

export type TransitionListener = (from: BreakerStateName, to: BreakerStateName, cause: TransitionCause) => void;

const ADMIT: Admission = { ok: true, probe: false };
const PROBE: Admission = { ok: true, probe: true };
const PROBES_BUSY: Admission = { ok: false, retryAfterMs: 1000, forced: false };
const FORCED: Admission = { ok: false, retryAfterMs: Number.POSITIVE_INFINITY, forced: true };

export class CircuitBreaker {
  private state: BreakerState = { name: 'closed', consecutive: 0 };
  /** Ring buffer of the last `window` outcomes (1 failure, 0 success) for the ratio rule. */
  private readonly ring: Uint8Array;
  private ringLen = 0;
  private ringPos = 0;
  private ringFailures = 0;
  private trips = 0;
  /** Times of the current streak's failures inside the window, oldest first (with failureWindowMs only). */
  private streak: number[] = [];
  failures = 0;
  successes = 0;
  rejections = 0;

  constructor(
    readonly name: string,
    private readonly opts: BreakerOptions,
    private readonly clock: Clock,
    private readonly onTransition: TransitionListener = () => {},
  ) {
    this.ring = new Uint8Array(opts.failureRatio === null ? 0 : opts.window);
  }

  get stateName(): BreakerStateName {
    this.refresh();
    return this.state.name;
  }

  /** Asks to send one call. A granted probe must be settled with onSuccess/onFailure/onNeutral. */
  tryAcquire(): Admission {
    this.refresh();
    const s = this.state;
    if (s.name === 'closed') return ADMIT;
    if (s.name === 'half_open') {
      if (s.probes < this.opts.halfOpenProbes) {
        this.state = { name: 'half_open', probes: s.probes + 1 };
        return PROBE;
      }
      if (!this.opts.enforce) return ADMIT;
      this.rejections++;
      return PROBES_BUSY;
    }
    if (!this.opts.enforce && !s.forced) return ADMIT;
    this.rejections++;
    return s.forced ? FORCED : { ok: false, retryAfterMs: Math.max(0, s.until - this.clock()), forced: false };
  }

  onSuccess(durationMs: number, probe: boolean): void {
    if (this.opts.slowCallMs !== null && durationMs > this.opts.slowCallMs) {
      this.onFailure(probe);
      return;
    }
    this.successes++;
    this.record(0);
    const s = this.state;
    if (probe && s.name === 'half_open') {
      this.trips = 0;
      this.transition({ name: 'closed', consecutive: 0 }, 'probe_succeeded');
      this.clearWindow();
    } else if (s.name === 'closed' && s.consecutive !== 0) {
      this.state = { name: 'closed', consecutive: 0 };
      this.streak.length = 0;
    }
  }

  onFailure(probe: boolean): void {
    this.failures++;
    this.record(1);
    const s = this.state;
    if (s.name === 'half_open' && probe) {
      this.open('probe_failed');
    } else if (s.name === 'closed') {
      const consecutive = this.aged(s.consecutive) + 1;
      if (consecutive >= this.opts.threshold) this.open('consecutive_failures');
      else if (this.ratioExceeded()) this.open('failure_ratio');
      else this.state = { name: 'closed', consecutive };
    }
  }

  /** A call whose outcome says nothing about health (429, 4xx, client gone): frees a probe slot. */
  onNeutral(probe: boolean): void {
    const s = this.state;
    if (probe && s.name === 'half_open' && s.probes > 0) this.state = { name: 'half_open', probes: s.probes - 1 };
  }

  forceOpen(): void {
    this.transition({ name: 'open', until: Number.POSITIVE_INFINITY, forced: true }, 'forced_open');
  }

  forceClose(): void {
    this.trips = 0;
    this.clearWindow();
    this.transition({ name: 'closed', consecutive: 0 }, 'forced_close');
  }

  reset(): void {
    this.trips = 0;
    this.clearWindow();
    this.failures = 0;
    this.successes = 0;
    this.rejections = 0;
    this.transition({ name: 'closed', consecutive: 0 }, 'reset');
  }

  snapshot() {
    this.refresh();
    const s = this.state;
    return {
      name: this.name,
      state: s.name,
      enforcing: this.opts.enforce,
      consecutiveFailures: s.name === 'closed' ? this.inWindow(s.consecutive) : null,
      windowCalls: this.ringLen,
      windowFailures: this.ringFailures,
      failures: this.failures,
      successes: this.successes,
      rejections: this.rejections,
      forced: s.name === 'open' && s.forced,
      openForMs: s.name === 'open' && Number.isFinite(s.until) ? Math.max(0, Math.round(s.until - this.clock())) : null,
      trips: this.trips,
    };
  }

  private refresh(): void {
    const s = this.state;
    if (s.name === 'open' && !s.forced && this.clock() >= s.until) {
      this.transition({ name: 'half_open', probes: 0 }, 'recovery_timeout');
    }
  }

  private open(cause: TransitionCause): void {
    const grown = this.opts.recoveryMs * this.opts.backoffMultiplier ** this.trips;
    this.trips++;
    const ms = Math.min(grown, Math.max(this.opts.maxRecoveryMs, this.opts.recoveryMs));
    this.transition({ name: 'open', until: this.clock() + ms, forced: false }, cause);
  }

  /**
   * The streak before this failure, less what has aged out, with this failure's time recorded.
   * A streak never outgrows threshold - 1 entries: the failure that reaches the threshold opens.
   */
  private aged(consecutive: number): number {
    const windowMs = this.opts.failureWindowMs;
    if (windowMs === null) return consecutive;
    const now = this.clock();
    const t = this.streak;
    while (t.length > 0 && now - t[0]! > windowMs) t.shift();
    const before = t.length;
    t.push(now);
    return before;
  }

  /** The streak as the next failure would see it (for snapshots). */
  private inWindow(consecutive: number): number {
    const windowMs = this.opts.failureWindowMs;
    if (windowMs === null) return consecutive;
    const now = this.clock();
    return this.streak.filter((at) => now - at <= windowMs).length;
  }

  private transition(next: BreakerState, cause: TransitionCause): void {
    const from = this.state.name;
    this.streak.length = 0; // every transition starts a new streak
    this.state = next;
    if (from !== next.name) this.onTransition(from, next.name, cause);
  }

  private record(outcome: 0 | 1): void {
    if (this.ring.length === 0) return;
    if (this.ringLen === this.ring.length) this.ringFailures -= this.ring[this.ringPos]!;
    else this.ringLen++;
    this.ring[this.ringPos] = outcome;
    this.ringFailures += outcome;
    this.ringPos = (this.ringPos + 1) % this.ring.length;
  }

  private ratioExceeded(): boolean {
    const ratio = this.opts.failureRatio;
    return ratio !== null && this.ringLen >= this.opts.minCalls && this.ringFailures / this.ringLen >= ratio;
  }

  private clearWindow(): void {
    this.ring.fill(0);
    this.ringLen = 0;
    this.ringPos = 0;
    this.ringFailures = 0;
  }
}

/**
 * One breaker per destination (Envoy keeps circuit-breaking state per cluster, outlier state per
 * host): the upstream's base URL has `base`; each host-routed origin (Verify, a regional host, a
 * typo'd name) gets its own, built on first use, so one failing host never refuses requests to
 * another. Bounded: past `max` scopes, the rest share one overflow breaker rather than grow
 * without limit on hostile Host headers.
 */
export class BreakerScopes {
  private readonly byScope = new Map<string, CircuitBreaker>();
  private overflow: CircuitBreaker | undefined;

  constructor(
    readonly base: CircuitBreaker,
    private readonly make: (scope: string) => CircuitBreaker,
    private readonly max: number,
  ) {}

  get(scope: string): CircuitBreaker {
    const hit = this.byScope.get(scope);
    if (hit !== undefined) return hit;
    if (this.byScope.size >= this.max) return (this.overflow ??= this.make('(other)'));
    const made = this.make(scope);
    this.byScope.set(scope, made);
    return made;
  }

  /** The destinations' breakers built so far (base not included), by scope. */
  entries(): [string, CircuitBreaker][] {
    const out = [...this.byScope];
    if (this.overflow !== undefined) out.push(['(other)', this.overflow]);
    return out;
  }
}
