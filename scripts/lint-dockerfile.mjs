#!/usr/bin/env node
// Lints the Dockerfile without a Docker engine: dockerfile-utils' validator (the checks the
// Docker builder itself makes) and then our own image rules on the parsed instructions.
//
//   node scripts/lint-dockerfile.mjs [path/to/Dockerfile] [--json]
//
// Exit 0 when there is no error-level diagnostic and every rule holds, 1 otherwise.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';

export const POLICY_PATH = '/etc/breakwater/policy.yaml';
export const REQUIRED_PORTS = ['8080', '9090'];

// LSP severities, as dockerfile-utils reports them.
const SEVERITY_ERROR = 1;
const SEVERITY_WARNING = 2;

/**
 * Lints Dockerfile text. Returns every finding rather than stopping at the first, so one run
 * tells the whole story.
 *
 * @param {string} content the Dockerfile text
 * @returns {{ ok: boolean, findings: Finding[], warnings: Finding[] }}
 *
 * @typedef {{ rule: string, message: string, line?: number }} Finding
 *   `rule` is stable (tests match on it); `line` is 1-based.
 */
export function lintDockerfileText(content) {
  /** @type {Finding[]} */
  const findings = [];
  /** @type {Finding[]} */
  const warnings = [];
  const add = (rule, message, instruction) => findings.push({ rule, message, ...(instruction ? { line: instruction.getRange().start.line + 1 } : {}) });

  // 1. What the builder would reject.
  for (const d of validate(content)) {
    const entry = { rule: 'dockerfile-utils', message: d.message, line: d.range.start.line + 1 };
    if (d.severity === SEVERITY_ERROR) findings.push(entry);
    else if (d.severity === SEVERITY_WARNING) warnings.push(entry);
  }

  // 2. Our rules, on the final stage (what actually runs).
  const dockerfile = DockerfileParser.parse(content);
  const stages = splitStages(dockerfile.getInstructions());
  if (stages.length < 2) add('multi-stage', `expected a build stage and a runtime stage, found ${stages.length} FROM`);
  const final = stages.at(-1) ?? [];
  const byKeyword = (kw) => final.filter((i) => i.getKeyword() === kw);
  const from = final[0];

  const image = from?.getImage?.() ?? '';
  if (!/^(docker\.io\/(library\/)?)?node:24([.-]|$)/.test(image)) {
    add('final-base', `final stage must be FROM node:24* (Node 24 LTS), found "${image || 'nothing'}"`, from);
  }

  const users = byKeyword('USER');
  const lastUser = users.at(-1);
  if (!lastUser) {
    add('root-user', 'no USER in the final stage: the container would run as root');
  } else {
    const user = (lastUser.getArgumentsContent() ?? '').trim().split(':')[0] ?? '';
    if (user === '' || user === 'root' || user === '0') add('root-user', `final stage runs as "${user || '(empty)'}"; use a non-root user`, lastUser);
    else if (user.includes('$')) add('root-user', `USER "${user}" is a variable; cannot verify it is not root`, lastUser);
  }

  const healthchecks = byKeyword('HEALTHCHECK');
  const healthcheck = healthchecks.at(-1);
  const healthArgs = (healthcheck?.getArgumentsContent() ?? '').trim();
  const healthCmd = /^(?:--\S+\s+)*CMD\s+([\s\S]*)$/i.exec(healthArgs);
  if (!healthcheck || /^(?:--\S+\s+)*NONE\s*$/i.test(healthArgs)) {
    add('healthcheck-missing', 'no HEALTHCHECK in the final stage');
  } else if (!healthCmd || !isExecForm(healthCmd[1] ?? '')) {
    add(
      'healthcheck-shell-form',
      'HEALTHCHECK must be `HEALTHCHECK CMD ["node", ...]` (exec form: the slim image has no curl and no shell wrapper is wanted)',
      healthcheck,
    );
  } else if (!/\/healthz/.test(healthCmd[1] ?? '')) {
    add('healthcheck-target', 'HEALTHCHECK should probe /healthz on the admin port', healthcheck);
  }

  const cmds = byKeyword('CMD');
  const entrypoints = byKeyword('ENTRYPOINT');
  const cmd = cmds.at(-1);
  const entrypoint = entrypoints.at(-1);
  if (!cmd && !entrypoint) add('no-command', 'final stage has neither CMD nor ENTRYPOINT');
  if (cmd && !isJsonInstruction(cmd)) add('shell-form-cmd', 'CMD must use exec form (JSON array) so node is PID 1 and receives SIGTERM', cmd);
  if (entrypoint && !isJsonInstruction(entrypoint))
    add('shell-form-entrypoint', 'ENTRYPOINT must use exec form (JSON array) so node is PID 1 and receives SIGTERM', entrypoint);
  const argv = [...(entrypoint ? jsonStrings(entrypoint) : []), ...(cmd ? jsonStrings(cmd) : [])];
  if ((cmd || entrypoint) && !(argv.some((a) => /(^|\/)bin\/breakwater\.js$/.test(a)) && argv.includes('start'))) {
    add('command', `container command should be \`node bin/breakwater.js start\`, found ${JSON.stringify(argv)}`, cmd ?? entrypoint);
  }

  const exposed = new Set(byKeyword('EXPOSE').flatMap((i) => i.getArguments().map((a) => a.getValue().replace(/\/tcp$/i, ''))));
  for (const port of REQUIRED_PORTS) {
    if (!exposed.has(port)) add('expose', `EXPOSE must include ${port}`);
  }

  const env = new Map();
  for (const e of byKeyword('ENV')) {
    for (const p of e.getProperties()) env.set(p.getName(), unquote(p.getUnescapedValue() ?? p.getValue() ?? ''));
  }
  if (env.get('ADMIN_HOST') !== '0.0.0.0') {
    add(
      'admin-host',
      `ENV ADMIN_HOST=0.0.0.0 is required in the final stage (health checks and scrapes come from outside the process), found ${JSON.stringify(env.get('ADMIN_HOST') ?? null)}`,
    );
  }
  if (env.get('NODE_ENV') !== 'production') add('node-env', 'ENV NODE_ENV=production is expected in the final stage');

  const policyCopied = byKeyword('COPY').some((c) => {
    const args = c
      .getArguments()
      .map((a) => a.getValue())
      .filter((v) => !v.startsWith('--'));
    return args.at(-1) === POLICY_PATH || (args.at(-1) === '/etc/breakwater/' && args.some((a) => a.endsWith('policy.yaml')));
  });
  if (!policyCopied) add('policy-path', `the final stage must COPY the default policy to ${POLICY_PATH}`);
  if (!argv.includes(POLICY_PATH)) add('policy-path', `the command must pass --config ${POLICY_PATH}`, cmd ?? entrypoint);

  const installs = byKeyword('RUN')
    .map((r) => r.getArgumentsContent() ?? '')
    .filter((t) => /\bnpm\s+(ci|install|i)\b/.test(t));
  if (installs.length === 0) add('omit-dev', 'the final stage must install its production dependencies (npm ci --omit=dev)');
  for (const text of installs) {
    if (!/--omit[= ]dev\b|--production\b/.test(text)) add('omit-dev', `runtime install must omit dev dependencies: "${squash(text)}"`);
    if (!/--ignore-scripts\b/.test(text))
      add('ignore-scripts', `runtime install must pass --ignore-scripts ("prepare" runs tsc, which --omit=dev leaves out): "${squash(text)}"`);
  }

  const stopsignal = byKeyword('STOPSIGNAL').at(-1);
  const signal = (stopsignal?.getArgumentsContent() ?? 'SIGTERM').trim();
  if (!['SIGTERM', 'TERM', '15'].includes(signal)) add('stopsignal', `STOPSIGNAL must be SIGTERM (it starts the drain), found ${signal}`, stopsignal);

  return { ok: findings.length === 0, findings, warnings };
}

/** Lints the Dockerfile at `path` (default: the repository's). */
export function lintDockerfile(path = fileURLToPath(new URL('../Dockerfile', import.meta.url))) {
  return { path, ...lintDockerfileText(readFileSync(path, 'utf8')) };
}

function splitStages(instructions) {
  const stages = [];
  for (const i of instructions) {
    if (i.getKeyword() === 'FROM') stages.push([i]);
    else stages.at(-1)?.push(i); // ARGs before the first FROM belong to no stage
  }
  return stages;
}

function isJsonInstruction(instruction) {
  return instruction.getOpeningBracket?.() != null && instruction.getClosingBracket?.() != null && isExecForm(instruction.getArgumentsContent() ?? '');
}

function isExecForm(text) {
  try {
    const value = JSON.parse(text.trim());
    return Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string');
  } catch {
    return false;
  }
}

// The argv an instruction runs; for shell form, its words (good enough to name the program).
function jsonStrings(instruction) {
  const text = (instruction.getArgumentsContent() ?? '').trim();
  try {
    const value = JSON.parse(text);
    if (Array.isArray(value)) return value.map(String);
  } catch {
    // shell form
  }
  return text.split(/\s+/).filter(Boolean);
}

const unquote = (s) => s.replace(/^(["'])(.*)\1$/, '$2');
const squash = (s) => s.replace(/\s+/g, ' ').trim().slice(0, 120);

async function cli(argv) {
  const json = argv.includes('--json');
  const path = resolve(argv.find((a) => !a.startsWith('--')) ?? fileURLToPath(new URL('../Dockerfile', import.meta.url)));
  const result = lintDockerfile(path);
  if (json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    for (const w of result.warnings) console.log(`warning ${path}:${w.line}: ${w.message}`);
    for (const f of result.findings) console.log(`error   ${path}${f.line ? `:${f.line}` : ''} [${f.rule}] ${f.message}`);
    console.log(result.ok ? `${path}: ok (${result.warnings.length} warnings)` : `${path}: ${result.findings.length} problem(s)`);
  }
  return result.ok ? 0 : 1;
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
