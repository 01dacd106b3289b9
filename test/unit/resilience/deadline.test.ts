import { describe, expect, it } from 'vitest';
import { withDeadline, type DeadlineOutcome } from '../../../src/resilience/deadline.js';

function recorder() {
  const seen: DeadlineOutcome[] = [];
  return { seen, report: (how: DeadlineOutcome) => seen.push(how) };
}

describe('withDeadline', () => {
  it('passes an answer that comes in time and reports ok once', async () => {
    const r = recorder();
    expect(await withDeadline(Promise.resolve(7), 1000, () => 'late', r.report)).toBe(7);
    expect(r.seen).toEqual(['ok']);
  });

  it('stands in for a failure with the late value and reports error', async () => {
    const r = recorder();
    expect(await withDeadline(Promise.reject(new Error('down')), 1000, () => 'late', r.report)).toBe('late');
    expect(r.seen).toEqual(['error']);
  });

  it('decides without a slow answer at the deadline and drops it when it comes', async () => {
    const r = recorder();
    let answer!: (v: number) => void;
    const slow = new Promise<number>((res) => (answer = res));
    const started = performance.now();
    expect(await withDeadline(slow, 20, () => 'late', r.report)).toBe('late');
    expect(performance.now() - started).toBeGreaterThanOrEqual(15);
    answer(1);
    await new Promise((res) => setTimeout(res, 5));
    expect(r.seen).toEqual(['timeout']);
  });
});
