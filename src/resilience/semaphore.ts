// A counting semaphore with a bounded FIFO queue and a queue timeout: the bulkhead's core.
// Timers come from an injected scheduler so tests drive the timeout by hand.

export interface Scheduler {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface Waiter {
  resolve(ok: boolean): void;
  timer: unknown;
}

export class Semaphore {
  active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(
    readonly limit: number,
    readonly queueLimit: number,
    private readonly queueTimeoutMs: number,
    private readonly scheduler: Scheduler = realScheduler,
  ) {}

  get queued(): number {
    return this.waiters.length;
  }

  /** true: a slot was taken now. false: none free; try `wait()` if the queue has room. */
  tryAcquire(): boolean {
    if (this.active < this.limit) {
      this.active++;
      return true;
    }
    return false;
  }

  canQueue(): boolean {
    return this.waiters.length < this.queueLimit;
  }

  /** Resolves true once a slot is handed over, false after the queue timeout. */
  wait(): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = { resolve, timer: undefined };
      waiter.timer = this.scheduler.set(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, this.queueTimeoutMs);
      this.waiters.push(waiter);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) {
      // The slot passes straight to the next waiter: `active` is unchanged.
      this.scheduler.clear(next.timer);
      next.resolve(true);
    } else if (this.active > 0) {
      this.active--;
    }
  }
}
