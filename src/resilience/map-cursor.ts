// A cursor that walks a Map in insertion order and survives across calls. Evicting by starting
// a fresh `for…of` at the head each time is quadratic in V8: deleted entries stay as holes at
// the front of the table until it is rehashed, and every new iteration walks them again. A
// cursor passes each hole once, so eviction stays O(1) amortised however full the map is.
export class MapCursor<K, V> {
  private it: Iterator<[K, V]> | undefined;

  constructor(private readonly map: Map<K, V>) {}

  /** The next entry after the cursor, wrapping to the start once per call at most. */
  next(): [K, V] | undefined {
    for (let pass = 0; pass < 2; pass++) {
      this.it ??= this.map.entries();
      const r = this.it.next();
      if (!r.done) return r.value;
      this.it = undefined;
    }
    return undefined;
  }
}
