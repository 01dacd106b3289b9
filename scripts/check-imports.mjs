#!/usr/bin/env node
// The layering rules of src/ (ADR 0001), checked from the import statements themselves so a
// violation fails `npm test` the day it is written:
//   - a stage never imports another stage: stages meet only in the stage list;
//   - the policy layer (config) imports no stage, pipeline or store;
//   - stores import no telemetry: they report through callbacks, as stages do;
//   - resilience cores import only each other (pure state machines, injected clock);
//   - no import cycles anywhere in src/.
// Type-only imports count: a type dependency is still a dependency of the design.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const IMPORT = /^\s*(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]|^\s*import\s+['"](\.[^'"]+)['"]/gm;
const TELEMETRY = ['metrics.ts', 'metric-types.ts', 'log.ts', 'access-log.ts'];

function walk(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

export function importGraph() {
  const graph = new Map();
  for (const file of walk(src)) {
    const text = readFileSync(file, 'utf8');
    const deps = [];
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2];
      deps.push(relative(src, resolve(dirname(file), spec.replace(/\.js$/, '.ts'))));
    }
    graph.set(relative(src, file), deps);
  }
  return graph;
}

export function violations(graph = importGraph()) {
  const out = [];
  const area = (f) => (f.includes('/') ? f.split('/')[0] : '');
  for (const [from, deps] of graph) {
    for (const to of deps) {
      if (area(from) === 'stages' && area(to) === 'stages') out.push(`${from} imports ${to}: no stage imports another`);
      if (area(from) === 'policy' && ['stages', 'pipeline', 'store'].includes(area(to))) out.push(`${from} imports ${to}: config imports no ${area(to)}`);
      if (area(from) === 'store' && TELEMETRY.includes(to)) out.push(`${from} imports ${to}: stores import no telemetry`);
      if (area(from) === 'resilience' && area(to) !== 'resilience') out.push(`${from} imports ${to}: resilience cores import only each other`);
    }
  }
  // Cycles, by depth-first search with a colour per file.
  const colour = new Map();
  const stack = [];
  const visit = (f) => {
    colour.set(f, 1);
    stack.push(f);
    for (const d of graph.get(f) ?? []) {
      if (!graph.has(d)) continue;
      if (colour.get(d) === 1) out.push(`import cycle: ${[...stack.slice(stack.indexOf(d)), d].join(' -> ')}`);
      else if (!colour.has(d)) visit(d);
    }
    stack.pop();
    colour.set(f, 2);
  };
  for (const f of graph.keys()) if (!colour.has(f)) visit(f);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const v = violations();
  for (const line of v) console.error(line);
  console.log(v.length === 0 ? 'imports: all rules hold' : `imports: ${v.length} violation(s)`);
  process.exitCode = v.length === 0 ? 0 : 1;
}
