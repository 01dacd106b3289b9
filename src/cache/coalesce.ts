// Request collapsing (nginx proxy_cache_lock, Varnish's waiting list): the first miss for a key
// goes upstream; identical requests arriving meanwhile wait for its outcome instead of each
// paying for a lookup. Waiters are bounded; past the bound a request goes upstream itself.
// The outcome is an entry to answer from, or undefined when the leader got nothing storable
// (a failure, a 5xx, a no-store): waiters then go upstream themselves, so an error is never
// fanned out to them.
import type { CacheEntry } from './memory-store.js';

export type Join =
  | { readonly role: 'leader'; settle(entry: CacheEntry | undefined): void }
  | { readonly role: 'follower'; readonly outcome: Promise<CacheEntry | undefined> }
  | { readonly role: 'alone' };

interface Flight {
  waiters: number;
  readonly outcome: Promise<CacheEntry | undefined>;
  resolve(e: CacheEntry | undefined): void;
}

export class Coalescer {
  private readonly flights = new Map<string, Flight>();

  constructor(private readonly maxWaiters: number) {}

  get inFlight(): number {
    return this.flights.size;
  }

  join(key: string): Join {
    const f = this.flights.get(key);
    if (f !== undefined) {
      if (f.waiters >= this.maxWaiters) return { role: 'alone' };
      f.waiters++;
      return { role: 'follower', outcome: f.outcome };
    }
    let resolve!: (e: CacheEntry | undefined) => void;
    const outcome = new Promise<CacheEntry | undefined>((r) => (resolve = r));
    const flight: Flight = { waiters: 0, outcome, resolve };
    this.flights.set(key, flight);
    let settled = false;
    return {
      role: 'leader',
      settle: (entry) => {
        if (settled) return;
        settled = true;
        if (this.flights.get(key) === flight) this.flights.delete(key);
        resolve(entry);
      },
    };
  }
}
