// Equivalent spellings of a path match the same route (RFC 3986 §6.2.2 and the empty-segment and
// trailing-slash forms servers read as the same resource), so a route-scoped limit cannot be
// skipped by respelling the path.
import { describe, expect, it } from 'vitest';
import { normalisePath, RouteTable } from '../../../src/routing/route-table.js';

describe('route matching sees one spelling of a path', () => {
  const t = new RouteTable<string>();
  t.add('POST /2010-04-01/Accounts/*/Messages.json', 'messages.create');
  t.add('GET /call/{id}', 'call');
  it.each([
    '/2010-04-01/Accounts/AC1/Messages.json',
    '/2010-04-01/Accounts/AC1/%4Dessages.json',
    '/2010-04-01/Accounts/AC1/%4dessages%2Ejson',
    '/2010-04-01/Accounts/AC1/Messages.json/',
    '/2010-04-01//Accounts/AC1//Messages.json',
    '/%32010-04-01/Accounts/AC1/Messages.json',
  ])('%s is messages.create', (path) => {
    expect(t.match('POST', path)?.value).toBe('messages.create');
  });

  it('escapes of reserved characters stay escaped (an encoded slash is data, not a separator)', () => {
    expect(normalisePath('/call/a%2Fb')).toBe('/call/a%2Fb');
    expect(t.match('GET', '/call/a%2Fb')?.params).toEqual({ id: 'a/b' });
    expect(normalisePath('/call/%20x%3F')).toBe('/call/%20x%3F');
  });

  it('ordinary paths are returned as they are', () => {
    const p = '/2010-04-01/Accounts/AC1/Messages.json';
    expect(normalisePath(p)).toBe(p);
    expect(normalisePath('/')).toBe('/');
  });
});

describe('malformed escapes', () => {
  it('leave their own segment as spelled, and the others are still normalised', () => {
    expect(normalisePath('/a/%%30/%4Dx')).toBe('/a/%%30/Mx');
  });
});
