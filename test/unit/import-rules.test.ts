// The layering rules of src/ (ADR 0001), checked on the real import graph, and shown able to fail.
import { describe, expect, it } from 'vitest';
import { importGraph, violations } from '../../scripts/check-imports.mjs';

describe('import rules', () => {
  it('hold in src/: no stage imports another, config imports no stage, stores no telemetry, no cycles', () => {
    const graph = importGraph();
    expect(graph.size).toBeGreaterThan(40);
    expect(graph.get('stages/forward.ts')).toContain('errors.ts');
    expect(violations(graph)).toEqual([]);
  });

  it.each([
    ['stages/a.ts', 'stages/b.ts', /no stage imports another/],
    ['policy/load.ts', 'stages/stub.ts', /config imports no stages/],
    ['store/redis.ts', 'metrics.ts', /stores import no telemetry/],
    ['resilience/clock.ts', 'pipeline/exchange.ts', /resilience cores import only each other/],
  ])('%s importing %s is reported', (from, to, rule) => {
    const v = violations(
      new Map([
        [from, [to]],
        [to, []],
      ]),
    );
    expect(v).toHaveLength(1);
    expect(v[0]).toMatch(rule);
  });

  it('reports a cycle', () => {
    const v = violations(
      new Map([
        ['a.ts', ['b.ts']],
        ['b.ts', ['c.ts']],
        ['c.ts', ['a.ts']],
      ]),
    );
    expect(v).toEqual(['import cycle: a.ts -> b.ts -> c.ts -> a.ts']);
  });
});
