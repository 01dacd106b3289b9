import type { Exchange, Next, Reply, Stage } from './exchange.js';

/** Chains stages into one handler; the last `terminal` produces the reply (undici's compose). */
export function compose(stages: readonly Stage[], terminal: Next): Next {
  let next = terminal;
  for (let i = stages.length - 1; i >= 0; i--) {
    const stage = stages[i]!;
    const after = next;
    next = (ex: Exchange): Promise<Reply> => stage(ex, after);
  }
  return next;
}
