// The breaker state machine driven by a manual clock: no sleeps, every transition asserted.
import { describe, expect, it } from 'vitest';
import { BreakerScopes, CircuitBreaker, type BreakerOptions, type BreakerStateName, type TransitionCause } from '../../../src/resilience/circuit-breaker.js';
import { manualClock } from '../../../src/resilience/clock.js';

const DEFAULTS: BreakerOptions = {
  enforce: true,
  threshold: 3,
  recoveryMs: 30_000,
  halfOpenProbes: 1,
  failureRatio: null,
  window: 20,
  minCalls: 10,
  slowCallMs: null,
  backoffMultiplier: 1,
  maxRecoveryMs: 300_000,
  failureWindowMs: null,
};

type Transition = [BreakerStateName, BreakerStateName, TransitionCause];

function setup(opts: Partial<BreakerOptions> = {}) {
  const clock = manualClock(1_000);
  const transitions: Transition[] = [];
  const breaker = new CircuitBreaker('twilio', { ...DEFAULTS, ...opts }, clock, (from, to, cause) => transitions.push([from, to, cause]));
  return { clock, breaker, transitions };
}

/** One call through the breaker: admitted and settled with the given outcome. */
function call(b: CircuitBreaker, outcome: 'ok' | 'fail' | 'neutral', durationMs = 10): boolean {
  const a = b.tryAcquire();
  if (!a.ok) return false;
  if (outcome === 'ok') b.onSuccess(durationMs, a.probe);
  else if (outcome === 'fail') b.onFailure(a.probe);
  else b.onNeutral(a.probe);
  return true;
}

function trip(b: CircuitBreaker, n = DEFAULTS.threshold): void {
  for (let i = 0; i < n; i++) call(b, 'fail');
}

describe('CircuitBreaker: closed → open on consecutive failures', () => {
  const rows: { desc: string; threshold: number; outcomes: ('ok' | 'fail')[]; state: BreakerStateName }[] = [
    { desc: 'threshold - 1 failures stay closed', threshold: 3, outcomes: ['fail', 'fail'], state: 'closed' },
    { desc: 'threshold failures open', threshold: 3, outcomes: ['fail', 'fail', 'fail'], state: 'open' },
    { desc: 'a success in between resets the count', threshold: 3, outcomes: ['fail', 'fail', 'ok', 'fail', 'fail'], state: 'closed' },
    { desc: 'a success then threshold failures opens', threshold: 3, outcomes: ['fail', 'ok', 'fail', 'fail', 'fail'], state: 'open' },
    { desc: 'threshold 1 opens on the first failure', threshold: 1, outcomes: ['fail'], state: 'open' },
    { desc: 'successes only stay closed', threshold: 1, outcomes: ['ok', 'ok', 'ok'], state: 'closed' },
  ];
  it.each(rows)('$desc', ({ threshold, outcomes, state }) => {
    const { breaker } = setup({ threshold });
    for (const o of outcomes) call(breaker, o);
    expect(breaker.stateName).toBe(state);
  });

  it('reports the opening to the listener with its cause, once', () => {
    const { breaker, transitions } = setup();
    trip(breaker);
    expect(transitions).toEqual([['closed', 'open', 'consecutive_failures']]);
  });

  it('refuses while open with the time left as retryAfterMs and counts rejections', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(12_345);
    const a = breaker.tryAcquire();
    expect(a).toEqual({ ok: false, retryAfterMs: 30_000 - 12_345, forced: false });
    expect(breaker.rejections).toBe(1);
  });
});

describe('CircuitBreaker: open → half-open → closed or open', () => {
  it('stays open until the recovery timeout has fully passed', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(29_999);
    expect(breaker.stateName).toBe('open');
    expect(breaker.tryAcquire().ok).toBe(false);
    clock.advance(1);
    expect(breaker.stateName).toBe('half_open');
  });

  it('reports open → half_open with cause recovery_timeout', () => {
    const { breaker, clock, transitions } = setup();
    trip(breaker);
    clock.advance(30_000);
    breaker.tryAcquire();
    expect(transitions.at(-1)).toEqual(['open', 'half_open', 'recovery_timeout']);
  });

  const probeRows = [
    { desc: 'one probe allowed by default', probes: 1 },
    { desc: 'three probes allowed when configured', probes: 3 },
  ];
  it.each(probeRows)('half-open admits exactly the probe limit ($desc); extra callers are refused with retryAfterMs', ({ probes }) => {
    const { breaker, clock } = setup({ halfOpenProbes: probes });
    trip(breaker);
    clock.advance(30_000);
    for (let i = 0; i < probes; i++) expect(breaker.tryAcquire()).toEqual({ ok: true, probe: true });
    const refused = breaker.tryAcquire();
    expect(refused.ok).toBe(false);
    expect(!refused.ok && refused.retryAfterMs).toBeGreaterThan(0);
    expect(breaker.stateName).toBe('half_open');
  });

  it('a successful probe closes and resets the consecutive count', () => {
    const { breaker, clock, transitions } = setup();
    trip(breaker);
    clock.advance(30_000);
    const probe = breaker.tryAcquire();
    expect(probe).toEqual({ ok: true, probe: true });
    breaker.onSuccess(5, true);
    expect(breaker.stateName).toBe('closed');
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    expect(transitions.at(-1)).toEqual(['half_open', 'closed', 'probe_succeeded']);
    // Closed again: it takes the full threshold to open once more.
    trip(breaker, 2);
    expect(breaker.stateName).toBe('closed');
  });

  it('a failed probe re-opens for another recovery period', () => {
    const { breaker, clock, transitions } = setup();
    trip(breaker);
    clock.advance(30_000);
    breaker.tryAcquire();
    breaker.onFailure(true);
    expect(breaker.stateName).toBe('open');
    expect(transitions.at(-1)).toEqual(['half_open', 'open', 'probe_failed']);
    clock.advance(29_999);
    expect(breaker.stateName).toBe('open');
    clock.advance(1);
    expect(breaker.stateName).toBe('half_open');
  });

  it('onNeutral frees the probe slot so the next caller may probe', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(30_000);
    const first = breaker.tryAcquire();
    expect(first).toEqual({ ok: true, probe: true });
    expect(breaker.tryAcquire().ok).toBe(false);
    breaker.onNeutral(true);
    expect(breaker.stateName).toBe('half_open');
    expect(breaker.tryAcquire()).toEqual({ ok: true, probe: true });
  });

  it('onNeutral for a non-probe call does not free a probe slot', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(30_000);
    breaker.tryAcquire();
    breaker.onNeutral(false);
    expect(breaker.tryAcquire().ok).toBe(false);
  });

  it('late outcomes of calls admitted while closed do not move a half-open breaker', () => {
    const { breaker, clock } = setup();
    const early = breaker.tryAcquire();
    expect(early).toEqual({ ok: true, probe: false });
    trip(breaker);
    clock.advance(30_000);
    expect(breaker.stateName).toBe('half_open');
    breaker.onFailure(false);
    expect(breaker.stateName).toBe('half_open');
    breaker.onSuccess(1, false);
    expect(breaker.stateName).toBe('half_open');
  });
});

describe('CircuitBreaker: consecutive failures age out (failureWindowMs)', () => {
  // Each row: gaps (ms) before each failure, threshold 3, window 60 s.
  const rows: { desc: string; gaps: number[]; state: BreakerStateName; consecutive: number | null }[] = [
    { desc: 'a burst inside the window opens', gaps: [0, 1000, 1000], state: 'open', consecutive: null },
    { desc: 'three failures spread over a quiet period stay closed', gaps: [0, 40_000, 40_000], state: 'closed', consecutive: 2 },
    { desc: 'failures an hour apart never add up', gaps: [0, 3_600_000, 3_600_000, 3_600_000], state: 'closed', consecutive: 1 },
    { desc: 'exactly the window apart still counts', gaps: [0, 30_000, 30_000], state: 'open', consecutive: null },
    { desc: 'an aged-out failure is dropped, the rest still count', gaps: [0, 50_000, 20_000, 1000], state: 'open', consecutive: null },
  ];
  it.each(rows)('$desc', ({ gaps, state, consecutive }) => {
    const { breaker, clock } = setup({ failureWindowMs: 60_000 });
    for (const gap of gaps) {
      clock.advance(gap);
      call(breaker, 'fail');
    }
    expect(breaker.stateName).toBe(state);
    expect(breaker.snapshot().consecutiveFailures).toBe(consecutive);
  });

  it('the snapshot forgets aged failures without a call', () => {
    const { breaker, clock } = setup({ failureWindowMs: 60_000 });
    trip(breaker, 2);
    expect(breaker.snapshot().consecutiveFailures).toBe(2);
    clock.advance(60_001);
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    call(breaker, 'fail');
    expect(breaker.stateName).toBe('closed');
  });

  it('null keeps every failure of the streak, however far apart (Envoy consecutive_5xx)', () => {
    const { breaker, clock } = setup({ failureWindowMs: null });
    for (let i = 0; i < 3; i++) {
      clock.advance(3_600_000);
      call(breaker, 'fail');
    }
    expect(breaker.stateName).toBe('open');
  });

  it('a success still resets the streak, and a close starts a new one', () => {
    const { breaker, clock } = setup({ failureWindowMs: 60_000, recoveryMs: 1000 });
    trip(breaker, 2);
    call(breaker, 'ok');
    call(breaker, 'fail');
    expect(breaker.snapshot().consecutiveFailures).toBe(1);
    trip(breaker, 2);
    expect(breaker.stateName).toBe('open');
    clock.advance(1000);
    call(breaker, 'ok'); // the probe closes it
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    trip(breaker, 2);
    expect(breaker.stateName).toBe('closed');
  });
});

describe('CircuitBreaker: failure ratio over a sliding window', () => {
  const rows: {
    desc: string;
    ratio: number;
    window: number;
    minCalls: number;
    outcomes: ('ok' | 'fail')[];
    state: BreakerStateName;
    cause?: TransitionCause;
  }[] = [
    { desc: 'below min volume never opens, even at 100 %', ratio: 0.5, window: 10, minCalls: 5, outcomes: ['fail', 'fail', 'ok', 'fail'], state: 'closed' },
    {
      desc: 'ratio reached exactly at min volume opens',
      ratio: 0.5,
      window: 10,
      minCalls: 4,
      outcomes: ['ok', 'fail', 'ok', 'fail'],
      state: 'open',
      cause: 'failure_ratio',
    },
    { desc: 'ratio just under the threshold stays closed', ratio: 0.5, window: 10, minCalls: 5, outcomes: ['ok', 'ok', 'ok', 'fail', 'fail'], state: 'closed' },
    { desc: '3 of 5 ≥ 60 % opens', ratio: 0.6, window: 5, minCalls: 5, outcomes: ['fail', 'ok', 'fail', 'ok', 'fail'], state: 'open', cause: 'failure_ratio' },
    {
      desc: 'old failures slide out of the window',
      ratio: 0.5,
      window: 4,
      minCalls: 4,
      // Window at the end: ok ok ok fail → 25 %.
      outcomes: ['fail', 'ok', 'fail', 'ok', 'ok', 'ok', 'fail'],
      state: 'closed',
    },
    {
      desc: 'a full window of failures mixed with successes opens once the ratio is crossed',
      ratio: 0.75,
      window: 4,
      minCalls: 4,
      outcomes: ['ok', 'fail', 'ok', 'fail', 'fail', 'fail'],
      state: 'open',
      cause: 'failure_ratio',
    },
  ];
  it.each(rows)('$desc', ({ ratio, window, minCalls, outcomes, state, cause }) => {
    const { breaker, transitions } = setup({ threshold: 1000, failureRatio: ratio, window, minCalls });
    for (const o of outcomes) call(breaker, o);
    expect(breaker.stateName).toBe(state);
    if (cause) expect(transitions).toEqual([['closed', 'open', cause]]);
    else expect(transitions).toEqual([]);
  });

  it('snapshot reports the window counts', () => {
    const { breaker } = setup({ threshold: 1000, failureRatio: 0.9, window: 4, minCalls: 4 });
    for (const o of ['fail', 'ok', 'ok', 'fail', 'ok', 'ok'] as const) call(breaker, o);
    const s = breaker.snapshot();
    expect(s.windowCalls).toBe(4);
    expect(s.windowFailures).toBe(1);
  });

  it('a successful probe clears the window', () => {
    const { breaker, clock } = setup({ threshold: 1000, failureRatio: 0.5, window: 4, minCalls: 2 });
    call(breaker, 'fail');
    call(breaker, 'fail');
    expect(breaker.stateName).toBe('open');
    clock.advance(30_000);
    call(breaker, 'ok');
    expect(breaker.stateName).toBe('closed');
    expect(breaker.snapshot().windowCalls).toBe(0);
    // One failure after a clean window is below min volume.
    call(breaker, 'fail');
    expect(breaker.stateName).toBe('closed');
  });
});

describe('CircuitBreaker: slow calls', () => {
  const rows = [
    { desc: 'faster than the threshold is a success', durationMs: 999, state: 'closed' as const },
    { desc: 'exactly the threshold is a success', durationMs: 1000, state: 'closed' as const },
    { desc: 'slower than the threshold is a failure', durationMs: 1001, state: 'open' as const },
  ];
  it.each(rows)('$desc', ({ durationMs, state }) => {
    const { breaker } = setup({ threshold: 2, slowCallMs: 1000 });
    call(breaker, 'ok', durationMs);
    call(breaker, 'ok', durationMs);
    expect(breaker.stateName).toBe(state);
  });

  it('a slow successful probe re-opens', () => {
    const { breaker, clock, transitions } = setup({ slowCallMs: 100 });
    trip(breaker);
    clock.advance(30_000);
    call(breaker, 'ok', 500);
    expect(breaker.stateName).toBe('open');
    expect(transitions.at(-1)).toEqual(['half_open', 'open', 'probe_failed']);
  });

  it('slow calls are ignored when no threshold is set', () => {
    const { breaker } = setup({ threshold: 1, slowCallMs: null });
    call(breaker, 'ok', 10 ** 9);
    expect(breaker.stateName).toBe('closed');
  });
});

describe('CircuitBreaker: open-time back-off', () => {
  /** Opens, then fails `reopens` probes; returns each open period's length as seen in retryAfterMs. */
  function periods(opts: Partial<BreakerOptions>, reopens: number): number[] {
    const { breaker, clock } = setup(opts);
    trip(breaker, opts.threshold ?? DEFAULTS.threshold);
    const out: number[] = [];
    for (let i = 0; i <= reopens; i++) {
      const a = breaker.tryAcquire();
      if (a.ok) throw new Error('expected open');
      out.push(a.retryAfterMs);
      clock.advance(a.retryAfterMs);
      if (i < reopens) call(breaker, 'fail');
    }
    return out;
  }

  const rows = [
    { desc: 'multiplier 1 keeps the open time fixed', opts: { recoveryMs: 1000, backoffMultiplier: 1, maxRecoveryMs: 60_000 }, want: [1000, 1000, 1000, 1000] },
    { desc: 'multiplier 2 doubles up to the cap', opts: { recoveryMs: 1000, backoffMultiplier: 2, maxRecoveryMs: 5000 }, want: [1000, 2000, 4000, 5000, 5000] },
    { desc: 'multiplier 3 triples', opts: { recoveryMs: 100, backoffMultiplier: 3, maxRecoveryMs: 10_000 }, want: [100, 300, 900, 2700, 8100, 10_000] },
    { desc: 'a cap below the base time never shortens it', opts: { recoveryMs: 5000, backoffMultiplier: 2, maxRecoveryMs: 1000 }, want: [5000, 5000, 5000] },
  ];
  it.each(rows)('$desc', ({ opts, want }) => {
    expect(periods(opts, want.length - 1)).toEqual(want);
  });

  it('resets to the base time after a successful close', () => {
    const { breaker, clock } = setup({ recoveryMs: 1000, backoffMultiplier: 2, maxRecoveryMs: 60_000 });
    trip(breaker);
    clock.advance(1000);
    call(breaker, 'fail'); // re-open: 2000
    clock.advance(2000);
    call(breaker, 'ok'); // close
    expect(breaker.snapshot().trips).toBe(0);
    trip(breaker);
    const a = breaker.tryAcquire();
    expect(a).toEqual({ ok: false, retryAfterMs: 1000, forced: false });
  });

  it('snapshot counts trips and the time left while open', () => {
    const { breaker, clock } = setup({ recoveryMs: 1000, backoffMultiplier: 2, maxRecoveryMs: 60_000 });
    trip(breaker);
    clock.advance(1000);
    call(breaker, 'fail');
    clock.advance(500);
    const s = breaker.snapshot();
    expect(s.trips).toBe(2);
    expect(s.openForMs).toBe(1500);
  });
});

describe('CircuitBreaker: enforce=false (metrics-only)', () => {
  it('never refuses, yet still transitions and counts', () => {
    const { breaker, clock, transitions } = setup({ enforce: false });
    for (let i = 0; i < 10; i++) expect(call(breaker, 'fail')).toBe(true);
    expect(breaker.stateName).toBe('open');
    expect(breaker.rejections).toBe(0);
    expect(breaker.failures).toBe(10);
    clock.advance(30_000);
    // Half-open: the probe goes first, then everyone else still passes.
    expect(breaker.tryAcquire()).toEqual({ ok: true, probe: true });
    expect(breaker.tryAcquire()).toEqual({ ok: true, probe: false });
    breaker.onSuccess(1, true);
    expect(breaker.stateName).toBe('closed');
    expect(transitions.map(([f, t]) => `${f}>${t}`)).toEqual(['closed>open', 'open>half_open', 'half_open>closed']);
    expect(breaker.snapshot().enforcing).toBe(false);
  });

  it('admits every caller while open', () => {
    const { breaker } = setup({ enforce: false });
    trip(breaker);
    for (let i = 0; i < 5; i++) expect(breaker.tryAcquire()).toEqual({ ok: true, probe: false });
    expect(breaker.stateName).toBe('open');
  });

  it('a forced open still blocks: the operator asked for it', () => {
    const { breaker } = setup({ enforce: false });
    breaker.forceOpen();
    expect(breaker.tryAcquire().ok).toBe(false);
  });
});

describe('CircuitBreaker: forceOpen / forceClose / reset', () => {
  it('forceOpen blocks indefinitely, ignores the recovery timeout and reports itself forced, with no end', () => {
    const { breaker, clock, transitions } = setup();
    breaker.forceOpen();
    clock.advance(10 ** 9);
    expect(breaker.stateName).toBe('open');
    const a = breaker.tryAcquire();
    expect(a.ok).toBe(false);
    // Honest: only an operator ends it. The stage caps the Retry-After it builds from this.
    expect(a).toEqual({ ok: false, retryAfterMs: Number.POSITIVE_INFINITY, forced: true });
    expect(transitions).toEqual([['closed', 'open', 'forced_open']]);
    const s = breaker.snapshot();
    expect(s.forced).toBe(true);
    expect(s.openForMs).toBeNull();
  });

  it('forceClose closes an open breaker and clears the back-off', () => {
    const { breaker, transitions } = setup({ backoffMultiplier: 2 });
    trip(breaker);
    breaker.forceClose();
    expect(breaker.stateName).toBe('closed');
    expect(breaker.snapshot().trips).toBe(0);
    expect(transitions.at(-1)).toEqual(['open', 'closed', 'forced_close']);
    expect(breaker.tryAcquire()).toEqual({ ok: true, probe: false });
  });

  it('forceClose after forceOpen closes', () => {
    const { breaker } = setup();
    breaker.forceOpen();
    breaker.forceClose();
    expect(breaker.stateName).toBe('closed');
    expect(breaker.snapshot().forced).toBe(false);
  });

  it('a forced transition to the current state notifies nobody', () => {
    const { breaker, transitions } = setup();
    breaker.forceClose();
    expect(transitions).toEqual([]);
  });

  it('reset zeroes the counters and closes', () => {
    const { breaker, transitions } = setup();
    call(breaker, 'ok');
    trip(breaker);
    breaker.tryAcquire();
    breaker.reset();
    const s = breaker.snapshot();
    expect(s).toMatchObject({ state: 'closed', failures: 0, successes: 0, rejections: 0, trips: 0, consecutiveFailures: 0, windowCalls: 0 });
    expect(transitions.at(-1)).toEqual(['open', 'closed', 'reset']);
  });
});

describe('CircuitBreaker: snapshot', () => {
  it('has every field, with values that follow the calls', () => {
    const { breaker } = setup({ failureRatio: 0.9, window: 10, minCalls: 10 });
    call(breaker, 'ok');
    call(breaker, 'fail');
    expect(breaker.snapshot()).toEqual({
      name: 'twilio',
      state: 'closed',
      enforcing: true,
      consecutiveFailures: 1,
      windowCalls: 2,
      windowFailures: 1,
      failures: 1,
      successes: 1,
      rejections: 0,
      forced: false,
      openForMs: null,
      trips: 0,
    });
  });

  it('while open: consecutiveFailures is null and openForMs counts down', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(10_000);
    const s = breaker.snapshot();
    expect(s.state).toBe('open');
    expect(s.consecutiveFailures).toBeNull();
    expect(s.openForMs).toBe(20_000);
  });

  it('reading the snapshot moves an expired open breaker to half-open', () => {
    const { breaker, clock } = setup();
    trip(breaker);
    clock.advance(30_000);
    expect(breaker.snapshot().state).toBe('half_open');
    expect(breaker.snapshot().openForMs).toBeNull();
  });
});

describe('BreakerScopes', () => {
  it('builds one breaker per scope on first use, and past the cap the rest share one', () => {
    const made: string[] = [];
    const clock = manualClock(0);
    const opts = {
      enforce: true,
      threshold: 1,
      recoveryMs: 1000,
      halfOpenProbes: 1,
      failureRatio: null,
      window: 1,
      minCalls: 1,
      slowCallMs: null,
      backoffMultiplier: 1,
      maxRecoveryMs: 1000,
      failureWindowMs: null,
    };
    const base = new CircuitBreaker('base', opts, clock);
    const scopes = new BreakerScopes(base, (s) => (made.push(s), new CircuitBreaker(s, opts, clock)), 2);
    const a = scopes.get('a.example');
    expect(scopes.get('a.example')).toBe(a);
    const b = scopes.get('b.example');
    expect(b).not.toBe(a);
    const c = scopes.get('c.example');
    expect(scopes.get('d.example')).toBe(c);
    expect(made).toEqual(['a.example', 'b.example', '(other)']);
    expect(scopes.entries().map(([s]) => s)).toEqual(['a.example', 'b.example', '(other)']);
    a.onFailure(false);
    expect(a.stateName).toBe('open');
    expect(b.stateName).toBe('closed');
    expect(base.stateName).toBe('closed');
  });
});
