/** Milliseconds on a monotonic clock. Injected into every resilience core so tests need no sleeps. */
export type Clock = () => number;

export const monotonic: Clock = () => performance.now();

/** A clock tests move by hand. */
export function manualClock(start = 0): Clock & { advance(ms: number): void; set(ms: number): void } {
  let now = start;
  const clock = (() => now) as Clock & { advance(ms: number): void; set(ms: number): void };
  clock.advance = (ms) => {
    now += ms;
  };
  clock.set = (ms) => {
    now = ms;
  };
  return clock;
}

/** The one timer-backed wait; stages take it as a dependency so tests can pass their own. */
export const sleep = (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms));
