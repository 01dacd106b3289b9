// The upstream-429 holds by key: bounded in keys, swept a few entries per write so no call
// walks the whole table.
import { MapCursor } from './map-cursor.js';

export interface HoldEntry {
  /** Clock time the hold ends. */
  until: number;
  /** Holds in a row for this key, for the doubling back-off when the upstream names no wait. */
  strikes: number;
}

export class HoldTable {
  readonly entries = new Map<string, HoldEntry>();
  private readonly cursor = new MapCursor(this.entries);
  constructor(private readonly maxKeys: number) {}

  active(now: number): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.until > now) n++;
    return n;
  }

  get(key: string): HoldEntry | undefined {
    return this.entries.get(key);
  }

  set(key: string, e: HoldEntry, now: number): void {
    this.entries.set(key, e);
    // Bounded work per call: drop expired holds at the cursor, then any while over the cap.
    for (let i = 0; i < 16; i++) {
      const c = this.cursor.next();
      if (c === undefined) return;
      const over = this.entries.size > this.maxKeys;
      if (c[0] !== key && (over || c[1].until <= now)) this.entries.delete(c[0]);
      else if (!over && i >= 1) return;
    }
  }
}
