// Bulkhead stage: a cap on concurrent requests to one upstream, with an optional short queue.
// Twilio limits concurrency per account rather than rate, so this is the limit that matches
// the upstream's own; overflow is refused fast instead of piling up sockets.
import { proxyError } from '../errors.js';
import type { Semaphore } from '../resilience/semaphore.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';

export function bulkhead(sem: Semaphore, onRejected: () => void): Stage {
  const full = proxyError('bulkhead_full', { headers: { 'retry-after': '1' } });

  return async function bulkheadStage(ex: Exchange, next: Next): Promise<Reply> {
    if (!sem.tryAcquire()) {
      if (!sem.canQueue() || !(await sem.wait())) {
        onRejected();
        return full;
      }
    }
    try {
      return await next(ex);
    } finally {
      sem.release();
    }
  };
}
