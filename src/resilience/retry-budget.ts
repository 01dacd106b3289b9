// A retry budget (Finagle/linkerd): retries may be at most `ratio` of the requests seen over a
// sliding window, plus a small floor per second so a quiet upstream can still be retried.
// It is what keeps retries from multiplying the load on an upstream that is already down.
import type { Clock } from './clock.js';

const SLOTS = 10;
const SLOT_MS = 1000;

export class RetryBudget {
  private readonly requests = new Float64Array(SLOTS);
  private readonly retries = new Float64Array(SLOTS);
  private slotStart = 0;
  private slot = 0;

  constructor(
    private readonly ratio: number,
    private readonly minPerSecond: number,
    private readonly clock: Clock,
  ) {
    this.slotStart = clock();
  }

  recordRequest(): void {
    this.advance();
    this.requests[this.slot]! += 1;
  }

  /** Spends one retry if the budget allows it. */
  tryRetry(): boolean {
    if (!this.canRetry()) return false;
    this.retries[this.slot]! += 1;
    return true;
  }

  canRetry(): boolean {
    this.advance();
    let req = 0;
    let ret = 0;
    for (let i = 0; i < SLOTS; i++) {
      req += this.requests[i]!;
      ret += this.retries[i]!;
    }
    return ret < req * this.ratio + this.minPerSecond * ((SLOTS * SLOT_MS) / 1000);
  }

  private advance(): void {
    const now = this.clock();
    let steps = Math.floor((now - this.slotStart) / SLOT_MS);
    if (steps <= 0) return;
    this.slotStart += steps * SLOT_MS;
    if (steps > SLOTS) steps = SLOTS;
    for (let i = 0; i < steps; i++) {
      this.slot = (this.slot + 1) % SLOTS;
      this.requests[this.slot] = 0;
      this.retries[this.slot] = 0;
    }
  }
}
