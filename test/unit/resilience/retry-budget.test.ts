// The retry budget with a manual clock: ratio, per-second floor, and the sliding 10 s window.
import { describe, expect, it } from 'vitest';
import { manualClock } from '../../../src/resilience/clock.js';
import { RetryBudget } from '../../../src/resilience/retry-budget.js';

function spend(b: RetryBudget, max = 1000): number {
  let n = 0;
  while (n < max && b.tryRetry()) n++;
  return n;
}

describe('RetryBudget: ratio and floor', () => {
  const rows = [
    { desc: '20 % of 10 requests, no floor', ratio: 0.2, minPerSecond: 0, requests: 10, retries: 2 },
    { desc: '20 % of 100 requests, no floor', ratio: 0.2, minPerSecond: 0, requests: 100, retries: 20 },
    { desc: '50 % of 7 requests rounds up to the next whole retry', ratio: 0.5, minPerSecond: 0, requests: 7, retries: 4 },
    { desc: 'ratio 0 and no floor: never', ratio: 0, minPerSecond: 0, requests: 100, retries: 0 },
    { desc: 'no requests, floor 1/s: 10 over the 10 s window', ratio: 0.2, minPerSecond: 1, requests: 0, retries: 10 },
    { desc: 'floor adds to the ratio', ratio: 0.2, minPerSecond: 1, requests: 10, retries: 12 },
    { desc: 'fractional floor', ratio: 0, minPerSecond: 0.5, requests: 0, retries: 5 },
  ];
  it.each(rows)('$desc', ({ ratio, minPerSecond, requests, retries }) => {
    const b = new RetryBudget(ratio, minPerSecond, manualClock(0));
    for (let i = 0; i < requests; i++) b.recordRequest();
    expect(spend(b)).toBe(retries);
  });

  it('canRetry does not spend', () => {
    const b = new RetryBudget(0.1, 0, manualClock(0));
    for (let i = 0; i < 10; i++) b.recordRequest();
    expect(b.canRetry()).toBe(true);
    expect(b.canRetry()).toBe(true);
    expect(spend(b)).toBe(1);
    expect(b.canRetry()).toBe(false);
  });

  it('new requests earn new retries', () => {
    const b = new RetryBudget(0.2, 0, manualClock(0));
    for (let i = 0; i < 5; i++) b.recordRequest();
    expect(spend(b)).toBe(1);
    for (let i = 0; i < 5; i++) b.recordRequest();
    expect(spend(b)).toBe(1);
  });
});

describe('RetryBudget: window expiry', () => {
  const rows = [
    { desc: 'requests 9.999 s old still count', advance: 9_999, retries: 2 },
    { desc: 'requests 10 s old have left the window', advance: 10_000, retries: 0 },
    { desc: 'a long idle period clears everything', advance: 3_600_000, retries: 0 },
  ];
  it.each(rows)('$desc', ({ advance, retries }) => {
    const clock = manualClock(0);
    const b = new RetryBudget(0.2, 0, clock);
    for (let i = 0; i < 10; i++) b.recordRequest();
    clock.advance(advance);
    expect(spend(b)).toBe(retries);
  });

  it('spent retries expire too, freeing the budget', () => {
    const clock = manualClock(0);
    const b = new RetryBudget(0, 1, clock); // 10 per window from the floor
    expect(spend(b)).toBe(10);
    clock.advance(5_000);
    expect(spend(b)).toBe(0);
    clock.advance(5_000);
    expect(spend(b)).toBe(10);
  });

  it('slides one second at a time', () => {
    const clock = manualClock(0);
    const b = new RetryBudget(1, 0, clock);
    b.recordRequest(); // at 0 s
    clock.advance(3_000);
    b.recordRequest(); // at 3 s
    clock.advance(7_000); // 10 s: the first has left, the second has not
    expect(spend(b)).toBe(1);
  });
});
