// The segment trie behind named routes, per-route limits and stubs.
import { describe, expect, it } from 'vitest';
import { parsePattern, RouteTable } from '../../../src/routing/route-table.js';

function table(routes: [pattern: string, value: string][]): RouteTable<string> {
  const t = new RouteTable<string>();
  for (const [p, v] of routes) t.add(p, v);
  return t;
}

describe('parsePattern', () => {
  const rows = [
    { desc: 'method and path', pattern: 'POST /a/b', want: { method: 'POST', segments: ['a', 'b'] } },
    { desc: 'no method means any', pattern: '/a', want: { method: '*', segments: ['a'] } },
    { desc: 'explicit any', pattern: '* /a/**', want: { method: '*', segments: ['a', '**'] } },
    { desc: 'root', pattern: 'GET /', want: { method: 'GET', segments: [''] } },
  ];
  it.each(rows)('$desc', ({ pattern, want }) => {
    expect(parsePattern(pattern)).toEqual(want);
  });
});

describe('RouteTable: precedence', () => {
  const routes: [string, string][] = [
    ['GET /2010-04-01/Accounts/*/Messages.json', 'messages.list'],
    ['POST /2010-04-01/Accounts/*/Messages.json', 'messages.create'],
    ['GET /2010-04-01/Accounts/*/Messages/*.json', 'messages.fetch'],
    ['GET /2010-04-01/Accounts/AC_SPECIAL/Messages.json', 'special.list'],
    ['/2010-04-01/Accounts/**', 'accounts'],
    ['GET /call', 'call.list'],
    ['POST /call', 'call.create'],
    ['/call', 'call.any'],
    ['GET /call/*', 'call.fetch'],
    ['/assistant/**', 'assistant'],
    ['/a/b/c', 'abc'],
    ['/a/*/d', 'a*d'],
    ['/files/*.json', 'json-file'],
    ['/files/{name}', 'any-file'],
  ];
  const t = table(routes);
  const rows: { desc: string; method: string; path: string; want: string | undefined }[] = [
    { desc: 'glob segment matches an account SID', method: 'GET', path: '/2010-04-01/Accounts/AC123/Messages.json', want: 'messages.list' },
    { desc: 'method picks between routes on one path', method: 'POST', path: '/2010-04-01/Accounts/AC123/Messages.json', want: 'messages.create' },
    { desc: 'literal beats glob', method: 'GET', path: '/2010-04-01/Accounts/AC_SPECIAL/Messages.json', want: 'special.list' },
    {
      desc: 'literal path without its method falls back to the glob route for that method',
      method: 'POST',
      path: '/2010-04-01/Accounts/AC_SPECIAL/Messages.json',
      want: 'messages.create',
    },
    { desc: 'glob within a segment (*.json)', method: 'GET', path: '/2010-04-01/Accounts/AC1/Messages/SM9.json', want: 'messages.fetch' },
    { desc: 'glob beats ** for a deeper match', method: 'GET', path: '/2010-04-01/Accounts/AC1/Messages.json', want: 'messages.list' },
    { desc: '** catches what no deeper route matches', method: 'DELETE', path: '/2010-04-01/Accounts/AC1/Messages/SM9.json', want: 'accounts' },
    { desc: '** catches other methods on a glob path', method: 'PUT', path: '/2010-04-01/Accounts/AC1/Messages.json', want: 'accounts' },
    { desc: '** matches the rest at any depth', method: 'GET', path: '/2010-04-01/Accounts/AC1/Calls/CA1/Recordings/RE1.json', want: 'accounts' },
    { desc: '** matches an empty rest', method: 'GET', path: '/2010-04-01/Accounts', want: 'accounts' },
    { desc: '** matches a trailing slash', method: 'GET', path: '/assistant/', want: 'assistant' },
    { desc: 'method-specific beats any', method: 'GET', path: '/call', want: 'call.list' },
    { desc: 'any catches other methods', method: 'DELETE', path: '/call', want: 'call.any' },
    { desc: 'one-segment glob', method: 'GET', path: '/call/123', want: 'call.fetch' },
    { desc: 'backtracks from a literal dead end to a glob', method: 'GET', path: '/a/b/d', want: 'a*d' },
    { desc: 'literal path', method: 'GET', path: '/a/b/c', want: 'abc' },
    { desc: 'suffix glob before a param when both match', method: 'GET', path: '/files/x.json', want: 'json-file' },
    { desc: 'param when the suffix glob does not match', method: 'GET', path: '/files/x.txt', want: 'any-file' },
    { desc: 'no match: unknown prefix', method: 'GET', path: '/nothing', want: undefined },
    { desc: 'no match: wrong method without an any route', method: 'DELETE', path: '/call/123', want: undefined },
    { desc: 'no match: path deeper than the pattern', method: 'GET', path: '/call/123/extra', want: undefined },
    { desc: 'no match: path shorter than the pattern', method: 'GET', path: '/a/b', want: undefined },
    { desc: 'a trailing slash is dropped before matching, so * never meets an empty segment', method: 'GET', path: '/call/', want: 'call.list' },
    { desc: '*.json needs something before .json (falls to **)', method: 'GET', path: '/2010-04-01/Accounts/AC1/Messages/.json', want: 'accounts' },
    { desc: 'a trailing slash is the same path (issue 19: it skipped route-scoped limits)', method: 'GET', path: '/a/b/c/', want: 'abc' },
    { desc: 'no match: case matters', method: 'GET', path: '/CALL', want: undefined },
    { desc: 'the dot in *.json is literal (falls to the param)', method: 'GET', path: '/files/xjson', want: 'any-file' },
  ];
  it.each(rows)('$desc: $method $path', ({ method, path, want }) => {
    expect(t.match(method, path)?.value).toBe(want);
  });

  it('the first route added for a pattern and method wins', () => {
    const t2 = table([
      ['GET /x', 'first'],
      ['GET /x', 'second'],
      ['/x', 'any-first'],
      ['* /x', 'any-second'],
    ]);
    expect(t2.match('GET', '/x')?.value).toBe('first');
    expect(t2.match('POST', '/x')?.value).toBe('any-first');
  });

  it('an empty table matches nothing', () => {
    expect(new RouteTable<string>().match('GET', '/')).toBeUndefined();
  });

  it('counts its routes', () => {
    expect(t.size).toBe(routes.length);
  });
});

describe('RouteTable: params', () => {
  const t = table([
    ['POST /2010-04-01/Accounts/{AccountSid}/Messages.json', 'create'],
    ['GET /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}.json', 'fetch'],
    ['GET /call/{id}', 'call'],
    ['GET /pair/{a}-{b}', 'pair'],
    ['GET /rest/{id}/**', 'rest'],
  ]);
  const rows: { desc: string; method: string; path: string; params: Record<string, string> }[] = [
    { desc: 'one named segment', method: 'POST', path: '/2010-04-01/Accounts/AC123/Messages.json', params: { AccountSid: 'AC123' } },
    {
      desc: 'a named segment with a suffix',
      method: 'GET',
      path: '/2010-04-01/Accounts/AC1/Messages/SM42.json',
      params: { AccountSid: 'AC1', MessageSid: 'SM42' },
    },
    { desc: 'percent-decoded', method: 'GET', path: '/call/a%20b%2Bc', params: { id: 'a b+c' } },
    { desc: 'an encoded slash stays inside the param', method: 'GET', path: '/call/a%2Fb', params: { id: 'a/b' } },
    { desc: 'malformed escapes are kept as they are', method: 'GET', path: '/call/%E0%A4%A', params: { id: '%E0%A4%A' } },
    { desc: 'unicode', method: 'GET', path: '/call/%C3%A9t%C3%A9', params: { id: 'été' } },
    { desc: 'two params in one segment', method: 'GET', path: '/pair/x-y', params: { a: 'x', b: 'y' } },
    { desc: 'params before **', method: 'GET', path: '/rest/7/a/b', params: { id: '7' } },
  ];
  it.each(rows)('$desc', ({ method, path, params }) => {
    expect(t.match(method, path)?.params).toEqual(params);
  });

  it('a route without names has empty params', () => {
    expect(table([['GET /a/*', 'x']]).match('GET', '/a/b')?.params).toEqual({});
  });

  it('params of a failed branch do not leak into the match', () => {
    const t2 = table([
      ['GET /x/{a}/y', 'named'],
      ['GET /x/*/z', 'plain'],
    ]);
    expect(t2.match('GET', '/x/1/z')).toEqual({ value: 'plain', params: {} });
  });
});

describe('RouteTable: 500 routes', () => {
  const t = new RouteTable<number>();
  for (let i = 0; i < 500; i++) {
    t.add(`GET /svc${i}/items/{id}`, i);
    t.add(`POST /svc${i}/items`, 1000 + i);
  }
  it('each route matches its own paths with its own params', () => {
    for (let i = 0; i < 500; i++) {
      expect(t.match('GET', `/svc${i}/items/x${i}`)).toEqual({ value: i, params: { id: `x${i}` } });
      expect(t.match('POST', `/svc${i}/items`)?.value).toBe(1000 + i);
    }
  });
  it('and nothing else', () => {
    expect(t.match('GET', '/svc500/items/1')).toBeUndefined();
    expect(t.match('DELETE', '/svc1/items/1')).toBeUndefined();
    expect(t.size).toBe(1000);
  });
});
