// The response cache: GETs on the routes the policy names are answered from a stored copy while
// it is fresh (HEAD too, from the GET's copy); identical concurrent misses wait for one upstream
// request; while the breaker is open or the upstream fails, a copy within its stale-if-error
// allowance is served instead of the error. Every cacheable answer says what happened in
// `Cache-Status` (RFC 9211). Unsafe methods invalidate the target URI for every credential.
//
// Twilio and Vapi send no Cache-Control and every request carries Authorization: a shared cache
// must not reuse those answers (RFC 9111 §3.5), which is nginx's known fault. Each key carries a
// keyed hash of the credential, so this is a private cache per credential and TTL-based reuse is
// legitimate. The stage sees each answer at its head, before any byte is written: a 304 or a
// 5xx can be replaced by the stored copy, and a forwarded answer is copied by a tap on its body.
import { freshness, requestBypasses, usability, currentAgeMs } from '../cache/freshness.js';
import { cacheKey, credentialId, headerValue, normaliseUri, varyNames } from '../cache/key.js';
import type { CacheEntry, CacheStore } from '../cache/memory-store.js';
import type { Coalescer } from '../cache/coalesce.js';
import type { CachePolicy, CacheRoutePolicy } from '../policy/schema.js';
import type { Clock } from '../resilience/clock.js';
import { RouteTable } from '../routing/route-table.js';
import type { ProxyError } from '../errors.js';
import {
  bufferedAnswer,
  clientGone,
  goneBeforeSending,
  headerObject,
  withHeaders,
  type Answer,
  type CacheResult,
  type Exchange,
  type Next,
  type Reply,
  type Stage,
} from '../pipeline/exchange.js';

export type { CacheResult } from '../pipeline/exchange.js';

export interface CacheDeps {
  clock: Clock;
  store: CacheStore;
  coalescer: Coalescer;
  /** Key for the credential hash; per process for the memory store, the fleet's for Redis (read per request). */
  secret: Buffer;
  counter(route: string, result: CacheResult): { inc(): void };
  onStale(fields: Record<string, unknown>): void;
}

interface Compiled {
  readonly policy: CacheRoutePolicy;
  readonly ttlMs: number;
  readonly staleMs: number;
  readonly keyHeaders: readonly string[];
  readonly onlyQuery: readonly (readonly [string, ReadonlySet<string>])[];
  readonly c: Record<CacheResult, { inc(): void }>;
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
// Headers of the stored copy that describe one delivery, not the resource: recomputed or dropped.
// Set-Cookie is dropped as nginx and Varnish do by default (a CDN's bot cookie is not the resource).
const NOT_STORED = new Set(['age', 'set-cookie', 'cache-status', 'x-request-id', 'content-length', 'connection', 'transfer-encoding', 'keep-alive']);
// Upstream failures a stale copy may stand in for (RFC 5861 names 500, 502, 503, 504).
const STALE_FOR = new Set(['circuit_open', 'upstream_unavailable', 'upstream_timeout', 'bulkhead_full']);
const CONDITIONAL = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range'] as const;

export function cache(upstream: string, policy: CachePolicy, deps: CacheDeps): Stage | undefined {
  if (policy.routes.length === 0) return undefined;
  const { clock, store, coalescer } = deps;
  const waitMs = policy.waitTimeout;
  const routes = new Map<string, Compiled>();
  for (const r of policy.routes) {
    routes.set(r.route, {
      policy: r,
      ttlMs: r.ttl,
      staleMs: r.staleIfError,
      keyHeaders: r.keyHeaders.map((h) => h.toLowerCase()),
      onlyQuery: Object.entries(r.onlyQuery).map(([k, v]) => [k, new Set(v)] as const),
      c: {
        hit: deps.counter(r.route, 'hit'),
        miss: deps.counter(r.route, 'miss'),
        stale: deps.counter(r.route, 'stale'),
        coalesced: deps.counter(r.route, 'coalesced'),
        bypass: deps.counter(r.route, 'bypass'),
        revalidated: deps.counter(r.route, 'revalidated'),
      },
    });
  }

  // Related URIs: unsafe-request patterns → the cached routes they invalidate.
  const byPattern = new Map<string, string[]>();
  for (const r of policy.routes) for (const p of r.invalidatedBy) byPattern.set(p, [...(byPattern.get(p) ?? []), r.route]);
  const related = new RouteTable<readonly string[]>();
  for (const [pattern, names] of byPattern) related.add(pattern, names);

  return function cacheStage(ex: Exchange, next: Next): Promise<Reply> {
    const m = ex.method;
    if (m === 'GET' || m === 'HEAD') {
      // HEAD is answered from the GET's copy, so it is cached under the GET's route.
      const r = routes.get(m === 'GET' ? ex.route : headRoute(ex));
      return r === undefined ? next(ex) : cached(ex, next, r);
    }
    return UNSAFE.has(m) ? invalidating(ex, next) : next(ex);
  };

  /** RFC 9111 §4.4: a non-error answer to an unsafe method invalidates the target URI. */
  async function invalidating(ex: Exchange, next: Next): Promise<Reply> {
    const reply = await next(ex);
    const reached = reply.kind === 'answer' ? reply.status < 400 : reply.kind === 'failed' && reply.mayHaveReachedUpstream;
    if (reached) {
      store.invalidatePath(ex.host + ex.routePath);
      const names = related.match(ex.method, ex.routePath)?.value;
      if (names !== undefined) for (const name of names) store.invalidateRoute(name);
    }
    return reply;
  }

  async function cached(ex: Exchange, next: Next, r: Compiled): Promise<Reply> {
    const h = ex.req.headers;
    if (!queryAllowed(ex.query, r.onlyQuery) || CONDITIONAL.some((n) => h[n] !== undefined)) {
      // Not a request this route caches (a fraud-signal field, a conditional or range request).
      r.c.bypass.inc();
      ex.cache = 'bypass';
      return next(ex).then((reply) => withCacheStatus(reply, 'Breakwater; fwd=bypass'));
    }
    const key = cacheKey(upstream, ex.host + normaliseUri(ex.routePath, ex.query), credentialId(deps.secret, ex.authorization), r.keyHeaders, h);
    const asked = requestBypasses(h['cache-control'], h['pragma']);
    let stale: CacheEntry | undefined;
    let validating: CacheEntry | undefined;
    let fwd = asked ? 'request' : 'miss';
    // The memory store answers synchronously; only the Redis store's lookup is awaited.
    const got = asked ? undefined : store.get(key);
    const found = got !== undefined && 'then' in got ? await got : got;
    if (found !== undefined) {
      if (!varyMatches(found, h)) fwd = 'vary-miss';
      else {
        const use = usability(found.freshness, found.storedAt, clock());
        if (use === 'fresh') {
          r.c.hit.inc();
          ex.cache = 'hit';
          return serve(ex, found, `Breakwater; hit; ttl=${ttlOf(found)}`);
        }
        if (use === 'stale-if-error') {
          stale = found;
          fwd = 'stale';
        }
        // A copy with a validator is asked about rather than fetched again (RFC 9111 §4.3).
        if (validatorsOf(found) !== undefined) {
          validating = found;
          fwd = 'stale';
        } else if (use !== 'stale-if-error') store.delete(key);
      }
    }
    if (ex.method === 'HEAD' || !policy.coalesce) return forward(ex, next, r, key, fwd, stale, undefined, validating);

    const join = coalescer.join(key);
    if (join.role === 'follower') {
      const entry = await within(join.outcome, waitMs);
      if (entry !== undefined && varyMatches(entry, h)) {
        r.c.coalesced.inc();
        ex.cache = 'coalesced';
        return serve(ex, entry, `Breakwater; fwd=${fwd}; collapsed; ttl=${ttlOf(entry)}`);
      }
      // Nothing storable came of the leader's request (or it took too long): go upstream alone.
      return forward(ex, next, r, key, fwd, stale, undefined, validating);
    }
    return forward(ex, next, r, key, fwd, stale, join.role === 'leader' ? join.settle : undefined, validating);
  }

  async function forward(
    ex: Exchange,
    next: Next,
    r: Compiled,
    key: string,
    fwd: string,
    stale: CacheEntry | undefined,
    settle: ((e: CacheEntry | undefined) => void) | undefined,
    validating?: CacheEntry,
  ): Promise<Reply> {
    const status = `Breakwater; fwd=${fwd}`;
    if (validating !== undefined) ex.revalidate = validatorsOf(validating);
    let settled = false;
    const done = (e: CacheEntry | undefined): void => {
      if (settled) return;
      settled = true;
      settle?.(e);
    };
    try {
      const reply = await next(ex);
      // The 304 is the cache's to read: the app asked for the resource, not a conditional.
      if (validating !== undefined && reply.kind === 'answer' && reply.status === 304 && reply.source === 'forwarded') {
        reply.body.discard();
        const entry = refreshed(validating, headerObject(reply), r);
        if (entry !== undefined && store.set(key, entry)) {
          r.c.revalidated.inc();
          ex.cache = 'revalidated';
          done(entry);
          return serve(ex, entry, `Breakwater; fwd=stale; fwd-status=304; ttl=${ttlOf(entry)}`);
        }
        // Not storable any more (no-store on the 304): the app still gets the copy it asked for, once.
        store.delete(key);
        done(undefined);
        return serve(ex, validating, 'Breakwater; fwd=stale; fwd-status=304; detail=not-stored');
      }
      // The upstream failed and a copy may stand in for its answer (RFC 5861): a 5xx is dropped
      // before any of it reaches the app.
      if (stale !== undefined && upstreamFailed(reply)) {
        if (reply.kind === 'answer') reply.body.discard();
        r.c.stale.inc();
        ex.cache = 'stale';
        const fwdStatus = reply.kind === 'answer' ? `; fwd-status=${reply.status}` : '';
        const why = reply.kind === 'answer' ? `status ${reply.status}` : reply.kind === 'failed' ? reply.error.code : reply.code;
        deps.onStale({
          reqId: ex.requestId,
          upstream,
          route: ex.route,
          cause: why,
          ageSeconds: Math.floor(currentAgeMs(stale.freshness, stale.storedAt, clock()) / 1000),
        });
        done(undefined);
        return serve(ex, stale, `Breakwater; fwd=stale${fwdStatus}; ttl=${ttlOf(stale)}; detail=stale-if-error`);
      }
      r.c.miss.inc();
      ex.cache = 'miss';
      if (reply.kind === 'answer' && reply.source === 'forwarded' && ex.method === 'GET') store_(ex, reply, r, key, done);
      else done(undefined);
      return withCacheStatus(reply, status);
    } catch (err) {
      done(undefined);
      throw err;
    }
  }

  /** Copies a forwarded answer as its body passes; stores it (and hands it to waiters) once whole. */
  function store_(ex: Exchange, reply: Answer, r: Compiled, key: string, done: (e: CacheEntry | undefined) => void): void {
    const headers = headerObject(reply);
    const f = freshness(reply.status, headers, r.ttlMs, r.staleMs);
    if (f === undefined) {
      done(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    let overflow = false;
    const max = r.policy.maxEntryBytes;
    reply.body.tap({
      data(chunk) {
        if (overflow) return;
        if (bytes + chunk.length > max) overflow = true;
        else {
          chunks.push(chunk);
          bytes += chunk.length;
        }
      },
      end(how) {
        if (overflow || how !== 'complete') {
          done(undefined);
          return;
        }
        const kept: Record<string, string | string[]> = {};
        for (const k in headers) if (!NOT_STORED.has(k)) kept[k] = headers[k]!;
        const h = ex.req.headers;
        const entry: CacheEntry = {
          status: reply.status,
          headers: kept,
          body: Buffer.concat(chunks, bytes),
          freshness: f,
          storedAt: clock(),
          vary: varyNames(headers['vary']).map((n) => [n, headerValue(h, n)] as const),
          path: ex.host + ex.routePath,
          route: r.policy.route,
        };
        done(store.set(key, entry) ? entry : undefined);
      },
    });
  }

  /** A stored copy brought up to date by a 304: its headers updated from the 304's, fresh again (RFC 9111 §4.3.4). */
  function refreshed(old: CacheEntry, fresh: Readonly<Record<string, string | string[]>>, r: Compiled): CacheEntry | undefined {
    const headers: Record<string, string | string[]> = { ...old.headers };
    for (const k in fresh) if (!NOT_STORED.has(k) && k !== 'content-type') headers[k] = fresh[k]!;
    const f = freshness(old.status, headers, r.ttlMs, r.staleMs);
    if (f === undefined) return undefined;
    return { ...old, headers, freshness: f, storedAt: clock() };
  }

  function ttlOf(e: CacheEntry): number {
    return Math.floor((e.freshness.lifetimeMs - currentAgeMs(e.freshness, e.storedAt, clock())) / 1000);
  }

  function serve(ex: Exchange, e: CacheEntry, status: string): Reply {
    if (clientGone(ex)) return goneBeforeSending(ex, 'the cached answer');
    const age = Math.floor(currentAgeMs(e.freshness, e.storedAt, clock()) / 1000);
    return bufferedAnswer(e.status, e.headers, e.body, 'cached', ['age', String(age), 'cache-status', status]);
  }
}

/** The reply with this request's Cache-Status: every cacheable answer says what the cache did (RFC 9211). */
function withCacheStatus(reply: Reply, status: string): Reply {
  switch (reply.kind) {
    case 'answer':
      return withHeaders(reply, ['cache-status', status]);
    case 'failed':
      return { ...reply, error: withErrorHeader(reply.error, status) };
    default:
      return withErrorHeader(reply, status);
  }
}

function withErrorHeader(err: ProxyError, status: string): ProxyError {
  return { ...err, headers: { ...err.headers, 'cache-status': status } };
}

/** The validators a stored copy can be revalidated with, if it has any. */
function validatorsOf(e: CacheEntry): { etag: string | undefined; lastModified: string | undefined } | undefined {
  const etag = e.headers['etag'];
  const lastModified = e.headers['last-modified'];
  if (etag === undefined && lastModified === undefined) return undefined;
  return { etag: etag === undefined ? undefined : String(etag), lastModified: lastModified === undefined ? undefined : String(lastModified) };
}

function headRoute(ex: Exchange): string {
  const m = ex.upstream?.routes.match('GET', ex.routePath);
  return m === undefined ? ex.route : m.value;
}

function varyMatches(e: CacheEntry, h: Readonly<Record<string, string | string[] | undefined>>): boolean {
  for (const [name, value] of e.vary) if (headerValue(h, name) !== value) return false;
  return true;
}

function upstreamFailed(reply: Reply): boolean {
  switch (reply.kind) {
    case 'error':
      return STALE_FOR.has(reply.code);
    case 'failed':
      return reply.cause !== 'client';
    case 'answer':
      return reply.source === 'forwarded' && reply.status >= 500;
  }
}

/** Every listed parameter's comma-separated values are within its allowed set (absent passes). */
function queryAllowed(query: string, only: Compiled['onlyQuery']): boolean {
  if (only.length === 0) return true;
  const params = new URLSearchParams(query);
  for (const [name, allowed] of only) {
    for (const v of params.getAll(name)) {
      for (const part of v.split(',')) if (!allowed.has(part.trim())) return false;
    }
  }
  return true;
}

function within<T>(p: Promise<T | undefined>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(undefined), ms);
    void p.then((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}
