// Route patterns with several globs in one segment: matched without backtracking (the regular
// expression they once compiled to froze the event loop on one long segment), with the same
// answers a regular expression gives for whether a segment matches.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { routeSchema } from '../../../src/policy/schema.js';
import { patternProblem, RouteTable } from '../../../src/routing/route-table.js';

const WORST = [
  'GET /x/*a*a*a*a*a*a*b',
  'GET /x/{p}a{q}a{r}a{s}a*b',
  'GET /x/*-*-*-*-*.json',
  'GET /x/a*a*a*a*a*a/**',
  'GET /x/{id}.json',
  'GET /x/*aaaaaaaaaaaaaaaaab*',
];

describe('route globs do not backtrack', () => {
  it('a 60 KiB segment against the worst patterns delays the event loop by less than 10 ms', async () => {
    const t = new RouteTable<string>();
    for (const p of WORST) t.add(p, p);
    const seg = `${'a'.repeat(60 * 1024 - 1)}c`; // almost matches every pattern: the worst case for a backtracking match
    // Each trial watches the loop while one request's matching runs. The machine's own noise
    // (other processes preempting this one) only adds delay, and a blocking match would show in
    // every trial: the best trial is the match's own cost.
    const maxes: number[] = [];
    let matched = 0;
    for (let trial = 0; trial < 7; trial++) {
      const h = monitorEventLoopDelay({ resolution: 1 });
      h.enable();
      await new Promise((r) => setTimeout(r, 5));
      await new Promise<void>((r) =>
        setImmediate(() => {
          if (t.match('GET', `/x/${seg}`)) matched++;
          if (t.match('GET', `/x/${seg}-${seg}`)) matched++;
          r();
        }),
      );
      await new Promise((r) => setTimeout(r, 5));
      h.disable();
      maxes.push(h.max / 1e6);
    }
    expect(matched).toBe(0);
    expect(Math.min(...maxes), `per-trial max delays (ms): ${maxes.map((m) => m.toFixed(1)).join(', ')}`).toBeLessThan(10);
  });

  it('globs separated by literals still match and capture (leftmost placement)', () => {
    const t = new RouteTable<string>();
    t.add('GET /pair/{a}-{b}', 'pair');
    t.add('GET /f/{name}.{ext}', 'file');
    expect(t.match('GET', '/pair/x-y')?.params).toEqual({ a: 'x', b: 'y' });
    expect(t.match('GET', '/pair/x-y-z')?.params).toEqual({ a: 'x', b: 'y-z' });
    expect(t.match('GET', '/pair/-y')).toBeUndefined();
    expect(t.match('GET', '/pair/x-')).toBeUndefined();
    expect(t.match('GET', '/f/a.b.c')?.params).toEqual({ name: 'a', ext: 'b.c' });
  });

  it('globs side by side are refused at load, by the schema and by the table', () => {
    for (const bad of ['GET /x/{a}{b}', '/x/*{a}.json', '/x/{a}*', '/x/a-{b}{c}-d/**']) {
      expect(routeSchema.safeParse({ name: 'r', match: bad }).success, bad).toBe(false);
    }
    expect(patternProblem('/x/{a}{b}')).toMatch(/side by side/);
    expect(() => new RouteTable<string>().add('/x/{a}{b}', 'r')).toThrow(/side by side/);
    expect(routeSchema.safeParse({ name: 'r', match: 'GET /x/{a}-{b}.json' }).success).toBe(true);
  });

  it('matches exactly what the equivalent regular expression matches', () => {
    const piece = fc.stringMatching(/^[ab.-]{1,3}$/);
    const glob = fc.constantFrom('*', '{n}');
    fc.assert(
      fc.property(
        fc.option(piece, { nil: '' }),
        fc.array(fc.tuple(glob, piece), { minLength: 1, maxLength: 4 }),
        fc.stringMatching(/^[ab.-]{0,12}$/),
        (first, rest, seg) => {
          // Names made unique; the last glob's trailing piece may be dropped.
          let pattern = first;
          let src = escape(first);
          rest.forEach(([g, lit], i) => {
            pattern += (g === '*' ? '*' : `{n${i}}`) + lit;
            src += `[^/]+${escape(lit)}`;
          });
          const t = new RouteTable<string>();
          t.add(`/x/${pattern}`, 'r');
          const expected = new RegExp(`^${src}$`).test(seg);
          expect(t.match('GET', `/x/${seg}`) !== undefined).toBe(expected);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
