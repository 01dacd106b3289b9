#!/usr/bin/env node
// Checks that Breakwater runs from a production install, the way the image builds it, without
// Docker: no dev dependencies, no src/, no tsc at run time.
//
//   node scripts/check-install.mjs [--mode pack|image|both] [--root DIR] [--keep] [--json] [--rebuild]
//
// mode "pack" (default): `npm pack` the project, `npm install --omit=dev <tarball>` into an
//   empty folder, and start `node_modules/breakwater/bin/breakwater.js start` there on the
//   package's own default policy. Proves the published file list ("files") is complete.
// mode "image": carries out the Dockerfile itself, instruction by instruction, each stage in a
//   folder standing for its filesystem: WORKDIR, ENV, COPY (from the context, honouring
//   .dockerignore, or --from a stage) and RUN (through `sh -c`). Then it starts the final
//   stage's ENTRYPOINT + CMD (absolute paths mapped into the stage folder) and runs its
//   HEALTHCHECK command. Proves the build stage has every input it needs and the runtime stage
//   (lockfile install with --omit=dev --ignore-scripts, compiled output only) runs.
//   Not emulated: the base image (the host's node and npm stand in), USER, absolute paths
//   inside RUN commands.
//
// Either way the proxy then has to: answer GET /healthz 200 within 20 s, GET /readyz 200,
// serve /metrics, answer a stubbed Twilio "create message" with 201, and exit 0 within 10 s
// of SIGTERM. Exit code 0 when every step passed, 1 otherwise. Temp folders are removed
// unless --keep.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, mkdirSync, cpSync, readFileSync, readdirSync, lstatSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ACCOUNT = 'AC00000000000000000000000000000000';
const STUB_PATH = `/twilio/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
const STUB_BODY = 'To=%2B15551234567&From=%2B15557654321&Body=hi';
const OUTPUT_CAP = 256 * 1024;

/**
 * @typedef {{ name: string, ok: boolean, detail: string, ms: number }} Step
 * @typedef {{
 *   mode: 'pack' | 'image', ok: boolean, steps: Step[], figures: Record<string, number | string>,
 *   logs: string, dir: string | null
 * }} CheckInstallResult
 */

/**
 * Runs the production-install check. Never throws for a failed step: the result says which
 * step failed and why.
 *
 * @param {{
 *   mode?: 'pack' | 'image', root?: string, keep?: boolean, rebuild?: boolean,
 *   log?: ((line: string) => void) | null,
 *   healthTimeoutMs?: number, stopTimeoutMs?: number, installTimeoutMs?: number,
 * }} [options]
 * @returns {Promise<CheckInstallResult>}
 */
export async function checkInstall(options = {}) {
  const {
    mode = 'pack',
    root = ROOT,
    keep = false,
    rebuild = false,
    log = null,
    healthTimeoutMs = 20_000,
    stopTimeoutMs = 10_000,
    installTimeoutMs = 240_000,
  } = options;
  if (mode !== 'pack' && mode !== 'image') throw new TypeError(`mode must be "pack" or "image", got ${mode}`);

  /** @type {Step[]} */
  const steps = [];
  /** @type {Record<string, number | string>} */
  const figures = {};
  const tmp = mkdtempSync(join(tmpdir(), `bw-check-install-${mode}-`));
  const appDir = join(tmp, 'app'); // pack mode's empty project
  /** @type {ReturnType<typeof startProcess> | null} */
  let proc = null;

  // Runs one step; a step that throws or returns ok:false ends the check.
  const step = async (name, fn) => {
    const t0 = performance.now();
    let ok = false;
    let detail = '';
    try {
      ({ ok, detail } = await fn());
    } catch (err) {
      detail = err instanceof Error ? err.message : String(err);
    }
    const ms = Math.round(performance.now() - t0);
    steps.push({ name, ok, detail, ms });
    log?.(`  ${ok ? 'ok  ' : 'FAIL'}  ${name.padEnd(16)} ${detail}${ms >= 1000 ? ` (${(ms / 1000).toFixed(1)} s)` : ''}`);
    return ok;
  };

  log?.(`check-install (${mode}) in ${tmp}`);
  try {
    /** @type {{ command: string, args: string[], cwd: string, env: Record<string, string>, healthcheck?: string[] }} */
    let start;
    if (mode === 'pack') {
      const built = await step('build', async () => {
        if (!rebuild && existsSync(join(root, 'dist', 'cli.js'))) return { ok: true, detail: 'dist/cli.js present' };
        const r = await run('npm', ['run', 'build'], { cwd: root, timeoutMs: 300_000 });
        return {
          ok: r.code === 0 && existsSync(join(root, 'dist', 'cli.js')),
          detail: r.code === 0 ? `npm run build (${r.ms} ms)` : `npm run build exited ${r.code}: ${tail(r.output, 6)}`,
        };
      });
      if (!built) return finish();

      let tarball = '';
      const packed = await step('pack', async () => {
        // --ignore-scripts: `prepare` would rebuild dist/ underneath anything else using it.
        const r = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: root, timeoutMs: 120_000 });
        if (r.code !== 0) return { ok: false, detail: `npm pack exited ${r.code}: ${tail(r.output, 6)}` };
        const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))[0];
        tarball = join(tmp, info.filename);
        const files = new Set(info.files.map((f) => f.path));
        Object.assign(figures, { tarball: info.filename, tarballBytes: info.size, unpackedBytes: info.unpackedSize, files: info.entryCount });
        const missing = ['package.json', 'bin/breakwater.js', 'dist/cli.js', 'config/policy.yaml'].filter((f) => !files.has(f));
        const stray = [...files].filter((f) => /^(src|test|bench|scripts|node_modules)\//.test(f) || /(^|\/)\.env$/.test(f));
        const problems = [
          missing.length ? `missing ${missing.join(', ')}` : '',
          stray.length ? `should not ship ${stray.slice(0, 5).join(', ')}${stray.length > 5 ? ', …' : ''}` : '',
        ].filter(Boolean);
        return {
          ok: problems.length === 0 && existsSync(tarball),
          detail: problems.join('; ') || `${info.filename}, ${kb(info.size)} packed / ${kb(info.unpackedSize)} unpacked, ${info.entryCount} files`,
        };
      });
      if (!packed) return finish();

      const installed = await step('install', async () => {
        mkdirSync(appDir);
        const init = await run('npm', ['init', '-y'], { cwd: appDir, timeoutMs: 60_000 });
        if (init.code !== 0 || !existsSync(join(appDir, 'package.json')))
          return { ok: false, detail: `npm init -y failed (${init.code}): ${tail(init.output, 4)}` };
        const r = await run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', tarball], { cwd: appDir, timeoutMs: installTimeoutMs });
        figures.installMs = r.ms;
        if (r.code !== 0) return { ok: false, detail: `npm install exited ${r.code}: ${tail(r.output, 8)}` };
        return checkTree(join(appDir, 'node_modules'), figures, `npm install --omit=dev <tarball> in ${(r.ms / 1000).toFixed(1)} s`);
      });
      if (!installed) return finish();
      start = {
        command: process.execPath,
        args: [join(appDir, 'node_modules', 'breakwater', 'bin', 'breakwater.js'), 'start'],
        cwd: appDir,
        env: { NODE_ENV: 'production' },
      };
    } else {
      const image = await buildImage({ root, dir: join(tmp, 'stages'), step, figures, installTimeoutMs });
      if (!image) return finish();
      start = image;
    }

    const proxyPort = await freePort();
    const adminPort = await freePort();
    const env = {
      ...baseEnv(),
      ...start.env,
      PROXY_HOST: '127.0.0.1',
      PROXY_PORT: String(proxyPort),
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      INTEGRATIONS_STUB_MODE: 'true',
      LOG_LEVEL: 'info',
    };
    const admin = `http://127.0.0.1:${adminPort}`;
    const proxy = `http://127.0.0.1:${proxyPort}`;

    const healthy = await step('healthz', async () => {
      proc = startProcess(start.command, start.args, { cwd: start.cwd, env });
      const t0 = performance.now();
      const deadline = t0 + healthTimeoutMs;
      let last = 'no answer';
      while (performance.now() < deadline) {
        if (proc.exit) return { ok: false, detail: `process exited (${describeExit(proc.exit)}) before /healthz answered: ${tail(proc.output(), 8)}` };
        try {
          const res = await fetch(`${admin}/healthz`, { signal: AbortSignal.timeout(1000) });
          await res.arrayBuffer();
          if (res.status === 200) {
            figures.healthyMs = Math.round(performance.now() - t0);
            return { ok: true, detail: `200 after ${figures.healthyMs} ms (proxy :${proxyPort}, admin :${adminPort})` };
          }
          last = `status ${res.status}`;
        } catch (err) {
          last = err?.cause?.code ?? err?.message ?? String(err);
        }
        await sleep(200);
      }
      return { ok: false, detail: `no 200 from /healthz within ${healthTimeoutMs} ms (last: ${last}): ${tail(proc.output(), 8)}` };
    });
    if (!healthy) return finish();

    if (start.healthcheck) {
      const [command, ...args] = start.healthcheck;
      await step('HEALTHCHECK', async () => {
        const r = await run(command === 'node' ? process.execPath : command, args, { cwd: start.cwd, env, timeoutMs: 30_000 });
        return { ok: r.code === 0, detail: `the image's HEALTHCHECK command exited ${r.code} in ${r.ms} ms${r.code === 0 ? '' : `: ${tail(r.output, 4)}`}` };
      });
    }

    await step('readyz', async () => {
      const res = await fetch(`${admin}/readyz`, { signal: AbortSignal.timeout(3000) });
      await res.arrayBuffer();
      return { ok: res.status === 200, detail: `GET /readyz → ${res.status}` };
    });

    await step('metrics', async () => {
      const res = await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(3000) });
      const text = await res.text();
      const ok = res.status === 200 && /^circuit_breaker_state\{/m.test(text);
      return { ok, detail: `GET /metrics → ${res.status}, ${ok ? 'circuit_breaker_state exported' : 'circuit_breaker_state missing'}` };
    });

    await step('stub request', async () => {
      const t0 = performance.now();
      const res = await fetch(`${proxy}${STUB_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: STUB_BODY,
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      figures.stubMs = Math.round(performance.now() - t0);
      let sid = '';
      try {
        sid = JSON.parse(text).sid ?? '';
      } catch {
        /* reported below */
      }
      return {
        ok: res.status === 201,
        detail: `POST ${STUB_PATH} → ${res.status}${sid ? ` sid=${sid}` : ` ${text.slice(0, 120)}`} (x-request-id ${res.headers.get('x-request-id') ? 'set' : 'missing'})`,
      };
    });

    await step('sigterm', async () => {
      const t0 = performance.now();
      proc.kill('SIGTERM');
      const exit = await proc.waitExit(stopTimeoutMs);
      figures.stopMs = Math.round(performance.now() - t0);
      if (!exit) return { ok: false, detail: `still running ${stopTimeoutMs} ms after SIGTERM` };
      return { ok: exit.code === 0, detail: `exited ${describeExit(exit)} after ${figures.stopMs} ms` };
    });
    return finish();
  } catch (err) {
    steps.push({ name: 'harness', ok: false, detail: err instanceof Error ? err.message : String(err), ms: 0 });
    return finish();
  } finally {
    if (proc && !proc.exit) {
      proc.kill('SIGKILL');
      await proc.waitExit(5000);
    }
    if (!keep) rmSync(tmp, { recursive: true, force: true });
  }

  function finish() {
    const ok = steps.length > 0 && steps.every((s) => s.ok) && steps.some((s) => s.name === 'sigterm');
    return { mode, ok, steps, figures, logs: proc ? proc.output() : '', dir: keep ? tmp : null };
  }
}

/** A human-readable report of one or more results. */
export function formatReport(results) {
  const lines = [];
  for (const r of results) {
    lines.push(`check-install (${r.mode}): ${r.ok ? 'OK' : 'FAILED'}`);
    for (const s of r.steps) lines.push(`  ${s.ok ? 'ok  ' : 'FAIL'}  ${s.name.padEnd(16)} ${s.detail}`);
    const f = r.figures;
    const figs = [
      f.tarballBytes != null ? `tarball ${kb(f.tarballBytes)}` : '',
      f.installMs != null ? `install ${(f.installMs / 1000).toFixed(1)} s` : '',
      f.packages != null ? `${f.packages} packages` : '',
      f.nodeModulesBytes != null ? `node_modules ${mb(f.nodeModulesBytes)}` : '',
      f.imageAppBytes != null ? `final stage adds ${mb(f.imageAppBytes)} to the base image` : '',
      f.healthyMs != null ? `healthy in ${f.healthyMs} ms` : '',
      f.stopMs != null ? `stopped in ${f.stopMs} ms` : '',
    ].filter(Boolean);
    if (figs.length) lines.push(`  figures: ${figs.join(', ')}`);
    if (!r.ok && r.logs)
      lines.push(
        '  last process output:',
        ...tail(r.logs, 20)
          .split('\n')
          .map((l) => `    ${l}`),
      );
    if (r.dir) lines.push(`  kept: ${r.dir}`);
  }
  return lines.join('\n');
}

/**
 * Carries out the Dockerfile without Docker (see the header): each stage in `dir/<stage>`,
 * which stands for that stage's filesystem root. Returns how to start the final stage, or
 * null once a step has failed.
 */
async function buildImage({ root, dir, step, figures, installTimeoutMs }) {
  const { DockerfileParser } = await import('dockerfile-ast');
  const instructions = DockerfileParser.parse(readFileSync(join(root, 'Dockerfile'), 'utf8')).getInstructions();
  const excluded = dockerignore(root);
  /** @type {{ from: any, body: any[] }[]} */
  const groups = [];
  for (const i of instructions) {
    if (i.getKeyword() === 'FROM') groups.push({ from: i, body: [] });
    else groups.at(-1)?.body.push(i); // an ARG before the first FROM belongs to no stage
  }
  const stages = new Map();
  let final = null;
  for (const [n, { from, body }] of groups.entries()) {
    const name = from.getBuildStage() ?? String(n);
    const stage = { name, root: join(dir, name), workdir: '/', env: {}, entrypoint: null, cmd: null, healthcheck: null };
    mkdirSync(stage.root, { recursive: true });
    stages.set(name, stage).set(String(n), stage);
    const at = (p) => join(stage.root, p);
    const ok = await step(`stage ${name}`, async () => {
      let runMs = 0;
      for (const i of body) {
        const where = `Dockerfile:${i.getRange().start.line + 1} ${i.getKeyword()}`;
        switch (i.getKeyword()) {
          case 'WORKDIR':
            stage.workdir = posix.resolve(stage.workdir, (i.getArgumentsContent() ?? '').trim());
            mkdirSync(at(stage.workdir), { recursive: true });
            break;
          case 'ENV':
            for (const p of i.getProperties()) stage.env[p.getName()] = (p.getUnescapedValue() ?? p.getValue() ?? '').replace(/^(["'])(.*)\1$/, '$2');
            break;
          case 'COPY': {
            const args = i.getArguments().map((a) => a.getValue());
            const fromStage =
              i
                .getFlags()
                .find((f) => f.getName() === 'from')
                ?.getValue() ?? undefined;
            const paths = args.filter((a) => !a.startsWith('--'));
            const dest = paths.pop() ?? '';
            const destAbs = dest.startsWith('/') ? dest : posix.join(stage.workdir, dest);
            const intoDir = dest.endsWith('/') || paths.length > 1;
            const source = fromStage === undefined ? null : stages.get(fromStage);
            if (fromStage !== undefined && !source) return { ok: false, detail: `${where}: --from=${fromStage} is not an earlier stage of this Dockerfile` };
            for (const src of paths) {
              if (/[*?[]/.test(src)) return { ok: false, detail: `${where}: wildcard sources are not emulated (${src})` };
              const origin = source ? join(source.root, posix.resolve('/', src)) : join(root, src);
              if (!source && excluded(posix.normalize(src))) return { ok: false, detail: `${where}: ${src} is excluded by .dockerignore` };
              if (!existsSync(origin))
                return { ok: false, detail: `${where}: ${src} not found${source ? ` in stage ${source.name}` : ' in the build context'}` };
              const filter = source ? undefined : (p) => !excluded(relative(root, p).split('\\').join('/'));
              if (statSync(origin).isDirectory()) {
                cpSync(origin, at(destAbs), { recursive: true, filter }); // a directory's contents, as Docker does
              } else {
                const target = intoDir ? join(at(destAbs), basename(src)) : at(destAbs);
                mkdirSync(dirname(target), { recursive: true });
                cpSync(origin, target);
              }
            }
            break;
          }
          case 'RUN': {
            const r = await run('sh', ['-c', i.getArgumentsContent() ?? ''], {
              cwd: at(stage.workdir),
              env: { ...npmEnv(), ...stage.env },
              timeoutMs: installTimeoutMs,
            });
            runMs += r.ms;
            if (r.code !== 0) return { ok: false, detail: `${where} exited ${r.code}: ${tail(r.output, 8)}` };
            break;
          }
          case 'ENTRYPOINT':
          case 'CMD': {
            const argv = execForm(i.getArgumentsContent() ?? '');
            if (!argv) return { ok: false, detail: `${where}: only the exec form (a JSON array) is emulated` };
            if (i.getKeyword() === 'CMD') stage.cmd = argv;
            else stage.entrypoint = argv;
            break;
          }
          case 'HEALTHCHECK': {
            const m = /^(?:--\S+\s+)*CMD\s+([\s\S]*)$/i.exec((i.getArgumentsContent() ?? '').trim());
            stage.healthcheck = m ? execForm(m[1] ?? '') : null;
            break;
          }
          default: // ARG, LABEL, USER, EXPOSE, STOPSIGNAL: nothing on disk
        }
      }
      figures[`stage ${name} RUN ms`] = runMs;
      return { ok: true, detail: `${body.length} instructions, RUN took ${(runMs / 1000).toFixed(1)} s` };
    });
    if (!ok) return null;
    final = stage;
  }
  if (!final) {
    await step('stage', async () => ({ ok: false, detail: 'the Dockerfile has no FROM' }));
    return null;
  }
  const image = final;
  const tree = await step('production tree', async () => {
    figures.imageAppBytes = duBytes(image.root);
    const modules = join(image.root, image.workdir, 'node_modules');
    if (!existsSync(modules)) return { ok: false, detail: `no node_modules in ${image.workdir}` };
    const checked = checkTree(modules, figures, `final stage adds ${mb(figures.imageAppBytes)} to the base image`);
    return { ...checked, ok: checked.ok && !existsSync(join(image.root, image.workdir, 'src')) };
  });
  if (!tree) return null;
  const argv = [...(image.entrypoint ?? []), ...(image.cmd ?? [])];
  // Absolute paths of the image's filesystem live under the stage folder here.
  const mapped = argv.map((a) => (a.startsWith('/') && existsSync(join(image.root, a)) ? join(image.root, a) : a));
  const [command = '', ...args] = mapped;
  return {
    command: command === 'node' ? process.execPath : command,
    args,
    cwd: join(image.root, image.workdir),
    env: image.env,
    ...(image.healthcheck ? { healthcheck: image.healthcheck } : {}),
  };
}

function execForm(text) {
  try {
    const v = JSON.parse(text.trim());
    return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string') ? v : null;
  } catch {
    return null;
  }
}

// .dockerignore as Docker reads it: patterns relative to the context, `*` within one path
// segment, `**` across segments, a match on a directory excludes everything under it, and a
// later `!pattern` brings a path back.
function dockerignore(root) {
  const file = join(root, '.dockerignore');
  const rules = (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, '')).replace(/\/+$/, '');
      const source = pattern
        .split(/(\*\*|\*|\?)/)
        .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('');
      return { negate, re: new RegExp(`^${source}$`) };
    });
  return (path) => {
    if (path === '' || path === '.') return false;
    const parts = path.split('/');
    const prefixes = parts.map((_, k) => parts.slice(0, k + 1).join('/'));
    let out = false;
    for (const rule of rules) if (prefixes.some((p) => rule.re.test(p))) out = !rule.negate;
    return out;
  };
}

// A production tree must hold no dev-only tool; count what it does hold.
function checkTree(nodeModules, figures, detail) {
  const lock = JSON.parse(readFileSync(join(nodeModules, '.package-lock.json'), 'utf8'));
  const packages = Object.keys(lock.packages ?? {}).filter((k) => k.startsWith('node_modules/'));
  figures.packages = packages.length;
  figures.nodeModulesBytes = duBytes(nodeModules);
  const dev = ['typescript', 'vitest', 'autocannon', 'dockerfile-utils', 'fast-check'].filter((p) => existsSync(join(nodeModules, p)));
  if (dev.length) return { ok: false, detail: `dev dependencies installed: ${dev.join(', ')}` };
  return { ok: true, detail: `${detail}: ${packages.length} packages, ${mb(figures.nodeModulesBytes)}` };
}

function duBytes(dir, budget = { entries: 200_000 }) {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (--budget.entries < 0) break;
    const p = join(dir, entry.name);
    if (entry.isDirectory()) total += duBytes(p, budget);
    else if (entry.isFile()) total += lstatSync(p).size;
  }
  return total;
}

// The child's environment: enough to run node and npm, nothing the caller's shell happens to
// hold (credentials, npm lifecycle variables of an enclosing `npm test`).
function baseEnv() {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'TEMP', 'TMP', 'LANG', 'SystemRoot', 'npm_config_cache', 'npm_config_registry', 'npm_config_userconfig'];
  return Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
}

function npmEnv() {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^npm_(package|lifecycle)_|^npm_config_(local_)?prefix$|^INIT_CWD$|^NODE_ENV$/i.test(k)),
  );
}

/** Runs a command to completion, with a hard time limit. */
function run(cmd, args, { cwd, timeoutMs, env = npmEnv() }) {
  return new Promise((resolvePromise) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: process.platform !== 'win32' });
    let stdout = '';
    let output = '';
    child.stdout.on('data', (d) => {
      stdout = cap(stdout + d);
      output = cap(output + d);
    });
    child.stderr.on('data', (d) => {
      output = cap(output + d);
    });
    const timer = setTimeout(() => {
      output += `\n[killed after ${timeoutMs} ms]`;
      killTree(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      output += `\n${err.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? (signal ? 128 : 1), stdout, output, ms: Math.round(performance.now() - t0) });
    });
  });
}

function killTree(child, signal) {
  try {
    if (process.platform !== 'win32' && child.pid) process.kill(-child.pid, signal);
    else child.kill(signal);
  } catch {
    child.kill(signal);
  }
}

/** Starts a long-running process and keeps the tail of its output. */
function startProcess(cmd, args, { cwd, env }) {
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const state = {
    exit: /** @type {{ code: number | null, signal: string | null } | null} */ (null),
    output: () => output,
    kill: (signal) => {
      if (!state.exit) child.kill(signal);
    },
    waitExit: (ms) =>
      new Promise((res) => {
        if (state.exit) return res(state.exit);
        const timer = setTimeout(() => res(null), ms);
        child.once('exit', () => {
          clearTimeout(timer);
          res(state.exit);
        });
      }),
  };
  child.stdout.on('data', (d) => {
    output = cap(output + d);
  });
  child.stderr.on('data', (d) => {
    output = cap(output + d);
  });
  child.on('error', (err) => {
    output += `\n${err.message}`;
    state.exit ??= { code: null, signal: 'spawn-error' };
  });
  child.on('exit', (code, signal) => {
    state.exit = { code, signal };
  });
  return state;
}

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
      srv.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cap = (s) => (s.length > OUTPUT_CAP ? s.slice(-OUTPUT_CAP) : s);
const tail = (s, n) => s.trim().split('\n').slice(-n).join('\n');
const kb = (b) => `${(b / 1024).toFixed(1)} kB`;
const mb = (b) => `${(b / 1024 / 1024).toFixed(1)} MB`;
const describeExit = (e) => (e.signal ? `signal ${e.signal}` : `code ${e.code}`);

async function cli(argv) {
  const flag = (name) => argv.includes(name);
  const modeArg = argv.find((a) => a.startsWith('--mode='))?.slice(7) ?? (argv.includes('--mode') ? argv[argv.indexOf('--mode') + 1] : 'pack');
  if (flag('--help') || flag('-h')) {
    console.log('usage: node scripts/check-install.mjs [--mode pack|image|both] [--root DIR] [--keep] [--rebuild] [--json]');
    return 0;
  }
  const modes = modeArg === 'both' ? ['pack', 'image'] : [modeArg];
  if (!modes.every((m) => m === 'pack' || m === 'image')) {
    console.error(`--mode must be pack, image or both, got ${modeArg}`);
    return 2;
  }
  const rootArg = argv.find((a) => a.startsWith('--root='))?.slice(7) ?? (argv.includes('--root') ? argv[argv.indexOf('--root') + 1] : undefined);
  const json = flag('--json');
  const results = [];
  for (const mode of modes) {
    results.push(
      await checkInstall({
        mode,
        ...(rootArg ? { root: resolve(rootArg) } : {}),
        keep: flag('--keep'),
        rebuild: flag('--rebuild'),
        log: json ? null : (l) => console.log(l),
      }),
    );
  }
  if (json) console.log(JSON.stringify(results, null, 2));
  else console.log(`\n${formatReport(results)}`);
  return results.every((r) => r.ok) ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err instanceof Error ? err.stack : String(err));
      process.exitCode = 1;
    },
  );
}
