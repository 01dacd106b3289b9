// Fleet bulkhead stage: the bulkhead's cap held across every replica (a lease per attempt in the
// shared Redis semaphore), per Twilio account, because Twilio's concurrency limit is the
// account's, not a replica's. Over the cap, a request waits in the bounded queue within
// `queueTimeout`; a 429 from the upstream lowers the fleet's cap for a while.
import { proxyError } from '../errors.js';
import type { FleetSemaphore, Lease } from '../store/redis-semaphore.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';

const ACCOUNT = /\/Accounts\/(AC[0-9a-fA-F]{32}|[A-Za-z0-9]+)(?:\/|\.json|$)/;

export function fleetBulkhead(sem: FleetSemaphore, upstream: string, queueTimeoutMs: number, onRejected: () => void): Stage {
  const full = proxyError('bulkhead_full', { headers: { 'retry-after': '1' } });
  const accountOf = (ex: Exchange) => ACCOUNT.exec(ex.routePath)?.[1] ?? upstream;

  function holding(ex: Exchange, next: Next, lease: Lease, account: string): Promise<Reply> {
    let attempt: Promise<Reply>;
    try {
      attempt = next(ex);
    } catch (err) {
      lease.release();
      return Promise.reject(err as Error);
    }
    attempt.then(
      (r) => {
        lease.release();
        if ((r.kind === 'sent' || r.kind === 'held') && r.status === 429) void sem.lower(account);
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
