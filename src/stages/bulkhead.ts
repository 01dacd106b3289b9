// Bulkhead stage: a cap on concurrent requests to one upstream, with an optional short queue.
// Twilio limits concurrency per account rather than rate, so this is the limit that matches
// the upstream's own; overflow is refused fast instead of piling up sockets.
import { proxyError } from '../errors.js';
import type { Semaphore } from '../resilience/semaphore.js';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import type { BodyTap } from '../pipeline/body.js';

export function bulkhead(sem: Semaphore, onRejected: () => void): Stage {
  const full = proxyError('bulkhead_full', { headers: { 'retry-after': '1' } });
  const release = (): void => sem.release();
  // An answer holds its slot until its body is over: streaming it is still upstream work.
  const untilEnd: BodyTap = { end: release };
  const settled = (reply: Reply): Reply => {
    if (reply.kind === 'answer') reply.body.tap(untilEnd);
    else release();
    return reply;
  };
  const refuse = (): Reply => {
    onRejected();
    return full;
  };

  /** One attempt holding a slot; the slot is given back however the attempt ends. */
  function holding(ex: Exchange, next: Next): Promise<Reply> {
    let attempt: Promise<Reply>;
    try {
      attempt = next(ex);
    } catch (err) {
      release();
      return Promise.reject(err as Error);
    }
    // A continuation rather than an async frame: this stage is on every request.
    return attempt.then(settled, (err: unknown) => {
      release();
      throw err;
    });
  }

  return function bulkheadStage(ex: Exchange, next: Next): Promise<Reply> {
    if (sem.tryAcquire()) return holding(ex, next);
    if (!sem.canQueue()) return Promise.resolve(refuse());
    return sem.wait().then((admitted) => (admitted ? holding(ex, next) : refuse()));
  };
}
