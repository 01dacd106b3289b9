import { describe, expect, it } from 'vitest';
import { freshness, parseCacheControl, requestBypasses, usability } from '../../../src/cache/freshness.js';
import { manualClock } from '../../../src/resilience/clock.js';

const TTL = 60_000;

describe('freshness (RFC 9111, private per credential)', () => {
  const rows: {
    desc: string;
    status: number;
    headers: Record<string, string>;
    stale?: number;
    want: { lifetimeMs: number; initialAgeMs: number; staleIfErrorMs: number } | undefined;
  }[] = [
    { desc: 'no Cache-Control: the policy TTL', status: 200, headers: {}, want: { lifetimeMs: TTL, initialAgeMs: 0, staleIfErrorMs: 0 } },
    {
      desc: 'max-age overrides the TTL',
      status: 200,
      headers: { 'cache-control': 'max-age=5' },
      want: { lifetimeMs: 5000, initialAgeMs: 0, staleIfErrorMs: 0 },
    },
    {
      desc: 's-maxage wins over max-age',
      status: 200,
      headers: { 'cache-control': 'max-age=5, s-maxage=9' },
      want: { lifetimeMs: 9000, initialAgeMs: 0, staleIfErrorMs: 0 },
    },
    {
      desc: 'private is storable here (the key holds the credential)',
      status: 200,
      headers: { 'cache-control': 'private' },
      want: { lifetimeMs: TTL, initialAgeMs: 0, staleIfErrorMs: 0 },
    },
    { desc: 'no-store is never stored', status: 200, headers: { 'cache-control': 'no-store' }, want: undefined },
    { desc: 'no-cache is not stored (no revalidation)', status: 200, headers: { 'cache-control': 'no-cache' }, want: undefined },
    {
      desc: 'Age counts against the lifetime',
      status: 200,
      headers: { 'cache-control': 'max-age=10', age: '4' },
      want: { lifetimeMs: 10000, initialAgeMs: 4000, staleIfErrorMs: 0 },
    },
    { desc: 'already older than its lifetime: not stored', status: 200, headers: { 'cache-control': 'max-age=10', age: '11' }, want: undefined },
    { desc: '404 is stored', status: 404, headers: {}, want: { lifetimeMs: TTL, initialAgeMs: 0, staleIfErrorMs: 0 } },
    { desc: '500 is not stored', status: 500, headers: {}, want: undefined },
    { desc: '401 is not stored', status: 401, headers: {}, want: undefined },
    { desc: '206 is not stored', status: 206, headers: {}, want: undefined },
    { desc: 'Vary: * is never stored', status: 200, headers: { vary: 'Accept, *' }, want: undefined },
    { desc: 'stale-if-error allowance kept', status: 200, headers: {}, stale: 3000, want: { lifetimeMs: TTL, initialAgeMs: 0, staleIfErrorMs: 3000 } },
    {
      desc: 'must-revalidate cancels the stale allowance',
      status: 200,
      headers: { 'cache-control': 'max-age=1, must-revalidate' },
      stale: 3000,
      want: { lifetimeMs: 1000, initialAgeMs: 0, staleIfErrorMs: 0 },
    },
  ];
  for (const r of rows) {
    it(r.desc, () => {
      expect(freshness(r.status, r.headers, TTL, r.stale ?? 0)).toEqual(r.want);
    });
  }

  it('moves from fresh to stale-if-error to expired on the clock, counting Age', () => {
    const clock = manualClock(1000);
    const f = freshness(200, { 'cache-control': 'max-age=10', age: '2' }, TTL, 5000)!;
    const storedAt = clock();
    expect(usability(f, storedAt, clock())).toBe('fresh');
    clock.advance(7999);
    expect(usability(f, storedAt, clock())).toBe('fresh');
    clock.advance(1);
    expect(usability(f, storedAt, clock())).toBe('stale-if-error');
    clock.advance(4999);
    expect(usability(f, storedAt, clock())).toBe('stale-if-error');
    clock.advance(1);
    expect(usability(f, storedAt, clock())).toBe('expired');
  });

  it('parses directives case-insensitively, first one wins, quotes removed', () => {
    const cc = parseCacheControl(['Max-Age="30", no-transform', 'max-age=5']);
    expect(cc.get('max-age')).toBe('30');
    expect(cc.has('no-transform')).toBe(true);
  });

  it('request no-cache / no-store / max-age=0 / Pragma bypass the cache', () => {
    expect(requestBypasses('no-cache', undefined)).toBe(true);
    expect(requestBypasses('no-store', undefined)).toBe(true);
    expect(requestBypasses('max-age=0', undefined)).toBe(true);
    expect(requestBypasses(undefined, 'no-cache')).toBe(true);
    expect(requestBypasses('max-stale', undefined)).toBe(false);
    expect(requestBypasses(undefined, undefined)).toBe(false);
  });
});
