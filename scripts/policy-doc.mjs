#!/usr/bin/env node
// Generates docs/policy.md, the full policy reference, from the schema itself (zod 4's
// `z.toJSONSchema` keeps each field's `describe()` line and default) and from the `${VAR}`s of
// the shipped config/policy.yaml. test/unit/policy-doc.test.ts regenerates it in memory and
// compares, so the reference cannot drift from the code.
//
//   npm run build && node scripts/policy-doc.mjs           # rewrite docs/policy.md
//   npm run build && node scripts/policy-doc.mjs --check   # exit 1 if it is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Renders a cell safely inside a Markdown table. */
const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s) => `\`${s}\``;

function literal(v) {
  if (v === undefined) return '';
  return code(JSON.stringify(v).replace(/,/g, ', ').replace(/:/g, ': '));
}

/** A readable type with its bounds, from one JSON Schema node. */
function typeOf(js) {
  if (js.anyOf) return js.anyOf.map(typeOf).join(' or ');
  if (js.enum) return `one of ${js.enum.map((v) => code(JSON.stringify(v))).join(', ')}`;
  if (js.type === 'null') return code('null');
  if (js.type === 'array') {
    const items = js.items?.type === 'object' && js.items.properties ? 'objects (below)' : typeOf(js.items ?? {});
    return `list of ${items}${js.minItems ? `, at least ${js.minItems}` : ''}`;
  }
  if (js.type === 'object') {
    if (js.properties) return 'mapping (below)';
    const value = js.additionalProperties && js.additionalProperties !== true ? typeOf(js.additionalProperties) : 'any';
    return `map of name → ${value}`;
  }
  if (js.type === 'string') {
    if (js.format === 'uri') return 'URL';
    return js.pattern ? `string matching ${code(js.pattern)}` : 'string';
  }
  if (js.type === 'number' || js.type === 'integer') {
    const bounds = [];
    if (js.exclusiveMinimum !== undefined) bounds.push(`> ${js.exclusiveMinimum}`);
    if (js.minimum !== undefined) bounds.push(`≥ ${js.minimum}`);
    if (js.maximum !== undefined && js.maximum !== MAX_SAFE) bounds.push(`≤ ${js.maximum}`);
    return `${js.type}${bounds.length ? ` ${bounds.join(', ')}` : ''}`;
  }
  if (js.type === 'boolean') return 'boolean';
  return 'any JSON value';
}

/** The field's describe() line; on a nullable field zod may keep it on the non-null branch. */
function describe(js) {
  return js.description ?? js.anyOf?.find((a) => a.description)?.description ?? '';
}

/** Per-section notes that the schema cannot carry (syntax of patterns and templates). */
const NOTES = {
  'upstreams.<name>.routes[]': 'A route pattern is `[METHOD ]/path`: `*` matches one segment, `{name}` one named segment, `**` the rest of the path.',
  'upstreams.<name>.rateLimits[]':
    'A bucket is a token bucket: `burst` tokens, refilled at `rate` per `per` seconds. Key parts: `client` (X-Client-Id or peer IP), `ip`, `account` (Twilio account in the path, else the Basic user), `basic-user`, `authorization` (a hash of it), `route`, `header:<name>`, `body:<field>`, `body-prefix:<field>:<digits>`.',
  'upstreams.<name>.stubs[]':
    'Templates in stub bodies: `{{sid SM}}` mints a Twilio-style id (prefix + 32 hex) and `{{sid}}` repeats it, `{{uuid}}`, `{{now}}` (RFC 2822, as Twilio), `{{nowIso}}`, `{{param.<name>}}` (a `{name}` path segment), `{{body.<field>}}` (form or JSON, dotted paths), `{{query.<name>}}`. A value that is exactly one template of a missing field is `null`.',
};

/**
 * Walks the JSON Schema into sections, one per mapping (or list of mappings), each a table of
 * its keys. `override` is a parent default that sets some child defaults (idempotency is
 * `{enabled: false}` unless configured).
 */
function collect(js, path, description, sections, override) {
  const rows = [];
  const required = new Set(js.required ?? []);
  const later = [];
  for (const [key, child] of Object.entries(js.properties ?? {})) {
    const full = path ? `${path}.${key}` : key;
    const def = override && key in override ? override[key] : child.default;
    let shown = def === undefined ? (required.has(key) ? 'required' : '—') : literal(def);
    const record = child.type === 'object' && !child.properties && child.additionalProperties?.properties;
    const nested = child.type === 'object' && child.properties;
    const listOf = child.type === 'array' && child.items?.type === 'object' && child.items.properties;
    let type = typeOf(child);
    if (nested) {
      // A mapping's defaults are its keys' defaults, listed in its own table.
      type = `mapping, see ${code(full)}`;
      shown = '';
      later.push(() => collect(child, full, child.description, sections, def));
    } else if (record) {
      type = `map of name → mapping, see ${code(`${full}.<name>`)}`;
      later.push(() => collect(child.additionalProperties, `${full}.<name>`, child.additionalProperties.description ?? child.description, sections));
    } else if (listOf) {
      type = `list of mappings, see ${code(`${full}[]`)}`;
      later.push(() => collect(child.items, `${full}[]`, child.items.description ?? child.description, sections));
    }
    rows.push([code(key), type, shown, describe(child)]);
  }
  sections.push({ path, description, rows });
  for (const f of later) f();
}

function renderSections(sections) {
  const out = [];
  for (const s of sections) {
    out.push(`### ${s.path ? code(s.path) : 'Top level'}`, '');
    if (s.description) out.push(s.description, '');
    if (NOTES[s.path]) out.push(NOTES[s.path], '');
    out.push('| key | type | default | description |', '|---|---|---|---|');
    for (const r of s.rows) out.push(`| ${r.map(cell).join(' | ')} |`);
    out.push('');
  }
  return out;
}

/** `${A:-${B:-x}}` → [{name: 'A', def: '${B:-x}', colon: true}, {name: 'B', def: 'x', …}]. */
function variables(text) {
  const found = [];
  const scan = (s) => {
    for (let i = s.indexOf('${'); i >= 0; i = s.indexOf('${', i + 2)) {
      const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)?/.exec(s.slice(i));
      if (!m) continue;
      let j = i + m[0].length;
      let depth = 1;
      const start = j;
      for (; j < s.length && depth > 0; j++) {
        if (s.startsWith('${', j)) {
          depth++;
          j++;
        } else if (s[j] === '}') depth--;
      }
      const def = m[2] ? s.slice(start, j - 1) : undefined;
      found.push({ name: m[1], def });
      if (def) scan(def);
      i = j - 2;
    }
  };
  scan(text);
  return found;
}

function envTable(policyYaml) {
  const doc = parseDocument(policyYaml);
  const byVar = new Map();
  const walk = (node, path) => {
    if (isMap(node)) for (const p of node.items) walk(p.value, [...path, isScalar(p.key) ? String(p.key.value) : '?']);
    else if (isSeq(node))
      node.items.forEach((n, i) => {
        walk(n, [...path.slice(0, -1), `${path.at(-1)}[${i}]`]);
      });
    else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      for (const v of variables(node.value)) {
        const e = byVar.get(v.name) ?? { def: v.def, keys: [] };
        e.keys.push(path.join('.'));
        byVar.set(v.name, e);
      }
    }
  };
  walk(doc.contents, []);
  const def = (d) => {
    if (d === undefined) return '(none)';
    if (d === '') return '(empty)';
    const inner = /^\$\{([A-Za-z_][A-Za-z0-9_]*)[^]*\}$/.exec(d);
    return inner ? `the value of ${code(inner[1])}` : code(d);
  };
  const out = ['| variable | default | sets |', '|---|---|---|'];
  for (const [name, e] of byVar) out.push(`| ${cell(code(name))} | ${cell(def(e.def))} | ${cell(e.keys.map(code).join(', '))} |`);
  return out;
}

/**
 * The whole reference as Markdown. `schema` is the zod policy schema (src/policy/schema.ts or
 * its compiled dist/ twin); `policyYaml` the text of config/policy.yaml.
 */
export function renderPolicyDoc(schema, policyYaml) {
  const js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });
  const sections = [];
  collect(js, '', undefined, sections);
  return [
    '<!-- Generated by scripts/policy-doc.mjs from src/policy/schema.ts and config/policy.yaml. Do not edit:',
    '     run `npm run build && node scripts/policy-doc.mjs`. test/unit/policy-doc.test.ts fails when this file is stale. -->',
    '',
    '# Policy reference',
    '',
    'Breakwater reads one YAML policy: `config/policy.yaml` unless `--config FILE` names another.',
    '`breakwater validate [--config FILE]` checks it and prints the effective settings; `start` refuses',
    'a bad policy the same way, and a `SIGHUP` reload refuses it while the old policy keeps serving.',
    '',
    '- **Unknown keys are errors**: a misspelt key that is silently ignored is a limit that silently does',
    '  not apply. Every problem is reported at once as `file:line:col path.to.key: message`.',
    '- **Environment.** Any value may use `${VAR}`, `${VAR:-default}` (default when unset or empty) or',
    '  `${VAR-default}` (default only when unset); defaults may nest. `VAR_FILE`, when `VAR` is unset or',
    '  empty, names a file holding the value (Docker and Kubernetes secrets; a trailing newline is dropped).',
    '  A value that is exactly one `${…}` takes the type its text has in YAML (`3` is a number), except',
    '  where the key wants a string.',
    '- **Defaults.** A key left out takes the default below; "required" keys have none.',
    '  Durations are in seconds and may have decimals.',
    '- **Secrets** (`password`, `token`, credentials in `redisUrl`) are never printed by `validate`, never logged,',
    '  and never exported in metrics.',
    '',
    '## Environment variables in the default policy',
    '',
    'The shipped `config/policy.yaml` reads these variables (each also from `<VAR>_FILE`):',
    '',
    ...envTable(policyYaml),
    '',
    '## Keys',
    '',
    ...renderSections(sections),
  ].join('\n');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const root = new URL('../', import.meta.url);
  const { policySchema } = await import(new URL('dist/policy/schema.js', root).href);
  const text = renderPolicyDoc(policySchema, readFileSync(new URL('config/policy.yaml', root), 'utf8'));
  const target = fileURLToPath(new URL('docs/policy.md', root));
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(target, 'utf8');
    } catch {
      // missing counts as stale
    }
    if (current !== text) {
      console.error('docs/policy.md is out of date: run `npm run build && node scripts/policy-doc.mjs`');
      process.exit(1);
    }
  } else {
    writeFileSync(target, text);
    console.log(`wrote ${target}`);
  }
}
