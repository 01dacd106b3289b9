// pino JSON logs. Secrets are kept out twice: the code never passes credential values to the
// logger, and the redaction list censors the usual places anyway, in case a future line does.
import pino, { type Logger } from 'pino';

export const REDACT_PATHS = [
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization',
  'password', '*.password', 'token', '*.token', 'apiKey', '*.apiKey', 'redisUrl', '*.redisUrl',
  'cookie', '*.cookie',
];

export type Log = Logger;

export function createLogger(level: string, dest?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'breakwater' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Asynchronous writes: lines logged while a write is in flight are joined into the next one,
    // so under load the access log costs far less than a syscall per request, and when idle
    // each line is out at once.
    dest ?? pino.destination({ dest: 1, sync: false }),
  );
}
