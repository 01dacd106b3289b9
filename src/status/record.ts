// The one callback the request path calls for the status page (StackDeps.onSettled): counters
// into the rolling window, and proxy-made errors into the recent-errors ring.
import type { Exchange } from '../pipeline/exchange.js';
import { RecentErrors, RollingStats } from './stats.js';
import type { Clock } from '../resilience/clock.js';

// Outcomes that are not an answer Breakwater made up: the upstream's, a stub's, a replay, or
// the app hanging up.
const NOT_PROXY_MADE = new Set(['forwarded', 'stub', 'replayed', 'cached', 'client_closed']);

export interface StatusRecorder {
  readonly stats: RollingStats;
  readonly recent: RecentErrors;
  /** The last SIGHUP/watch reload, for the page's header. */
  lastReload: { at: string; ok: boolean; detail: string } | undefined;
  reloaded(ok: boolean, detail: string): void;
  onSettled(ex: Exchange, upstream: string, status: number, outcome: string, seconds: number): void;
}

export function statusRecorder(clock: Clock): StatusRecorder {
  const stats = new RollingStats(clock);
  const recent = new RecentErrors(50);
  return {
    stats,
    recent,
    lastReload: undefined,
    reloaded(ok, detail) {
      this.lastReload = { at: new Date().toISOString(), ok, detail: detail.slice(0, 300) };
    },
    onSettled(ex, upstream, status, outcome, seconds) {
      stats.record(upstream, ex.route, { status, outcome, seconds });
      if (!NOT_PROXY_MADE.has(outcome)) {
        recent.push({
          at: new Date().toISOString(),
          requestId: ex.requestId,
          upstream,
          route: ex.route,
          method: ex.method,
          status,
          code: outcome,
          cause: ex.cause ?? '',
        });
      }
    },
  };
}
