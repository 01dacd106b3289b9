/** How a bounded wait ended, for the caller's health accounting. */
export type DeadlineOutcome = 'ok' | 'timeout' | 'error';

/**
 * `op`'s value if it settles within `ms`, otherwise `late()`, which also stands in when `op`
 * fails. `report` hears once how it ended. An answer that arrives after the deadline is
 * dropped, never applied: the caller has already decided without it.
 */
export function withDeadline<T, L>(op: Promise<T>, ms: number, late: () => L, report: (how: DeadlineOutcome) => void): Promise<T | L> {
  return new Promise<T | L>((resolve) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      report('timeout');
      resolve(late());
    }, ms);
    op.then(
      (v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        report('ok');
        resolve(v);
      },
      () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        report('error');
        resolve(late());
      },
    );
  });
}
