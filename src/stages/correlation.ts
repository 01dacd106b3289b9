// Correlation: keep a valid incoming X-Request-Id, else mint one (hono's request-id rule:
// bounded length, a safe character set, so a client cannot inject log lines or huge values).
import { randomUUID } from 'node:crypto';

const VALID = /^[A-Za-z0-9._:=+/@-]{1,128}$/;

export function isValidRequestId(v: unknown): v is string {
  return typeof v === 'string' && VALID.test(v);
}

export function requestId(incoming: string | string[] | undefined): string {
  return isValidRequestId(incoming) ? incoming : randomUUID();
}
