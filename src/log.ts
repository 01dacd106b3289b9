// pino JSON logs. Secrets are kept out twice: the code never passes credential values to the
// logger, and the redaction list censors the usual places anyway, in case a future line does.
import pino, { type Logger } from 'pino';

export const REDACT_PATHS = [
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization',
  'password', '*.password', 'token', '*.token', 'apiKey', '*.apiKey', 'redisUrl', '*.redisUrl',
  'cookie', '*.cookie',
];

export type Log = Logger;

export const CENSOR = '[redacted]';

/**
 * The per-request access line goes through a child with the top-level paths only. Its fields are
 * a closed set of flat values built in proxy.ts (ids, names, numbers), so a nested `*.x` path can
 * never match it; yet pino runs every wildcard path on every field of every line, which cost
 * ~11 µs per request, a quarter of the sidecar's whole budget. The top-level paths stay (a key
 * lookup, free), so a credential under one of those names would still be censored.
 * The child's own level is fixed at info: callers gate on the parent's level, which a reload
 * changes after this child was built.
 */
const TOP_LEVEL_PATHS = REDACT_PATHS.filter((p) => !p.includes('.'));

export function accessLogger(log: Logger): Logger {
  return log.child({}, { level: 'info', redact: { paths: TOP_LEVEL_PATHS, censor: CENSOR } });
}

export function createLogger(level: string, dest?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'breakwater' },
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest ?? new TurnBatched(pino.destination({ dest: 1, sync: true })),
  );
}

/**
 * pino's isoTime, formatted once per millisecond: under load many lines share one, and building
 * the Date and its ISO string was a visible share of each access line. Same output.
 */
let lastMs = Number.NaN;
let lastTime = '';
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/**
 * stdout written synchronously, once per event-loop turn: the lines logged during a turn are
 * joined and written when it ends (setImmediate). Idle, a line is out at once; under load one
 * write(2) carries the lines of many requests.
 * Why not pino's async mode: on a sidecar pinned to one core every fs.write is a hand-off to a
 * libuv pool thread that then competes for that same core, and lines are rarely joined. Profiled
 * under load (share of busy CPU): async 24 %, a synchronous write per line 3 %, per turn < 1 %.
 * Lines still pending when the process exits (a crash included) are written by the exit hook.
 */
class TurnBatched implements pino.DestinationStream {
  private pending = '';
  private readonly flushPending = (): void => {
    if (this.pending === '') return;
    const text = this.pending;
    this.pending = '';
    this.out.write(text);
  };

  constructor(private readonly out: pino.DestinationStream & { flush(cb?: (err?: Error) => void): void; flushSync(): void }) {
    pendingAtExit.add(this.flushPending);
  }

  write(line: string): void {
    if (this.pending === '') setImmediate(this.flushPending);
    this.pending += line;
  }

  /** pino's logger.flush() lands here (graceful shutdown). */
  flush(cb?: (err?: Error) => void): void {
    this.flushPending();
    this.out.flush(cb);
  }

  flushSync(): void {
    this.flushPending();
    this.out.flushSync();
  }
}

const pendingAtExit = new Set<() => void>();
process.once('exit', () => {
  for (const flush of pendingAtExit) flush();
});
