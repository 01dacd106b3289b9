// Property tests for the route trie (issue 8): arbitrary paths never throw, and a path built
// from a route's pattern always matches that route.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { routeSchema } from '../../../src/policy/schema.js';
import { RouteTable } from '../../../src/routing/route-table.js';

const RUNS = 500;

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const method = fc.constantFrom(...METHODS);
/** Literal segment text: what route patterns in a policy contain (no `*`, `{`, `}`, `/`). */
const literal = fc.stringMatching(/^[A-Za-z0-9._~-]{1,12}$/);
/** What a client may put in one path segment, including escapes and odd characters. */
const segmentValue = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9._~%+-]{1,12}$/),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }).filter((s) => !s.includes('/')),
);
const paramName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/);

/** One pattern segment and a generator of path segments it must match. */
type Seg = { kind: 'literal'; text: string } | { kind: 'star' } | { kind: 'param'; name: string; prefix: string; suffix: string };

const seg: fc.Arbitrary<Seg> = fc.oneof(
  literal.map((text) => ({ kind: 'literal', text }) as const),
  fc.constant({ kind: 'star' } as const),
  fc
    .record({ name: paramName, prefix: fc.constantFrom('', 'AC', 'x-'), suffix: fc.constantFrom('', '.json', '.xml') })
    .map((p) => ({ kind: 'param', ...p }) as const),
);

const route = fc
  .record({
    method: fc.option(method, { nil: undefined }),
    segs: fc.array(seg, { minLength: 1, maxLength: 6 }),
    rest: fc.boolean(),
  })
  // Param names are unique within a route (the params assertion needs it).
  .map((r) => ({ ...r, segs: r.segs.map((s, i) => (s.kind === 'param' ? { ...s, name: `${s.name}${i}` } : s)) }));
type Route = typeof route extends fc.Arbitrary<infer R> ? R : never;

function patternOf(r: Route): string {
  const parts = r.segs.map((s) => {
    if (s.kind === 'literal') return s.text;
    if (s.kind === 'star') return '*';
    return `${s.prefix}{${s.name}}${s.suffix}`;
  });
  const path = `/${parts.join('/')}${r.rest ? '/**' : ''}`;
  return r.method ? `${r.method} ${path}` : path;
}

/** A concrete path the route must match, and the params it must yield. */
const pathFor = (r: Route) =>
  fc.tuple(fc.array(segmentValue, { minLength: r.segs.length, maxLength: r.segs.length }), fc.array(segmentValue, { maxLength: 3 })).map(([values, tail]) => {
    const params: Record<string, string> = {};
    const parts = r.segs.map((s, i) => {
      const v = values[i]!;
      if (s.kind === 'literal') return s.text;
      if (s.kind === 'star') return v;
      params[s.name] = safeDecode(v);
      return `${s.prefix}${v}${s.suffix}`;
    });
    const path = `/${parts.join('/')}${r.rest && tail.length > 0 ? `/${tail.join('/')}` : ''}`;
    return { path, params };
  });

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

describe('RouteTable fuzz', () => {
  it('never throws on arbitrary methods and paths', () => {
    const t = new RouteTable<string>();
    for (const p of ['GET /2010-04-01/Accounts/*/Messages.json', '/2010-04-01/Accounts/**', 'GET /call/{id}', '/files/*.json', 'POST /a/{x}-{y}/**'])
      t.add(p, p);
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 200 }), (m, tail) => {
        const r = t.match(m, `/${tail}`);
        expect(r === undefined || typeof r.value === 'string').toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('a route added always matches a path generated from it, with its params', () => {
    fc.assert(
      fc.property(
        route.chain((r) => fc.tuple(fc.constant(r), pathFor(r), method)),
        ([r, { path, params }, m]) => {
          const t = new RouteTable<string>();
          const pattern = patternOf(r);
          t.add(pattern, pattern);
          const hit = t.match(r.method ?? m, path);
          expect(hit?.value, `${pattern} vs ${path}`).toBe(pattern);
          // With at most one param per segment the split is unambiguous.
          expect(hit!.params).toEqual(params);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('every generated pattern is one the policy schema accepts', () => {
    fc.assert(
      fc.property(route, (r) => {
        expect(routeSchema.shape.match.safeParse(patternOf(r)).success, patternOf(r)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('among many routes, a path generated from one of them matches some route', () => {
    fc.assert(
      fc.property(
        fc
          .array(route, { minLength: 1, maxLength: 20 })
          .chain((rs) => fc.tuple(fc.constant(rs), fc.nat({ max: rs.length - 1 })))
          .chain(([rs, i]) => fc.tuple(fc.constant(rs), fc.constant(rs[i]!), pathFor(rs[i]!), method)),
        ([rs, r, { path }, m]) => {
          const t = new RouteTable<string>();
          for (const x of rs) t.add(patternOf(x), 'x');
          expect(t.match(r.method ?? m, path)).toBeDefined();
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('a route bound to one method never matches another', () => {
    fc.assert(
      fc.property(
        route.chain((r) => fc.tuple(fc.constant(r), pathFor(r), method, method)),
        ([r, { path }, m1, m2]) => {
          fc.pre(m1 !== m2);
          const t = new RouteTable<string>();
          const pattern = patternOf({ ...r, method: m1 });
          t.add(pattern, pattern);
          expect(t.match(m2, path)).toBeUndefined();
        },
      ),
      { numRuns: RUNS },
    );
  });
});
