// Fleet bulkhead stage: the bulkhead's cap held across every replica (a lease per attempt in the
// shared Redis semaphore), per Twilio account, because Twilio's concurrency limit is the
// account's, not a replica's. Over the cap, a request waits in the bounded queue within
// `queueTimeout`; a 429 from the upstream (or an answer the policy names as back-pressure, Vapi's
// 400 "Over Concurrency Limit") lowers the fleet's cap for a while, and so does a
// `Twilio-Concurrent-Requests` above what the fleet holds (other callers share the account).
//
// Upstreams without an account in the path (Vapi) are capped per credential: Vapi's concurrency
// limit is its org's, and an org is what an API key names. The key is a hash, never the secret.
import { createHash } from 'node:crypto';
import { proxyError } from '../errors.js';
import type { FleetSemaphore, Lease } from '../store/redis-semaphore.js';
import { answerHeader, type Answer, type Exchange, type Next, type Reply, type Stage } from '../pipeline/exchange.js';
import { ERROR_HEAD_LIMIT } from '../upstream-errors.js';

const ACCOUNT = /\/Accounts\/(AC[0-9a-fA-F]{32}|[A-Za-z0-9]+)(?:\/|\.json|$)/;

/** An upstream answer, other than a 429, that means "too many concurrent" (holdOn429.also). */
export interface BackPressure {
  readonly status: number;
  readonly bodyIncludes: string;
}

/** A count as Twilio writes it (digits); anything else is no feedback. */
function reportedCount(v: string | string[] | undefined): number | undefined {
  if (typeof v !== 'string' || v.length === 0 || v.length > 9) return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

export function fleetBulkhead(
  sem: FleetSemaphore,
  upstream: string,
  queueTimeoutMs: number,
  onRejected: () => void,
  also: readonly BackPressure[] = [],
): Stage {
  const full = proxyError('bulkhead_full', { headers: { 'retry-after': '1' } });
  // Nearly every request carries the same credential (often the injected one): hash it once.
  let lastAuth: string | undefined;
  let lastKey = upstream;
  const accountOf = (ex: Exchange): string => {
    const account = ACCOUNT.exec(ex.routePath)?.[1];
    if (account !== undefined) return account;
    const auth = ex.authorization;
    if (auth === undefined) return upstream;
    if (auth !== lastAuth) {
      lastKey = `${upstream}:${createHash('sha256').update(auth).digest('base64url').slice(0, 16)}`;
      lastAuth = auth;
    }
    return lastKey;
  };

  const alsoStatuses = new Set(also.map((a) => a.status));

  /** Gives the lease back with what the answer reported, and lowers the cap on back-pressure. */
  function settle(lease: Lease, account: string, r: Answer, head: Buffer | undefined): void {
    lease.release(reportedCount(answerHeader(r, 'twilio-concurrent-requests')));
    const pressed = r.status === 429 || (head !== undefined && also.some((a) => a.status === r.status && head.includes(a.bodyIncludes)));
    if (pressed) void sem.lower(account);
  }

  function holding(ex: Exchange, next: Next, lease: Lease, account: string): Promise<Reply> {
    let attempt: Promise<Reply>;
    try {
      attempt = next(ex);
    } catch (err) {
      lease.release();
      return Promise.reject(err as Error);
    }
    return attempt.then(
      (r) => {
        if (r.kind !== 'answer') {
          lease.release();
          return r;
        }
        // The lease is held while the body streams; an answer the policy names as back-pressure
        // is known by the head of its body (a small error), read as it passes.
        if (!alsoStatuses.has(r.status)) r.body.tap({ end: () => settle(lease, account, r, undefined) });
        else {
          const chunks: Buffer[] = [];
          let bytes = 0;
          r.body.tap({
            data(chunk) {
              if (bytes < ERROR_HEAD_LIMIT) {
                chunks.push(chunk);
                bytes += chunk.length;
              }
            },
            end: () => settle(lease, account, r, Buffer.concat(chunks, bytes)),
          });
        }
        return r;
      },
      (err: unknown) => {
        lease.release();
        throw err;
      },
    );
  }

  return async function fleetBulkheadStage(ex: Exchange, next: Next): Promise<Reply> {
    const account = accountOf(ex);
    const lease = await sem.acquire(account, Date.now() + queueTimeoutMs);
    if (!lease) {
      onRejected();
      return full;
    }
    return holding(ex, next, lease, account);
  };
}
