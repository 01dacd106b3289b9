// Reads a policy file: YAML → `${VAR:-default}` interpolation → schema validation → frozen.
// Every problem is collected and reported at once as `file:line:col path.to.key: message`,
// so an operator fixes a policy in one pass rather than one error per restart.
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Pair, type Scalar } from 'yaml';
import type { z } from 'zod';
import { policySchema, type Policy } from './schema.js';
import { compileTemplate } from '../stub-template.js';
import { parseRedisUrl } from './redis-url.js';

export interface PolicyProblem {
  line: number;
  col: number;
  path: string;
  message: string;
}

export class PolicyError extends Error {
  constructor(
    readonly file: string,
    readonly problems: PolicyProblem[],
  ) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'PolicyError';
  }
}

/** One line per problem, whatever a key holds: callers split the message on newlines. */
const oneLine = (s: string) => s.replace(/\r?\n|\r/g, '\\n');

export function formatProblem(file: string, p: PolicyProblem): string {
  const at = p.line > 0 ? `:${p.line}:${p.col}` : '';
  return `${file}${at}${p.path ? ` ${oneLine(p.path)}` : ''}: ${oneLine(p.message)}`;
}

type Env = Record<string, string | undefined>;

/**
 * `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR-default}` (only when unset);
 * defaults may nest (`${TWILIO_API_KEY_SID:-${TWILIO_ACCOUNT_SID:-}}`). `VAR_FILE`, when set,
 * names a file holding the value (Docker and Kubernetes secrets); a trailing newline is dropped.
 */
export function interpolate(text: string, env: Env): string {
  return expand(text, 0, env, false).out;
}

function lookup(name: string, env: Env): string | undefined {
  const v = env[name];
  if (v !== undefined && v !== '') return v;
  // An empty variable defers to its _FILE (compose passes unset secrets through as empty).
  const file = env[`${name}_FILE`];
  if (file === undefined || file === '') return v;
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(`${name}_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Expands from `i` until the end (or, inside a default, until its closing brace). */
function expand(text: string, i: number, env: Env, nested: boolean): { out: string; end: number } {
  let out = '';
  while (i < text.length) {
    const ch = text[i]!;
    if (nested && ch === '}') return { out, end: i };
    if (ch === '$' && text[i + 1] === '{') {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i + 2));
      if (m) {
        const name = m[0];
        let j = i + 2 + name.length;
        let def: string | undefined;
        let colon = false;
        if (text.startsWith(':-', j) || text[j] === '-') {
          colon = text[j] === ':';
          const inner = expand(text, j + (colon ? 2 : 1), env, true);
          def = inner.out;
          j = inner.end;
        }
        if (text[j] === '}') {
          const v = lookup(name, env);
          out += v === undefined || (colon && v === '') ? (def ?? '') : v;
          i = j + 1;
          continue;
        }
      }
    }
    out += ch;
    i++;
  }
  return { out, end: i };
}

const WHOLE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-.*)?\}$/s;

function resolveScalar(source: string, env: Env): unknown {
  const whole = WHOLE.exec(source);
  const text = interpolate(source, env);
  if (!whole) return text;
  // A value that is exactly one `${…}` takes the type its text has in YAML ("3" → 3, "true" → true),
  // so `threshold: ${CIRCUIT_BREAKER_THRESHOLD:-3}` is a number, as an operator would expect.
  if (text.trim() === '') return '';
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return text;
  const v = doc.toJS() as unknown;
  return typeof v === 'object' && v !== null ? text : v;
}

/**
 * Walks the YAML tree replacing interpolated scalars in place, keeping their source ranges.
 * `typed` remembers the text of each `${…}` that became a number or boolean.
 */
function interpolateTree(
  node: unknown,
  env: Env,
  problems: { offset: number; path: string; message: string }[],
  typed: Map<Scalar, string>,
  path: string[] = [],
): void {
  if (isMap(node)) {
    for (const pair of node.items as Pair[])
      interpolateTree(pair.value, env, problems, typed, [...path, String(isScalar(pair.key) ? pair.key.value : pair.key)]);
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      interpolateTree(item, env, problems, typed, [...path, String(i)]);
    });
  } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
    try {
      const source = node.value;
      node.value = resolveScalar(source, env);
      if (typeof node.value !== 'string') typed.set(node, interpolate(source, env));
    } catch (err) {
      problems.push({ offset: node.range?.[0] ?? 0, path: path.join('.'), message: (err as Error).message });
    }
  }
}

export interface LoadOptions {
  env?: Env;
  /** Used in messages; defaults to the path. */
  displayName?: string;
}

export function loadPolicyFile(file: string, opts: LoadOptions = {}): Policy {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PolicyError(opts.displayName ?? file, [
      { line: 0, col: 0, path: '', message: `cannot read policy: ${(err as NodeJS.ErrnoException).code ?? String(err)}` },
    ]);
  }
  return parsePolicy(text, { ...opts, displayName: opts.displayName ?? file });
}

export function parsePolicy(text: string, opts: LoadOptions = {}): Policy {
  const file = opts.displayName ?? 'policy.yaml';
  const env = opts.env ?? process.env;
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const pos = (offset: number) => {
    const p = lc.linePos(offset);
    return { line: p.line, col: p.col };
  };
  if (doc.errors.length > 0) {
    throw new PolicyError(
      file,
      doc.errors.map((e) => ({ ...pos(e.pos[0]), path: '', message: e.message.split('\n')[0] ?? e.code })),
    );
  }
  // A mapping or list used as a key (`? {a: 1}`) is never a policy key; refused here, it cannot be
  // echoed whole into a message (or stringified by yaml with a process warning).
  const keyProblems: PolicyProblem[] = [];
  visit(doc, {
    Pair(_, pair) {
      if (isMap(pair.key) || isSeq(pair.key))
        keyProblems.push({ ...pos(pair.key.range?.[0] ?? 0), path: '', message: 'a key must be a plain name, not a mapping or a list' });
    },
  });
  if (keyProblems.length > 0) throw new PolicyError(file, keyProblems);
  const envProblems: { offset: number; path: string; message: string }[] = [];
  const typed = new Map<Scalar, string>();
  interpolateTree(doc.contents, env, envProblems, typed);
  if (envProblems.length > 0)
    throw new PolicyError(
      file,
      envProblems.map((e) => ({ ...pos(e.offset), path: e.path, message: e.message })),
    );
  let parsed = policySchema.safeParse(toJS(doc, file, pos) ?? {});
  // A `${VAR}` whose text reads as a number or boolean stays a string where the schema wants one:
  // an all-digit Twilio auth token must be accepted, not refused (and echoed) as "must be string".
  if (!parsed.success && typed.size > 0) {
    let retyped = false;
    for (const issue of parsed.error.issues) {
      if (issue.code !== 'invalid_type' || issue.expected !== 'string') continue;
      const node = doc.getIn(issue.path, true);
      const text = isScalar(node) ? typed.get(node) : undefined;
      if (text !== undefined && isScalar(node)) {
        node.value = text;
        retyped = true;
      }
    }
    if (retyped) parsed = policySchema.safeParse(toJS(doc, file, pos) ?? {});
  }
  if (!parsed.success) {
    throw new PolicyError(
      file,
      parsed.error.issues.flatMap((i) => issueToProblems(i, doc, pos)).sort((a, b) => a.line - b.line || a.col - b.col),
    );
  }
  const semantic = checkSemantics(parsed.data);
  if (semantic.length > 0) {
    throw new PolicyError(
      file,
      semantic.map((s) => ({ ...locate(doc, s.path, pos), path: s.path.join('.'), message: s.message })),
    );
  }
  return deepFreeze(parsed.data);
}

/**
 * `doc.toJS()`, with its throws turned into problems: yaml throws rather than reports an alias to
 * an anchor that does not exist, and an alias bomb (its maxAliasCount guard). Points at the alias.
 */
function toJS(doc: Document, file: string, pos: (o: number) => { line: number; col: number }): unknown {
  try {
    return doc.toJS() as unknown;
  } catch (err) {
    let at: number | undefined;
    visit(doc, {
      Alias(_, node) {
        const unresolved = node.resolve(doc) === undefined;
        if (at === undefined || unresolved) at = node.range?.[0];
        if (unresolved) return visit.BREAK;
      },
    });
    throw new PolicyError(file, [{ ...pos(at ?? 0), path: '', message: (err as Error).message }]);
  }
}

function issueToProblems(issue: z.core.$ZodIssue, doc: Document, pos: (o: number) => { line: number; col: number }): PolicyProblem[] {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => {
      const where = locateKey(doc, [...path, k], pos) ?? locate(doc, path, pos);
      return { ...where, path: [...path, k].join('.'), message: `unknown key "${k}"` };
    });
  }
  let message = issue.message;
  if (issue.code === 'invalid_type') message = `must be ${issue.expected}${describeReceived(doc, path)}`;
  return [{ ...locate(doc, path, pos), path: path.join('.'), message }];
}

function describeReceived(doc: Document, path: string[]): string {
  const node = doc.getIn(path, true) as Node | undefined;
  if (node === undefined) return ' (missing)';
  if (isScalar(node)) return `, got ${JSON.stringify(node.value)}`;
  return isSeq(node) ? ', got a list' : ', got a mapping';
}

function locate(doc: Document, path: (string | number)[], pos: (o: number) => { line: number; col: number }) {
  // Walk up until a node with a position exists (a missing key is reported at its parent).
  for (let n = path.length; n >= 0; n--) {
    const node = (n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true)) as Node | null | undefined;
    if (node && node.range) {
      if (n < path.length) {
        // Point at the parent's key rather than its first child.
        const key = locateKey(doc, path.slice(0, n), pos);
        if (key) return key;
      }
      return pos(node.range[0]);
    }
  }
  return { line: 1, col: 1 };
}

function locateKey(doc: Document, path: (string | number)[], pos: (o: number) => { line: number; col: number }) {
  const parent = (path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true)) as unknown;
  if (!isMap(parent)) return undefined;
  const last = path.at(-1);
  const pair = parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === last);
  const k = pair?.key as Node | undefined;
  return k?.range ? pos(k.range[0]) : undefined;
}

interface Semantic {
  path: (string | number)[];
  message: string;
}

function checkSemantics(p: Policy): Semantic[] {
  const out: Semantic[] = [];
  const prefixes = new Map<string, string>();
  for (const [name, u] of Object.entries(p.upstreams)) {
    if (u.prefix) {
      const other = prefixes.get(u.prefix);
      if (other) out.push({ path: ['upstreams', name, 'prefix'], message: `prefix ${u.prefix} is already used by upstream "${other}"` });
      prefixes.set(u.prefix, name);
    }
    if (!u.prefix && u.hosts.length === 0) out.push({ path: ['upstreams', name], message: 'needs a prefix or hosts to be reachable' });
    const names = new Set<string>();
    u.rateLimits.forEach((l, i) => {
      if (names.has(l.name)) out.push({ path: ['upstreams', name, 'rateLimits', i, 'name'], message: `duplicate limit name "${l.name}"` });
      names.add(l.name);
    });
    u.stubs.forEach((st, i) => {
      try {
        compileTemplate(st.body);
      } catch (err) {
        out.push({ path: ['upstreams', name, 'stubs', i, 'body'], message: (err as Error).message });
      }
    });
    if (u.credentials.type === 'basic' && (u.credentials.username === '') !== (u.credentials.password === '')) {
      out.push({ path: ['upstreams', name, 'credentials'], message: 'basic credentials need both username and password (or neither)' });
    }
  }
  if (Object.keys(p.upstreams).length === 0) out.push({ path: ['upstreams'], message: 'at least one upstream is required' });
  if (p.store.type === 'redis' && p.store.redisUrl === '') out.push({ path: ['store', 'redisUrl'], message: 'RATE_LIMIT_STORE=redis needs REDIS_URL' });
  for (const [name, u] of Object.entries(p.upstreams)) {
    if (u.bulkhead.fleet && p.store.type !== 'redis')
      out.push({ path: ['upstreams', name, 'bulkhead', 'fleet'], message: 'a fleet-wide bulkhead needs RATE_LIMIT_STORE=redis' });
    if (u.cache.store === 'redis' && p.store.type !== 'redis')
      out.push({ path: ['upstreams', name, 'cache', 'store'], message: 'a Redis cache store needs RATE_LIMIT_STORE=redis' });
  }
  if (p.store.type === 'redis' && p.store.redisUrl !== '') {
    try {
      parseRedisUrl(p.store.redisType, p.store.redisUrl);
    } catch (err) {
      out.push({ path: ['store', 'redisUrl'], message: (err as Error).message });
    }
  }
  return out;
}

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
