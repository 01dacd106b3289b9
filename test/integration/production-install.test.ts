// A production install runs. "pack" installs the npm tarball into an empty project (so the
// package's "files" list must be complete) and starts it on its default policy. "image" carries
// out the Dockerfile without Docker: the build stage from the build context as .dockerignore
// leaves it, the runtime stage (lockfile, --omit=dev --ignore-scripts, compiled output only),
// then the final stage's ENTRYPOINT + CMD and its HEALTHCHECK command.
// Both probe the proxy in stub mode and stop it with SIGTERM.
import { describe, expect, it } from 'vitest';
import { checkInstall, formatReport } from '../../scripts/check-install.mjs';

const STEPS = {
  pack: ['build', 'pack', 'install', 'healthz', 'readyz', 'metrics', 'stub request', 'sigterm'],
  image: ['stage build', 'stage runtime', 'production tree', 'healthz', 'HEALTHCHECK', 'readyz', 'metrics', 'stub request', 'sigterm'],
};

async function expectInstallRuns(mode: 'pack' | 'image') {
  const result = await checkInstall({ mode });
  const report = formatReport([result]);
  expect(
    result.steps.filter((s) => !s.ok),
    report,
  ).toEqual([]);
  expect(
    result.steps.map((s) => s.name),
    report,
  ).toEqual(STEPS[mode]);
  expect(result.ok, report).toBe(true);
}

describe('production install', () => {
  it('pack: the npm tarball installs without dev dependencies, serves, and exits 0 on SIGTERM', () => expectInstallRuns('pack'), 120_000);

  // Two installs (the build stage's includes the dev dependencies) and a tsc run: allow more on a
  // loaded two-core CI machine.
  it('image: the Dockerfile builds, its HEALTHCHECK passes, and it exits 0 on SIGTERM', () => expectInstallRuns('image'), 180_000);
});
