// `npm run check:sdk` under `npm test`: every README TypeScript snippet compiles with tsc --strict
// against the pinned SDKs' types, and their behaviour holds against a running Breakwater (spawned
// from dist/: run `npm run build` first) and a fake upstream on free ports.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

describe('README SDK snippets', () => {
  it('compile with tsc --strict and run against Breakwater', () => {
    const r = spawnSync(process.execPath, ['scripts/check-sdk-snippets.mjs'], { cwd: ROOT, encoding: 'utf8', timeout: 90_000 });
    expect(r.stdout).toMatch(/^ok {3}README: \d+ TypeScript snippets compile with tsc --strict/m);
    expect(r.stdout).not.toMatch(/^FAIL/m);
    expect(r.stdout).toContain('sdk snippets: all hold');
    expect(r.status).toBe(0);
  }, 100_000);
});
