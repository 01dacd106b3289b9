// `server.watch: true` against the real CLI: the watch must survive the ways files are really
// replaced. `sed -i` and `mv new policy.yaml` put a new inode in place; a Kubernetes ConfigMap
// update swaps the `..data` symlink the file resolves through. A watch on the file's inode went
// deaf after the first of these. Each generation of the policy names its rate limit `genN`, and
// the limit's RateLimit-Policy field (headers: always) shows which generation is serving.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { policyWith } from '../support/policy.js';
import { metricsText, metricValue, request } from '../support/proxy.js';
import { startCli, type Cli } from './spawned-cli.js';
import { waitFor } from '../support/wait.mjs';

/** The shipped policy with watch on and the Vapi limit named after generation `n`. */
const generation = (n: number) =>
  policyWith((pol) => {
    pol.server.watch = true;
    pol.upstreams.vapi.rateLimits = [{ name: `gen${n}`, rate: 100000, per: 60, key: ['client'], headers: 'always' }];
  });

/** Well inside the watcher's 5 s safety poll: a pass here is the directory watch's doing. */
const SEEN_WITHIN_MS = 4000;

let twilio: FakeUpstream, vapi: FakeUpstream;
beforeAll(async () => {
  twilio = await fakeUpstream('twilio');
  vapi = await fakeUpstream('vapi');
});
afterAll(async () => {
  await twilio?.close();
  await vapi?.close();
});

async function serving(cli: Cli): Promise<string | undefined> {
  const r = await request(cli.proxyPort, 'GET', '/vapi/call');
  return /^"(gen\d+)"/.exec(String(r.headers['ratelimit-policy'] ?? ''))?.[1];
}

const reloads = async (cli: Cli) => metricValue(await metricsText(cli.adminPort), 'breakwater_policy_reloads_total', { result: 'success' }) ?? 0;

describe('server.watch across save-by-rename', () => {
  let cli: Cli, dir: string, file: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bw-watch-'));
    file = join(dir, 'policy.yaml');
    writeFileSync(file, generation(1));
    cli = await startCli(file, { TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url });
  });
  afterAll(() => {
    cli?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('applies each `sed -i` and each `mv new policy.yaml`', async () => {
    expect(await serving(cli)).toBe('gen1');
    // sed -i writes a temporary file beside the original and renames it over: a new inode each time.
    execFileSync('sed', ['-i', 's/name: gen1/name: gen2/', file]);
    expect(await waitFor(async () => ((await serving(cli)) === 'gen2' ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    execFileSync('sed', ['-i', 's/name: gen2/name: gen3/', file]);
    expect(await waitFor(async () => ((await serving(cli)) === 'gen3' ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    for (const n of [4, 5, 6]) {
      writeFileSync(join(dir, '.policy.yaml.new'), generation(n));
      renameSync(join(dir, '.policy.yaml.new'), file);
      expect(await waitFor(async () => ((await serving(cli)) === `gen${n}` ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    }
    expect(await reloads(cli)).toBe(5);
  });

  it('keeps the running policy, with a warning, while the file is absent, and applies it when back', async () => {
    unlinkSync(file);
    expect(await waitFor(() => cli.lines().find((l) => l.level === 'warn' && /policy file missing/.test(l.msg)), { timeoutMs: SEEN_WITHIN_MS })).toBeTruthy();
    expect(await serving(cli)).toBe('gen6');
    expect((await request(cli.adminPort, 'GET', '/readyz')).status).toBe(200);
    writeFileSync(join(dir, '.policy.yaml.new'), generation(7));
    renameSync(join(dir, '.policy.yaml.new'), file);
    expect(await waitFor(async () => ((await serving(cli)) === 'gen7' ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    // An absent file is not a refused policy.
    expect(metricValue(await metricsText(cli.adminPort), 'breakwater_policy_reloads_total', { result: 'failure' }) ?? 0).toBe(0);
  });
});

describe('server.watch across Kubernetes ConfigMap `..data` swaps', () => {
  let cli: Cli, dir: string;
  /** What the kubelet does: a new timestamped dir, `..data_tmp` -> it, renamed over `..data`, old dir removed. */
  const publish = (n: number, previous: string | undefined) => {
    const ts = `..2026_12_04_00_00_0${n}.${1000 + n}`;
    mkdirSync(join(dir, ts));
    writeFileSync(join(dir, ts, 'policy.yaml'), generation(n));
    symlinkSync(ts, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    if (previous !== undefined) rmSync(join(dir, previous), { recursive: true, force: true });
    return ts;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bw-configmap-'));
    const first = '..2026_12_04_00_00_00.1000';
    mkdirSync(join(dir, first));
    writeFileSync(join(dir, first, 'policy.yaml'), generation(1));
    symlinkSync(first, join(dir, '..data'));
    symlinkSync('..data/policy.yaml', join(dir, 'policy.yaml'));
    cli = await startCli(join(dir, 'policy.yaml'), { TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url });
  });
  afterAll(() => {
    cli?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('applies each swap of `..data`, many times over', async () => {
    expect(await serving(cli)).toBe('gen1');
    let previous: string | undefined = '..2026_12_04_00_00_00.1000';
    for (const n of [2, 3, 4, 5]) {
      previous = publish(n, previous);
      expect(await waitFor(async () => ((await serving(cli)) === `gen${n}` ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    }
    expect(await reloads(cli)).toBe(4);
  });
});

describe('server.watch on a symlink to a file in another directory', () => {
  let cli: Cli, dir: string, target: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bw-watch-link-'));
    mkdirSync(join(dir, 'etc'));
    mkdirSync(join(dir, 'data'));
    target = join(dir, 'data', 'real.yaml');
    writeFileSync(target, generation(1));
    symlinkSync(target, join(dir, 'etc', 'policy.yaml'));
    cli = await startCli(join(dir, 'etc', 'policy.yaml'), { TWILIO_BASE_URL: twilio.url, VAPI_BASE_URL: vapi.url });
  });
  afterAll(() => {
    cli?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('applies `sed -i` on the target, twice', async () => {
    expect(await serving(cli)).toBe('gen1');
    for (const n of [2, 3]) {
      execFileSync('sed', ['-i', `s/name: gen${n - 1}/name: gen${n}/`, target]);
      expect(await waitFor(async () => ((await serving(cli)) === `gen${n}` ? true : undefined), { timeoutMs: SEEN_WITHIN_MS })).toBe(true);
    }
  });
});
