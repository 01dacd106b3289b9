// Freshness per RFC 9111 for a cache that is private to one credential (every key carries the
// credential's keyed hash, §3.5), so responses to requests with Authorization are storable and
// `private` does not forbid storing. Pure: times are milliseconds on an injected clock.

/** Directives of a Cache-Control field value; names lower-cased, values unquoted. */
export function parseCacheControl(value: string | string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (value === undefined) return out;
  for (const part of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (name === '') continue;
    // §4.2.1: the first occurrence of a duplicated directive wins.
    if (!out.has(name))
      out.set(
        name,
        eq < 0
          ? ''
          : part
              .slice(eq + 1)
              .trim()
              .replace(/^"(.*)"$/, '$1'),
      );
  }
  return out;
}

function deltaSeconds(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  return Math.min(Number(v), 2 ** 31); // §1.2.2: overflow is "infinity", capped
}

export interface Freshness {
  /** Freshness lifetime in ms. */
  readonly lifetimeMs: number;
  /** Age the response already had when received (Age header), in ms. */
  readonly initialAgeMs: number;
  /** How long past its lifetime it may still be served when the upstream fails, in ms. */
  readonly staleIfErrorMs: number;
}

/**
 * Whether a final response may be stored and for how long. `ttlMs` is the policy's lifetime,
 * used when the upstream says nothing (Twilio and Vapi send no Cache-Control).
 */
export function freshness(status: number, headers: Readonly<Record<string, string | string[]>>, ttlMs: number, staleIfErrorMs: number): Freshness | undefined {
  // Only answers that say something lasting about the resource: 2xx and 404.
  if (!((status >= 200 && status < 300 && status !== 206) || status === 404)) return undefined;
  const vary = headers['vary'];
  if (
    vary !== undefined &&
    String(vary)
      .split(',')
      .some((v) => v.trim() === '*')
  )
    return undefined;
  const cc = parseCacheControl(headers['cache-control']);
  // no-cache would need a revalidation on every use; without it stored copies are useless.
  if (cc.has('no-store') || cc.has('no-cache')) return undefined;
  // A shared fleet store makes the cache shared among replicas of one credential: s-maxage first.
  const explicit = deltaSeconds(cc.get('s-maxage')) ?? deltaSeconds(cc.get('max-age'));
  const lifetimeMs = explicit !== undefined ? explicit * 1000 : ttlMs;
  const initialAgeMs = (deltaSeconds(firstValue(headers['age'])) ?? 0) * 1000;
  if (lifetimeMs - initialAgeMs <= 0 && staleIfErrorMs <= 0) return undefined;
  // must-revalidate / proxy-revalidate forbid serving stale, on error too (§5.2.2.2).
  const stale = cc.has('must-revalidate') || cc.has('proxy-revalidate') ? 0 : staleIfErrorMs;
  return { lifetimeMs, initialAgeMs, staleIfErrorMs: stale };
}

function firstValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** §4.2.3 current age: the age it came with plus the time it has spent here. */
export function currentAgeMs(f: Freshness, storedAt: number, now: number): number {
  return f.initialAgeMs + Math.max(0, now - storedAt);
}

export type Usability = 'fresh' | 'stale-if-error' | 'expired';

export function usability(f: Freshness, storedAt: number, now: number): Usability {
  const age = currentAgeMs(f, storedAt, now);
  if (age < f.lifetimeMs) return 'fresh';
  if (age < f.lifetimeMs + f.staleIfErrorMs) return 'stale-if-error';
  return 'expired';
}

/** The request asks not to be answered from a cache (§5.2.1). */
export function requestBypasses(cacheControl: string | string[] | undefined, pragma: string | string[] | undefined): boolean {
  if (cacheControl === undefined) return pragma !== undefined && String(pragma).toLowerCase().includes('no-cache');
  const cc = parseCacheControl(cacheControl);
  return cc.has('no-cache') || cc.has('no-store') || cc.get('max-age') === '0';
}
