// The upstream-429 holds by key: bounded in keys; expired holds leave as new ones are written.
import { BoundedMap } from './bounded-map.js';

export interface HoldEntry {
  /** Clock time the hold ends. */
  until: number;
  /** Holds in a row for this key, for the doubling back-off when the upstream names no wait. */
  strikes: number;
}

export class HoldTable {
  private readonly table: BoundedMap<string, HoldEntry>;

  constructor(maxKeys: number) {
    this.table = new BoundedMap({ maxEntries: maxKeys, expired: (e, now) => e.until <= now });
  }

  get size(): number {
    return this.table.size;
  }

  values(): IterableIterator<HoldEntry> {
    return this.table.values();
  }

  active(now: number): number {
    let n = 0;
    for (const e of this.table.values()) if (e.until > now) n++;
    return n;
  }

  get(key: string): HoldEntry | undefined {
    return this.table.get(key);
  }

  set(key: string, e: HoldEntry, now: number): void {
    this.table.set(key, e, now);
  }

  delete(key: string): void {
    this.table.delete(key);
  }
}
