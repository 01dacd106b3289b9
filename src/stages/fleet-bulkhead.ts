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
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';

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

export function fleetBulkhead(sem: FleetSemaphore, upstream: string, queueTimeoutMs: number, onRejected: () => void, also: readonly BackPressure[] = []): Stage {
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

  function backPressure(ex: Exchange, r: Reply): boolean {
    if (r.kind !== 'sent' && r.kind !== 'held') return false;
    if (r.status === 429) return true;
    if (also.length === 0) return false;
    const body = r.kind === 'held' ? r.body : ex.errorHead;
    if (body === undefined) return false;
    return also.some((a) => a.status === r.status && body.includes(a.bodyIncludes));
  }

  function holding(ex: Exchange, next: Next, lease: Lease, account: string): Promise<Reply> {
    let attempt: Promise<Reply>;
    // Each attempt's own answer: a retry must not feed back the one before.
    ex.upstreamConcurrent = undefined;
    try {
      attempt = next(ex);
    } catch (err) {
      lease.release();
      return Promise.reject(err as Error);
    }
    attempt.then(
      (r) => {
        lease.release(reportedCount(r.kind === 'held' ? r.headers['twilio-concurrent-requests'] : ex.upstreamConcurrent));
        if (backPressure(ex, r)) void sem.lower(account);
      },
      () => lease.release(),
    );
    return attempt;
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
