// Keys for rate limits and upstream-429 holds, compiled once from the policy's key list
// (`[client]`, `[account]`, `["body:To"]`, `["body-prefix:To:5"]` …). A request lacking a part
// gets no key, and the limit does not apply to it (Envoy's descriptor semantics).
import { createHash } from 'node:crypto';
import { proxyError, type ProxyError } from '../errors.js';
import { RouteTable } from '../routing/route-table.js';
import type { Exchange } from './exchange.js';

export type KeyFn = (ex: Exchange) => string | undefined;

/** Headers whose values are secrets: keys built from them are hashed. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'x-api-key', 'x-auth-token']);

const ACCOUNT_IN_PATH = /\/Accounts\/([A-Za-z0-9]{2,64})(?:\/|\.json|$)/;

function basicUser(auth: string | undefined): string | undefined {
  if (auth === undefined || !auth.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i > 0 ? decoded.slice(0, i) : undefined;
}

/** Body fields, parsed once per request from the buffered body (form or JSON). */
export function bodyField(ex: Exchange, path: string): string | undefined {
  const fields = (ex.fields ??= parseBody(ex));
  if (fields === null) return undefined;
  if (fields instanceof URLSearchParams) return fields.get(path) ?? undefined;
  let v: unknown = fields;
  for (const part of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

export function parseBody(ex: Exchange): URLSearchParams | Record<string, unknown> | null {
  if (ex.body === undefined || ex.body.length === 0) return null;
  const type = ex.req.headers['content-type'] ?? '';
  try {
    if (type.includes('json')) {
      const v = JSON.parse(ex.body.toString('utf8')) as unknown;
      return v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : null;
    }
    if (type.includes('x-www-form-urlencoded')) return new URLSearchParams(ex.body.toString('utf8'));
  } catch {
    return null;
  }
  return null;
}

/** The body fields a key list reads (`body:To`, `body-prefix:To:5` → `To`). */
export function keyBodyFields(specs: readonly string[]): string[] {
  const out: string[] = [];
  for (const s of specs) {
    if (s.startsWith('body-prefix:')) out.push(s.split(':')[1]!);
    else if (s.startsWith('body:')) out.push(s.slice(5));
  }
  return out;
}

/** Where a key reads body fields: a limit's route (null: every request) and the fields. */
export interface BodyKeyUse {
  route: string | null;
  key: readonly string[];
}

/**
 * A check run once the body is buffered: a key field given twice is refused, because the proxy
 * and the upstream may read different copies (URLSearchParams.get and Twilio take the first form
 * value, JSON.parse the last duplicate key; a per-recipient cap keyed on one copy lets the other
 * through uncounted). Undefined when no key reads the body: then bodies cost nothing extra.
 */
export function bodyKeyGuard(uses: readonly BodyKeyUse[]): ((ex: Exchange) => ProxyError | undefined) | undefined {
  const scoped: { match: RouteTable<true> | undefined; fields: string[] }[] = [];
  for (const u of uses) {
    const fields = keyBodyFields(u.key);
    if (fields.length === 0) continue;
    let match: RouteTable<true> | undefined;
    if (u.route !== null) {
      match = new RouteTable<true>();
      match.add(u.route, true);
    }
    scoped.push({ match, fields });
  }
  if (scoped.length === 0) return undefined;
  return (ex) => {
    if (ex.body === undefined || ex.body.length === 0) return undefined;
    let fields: string[] | undefined;
    for (const s of scoped) {
      if (s.match && !s.match.match(ex.method, ex.routePath)) continue;
      fields = fields === undefined ? s.fields : fields.concat(s.fields);
    }
    if (fields === undefined) return undefined;
    const bad = repeatedKeyField(ex, fields);
    return bad === undefined
      ? undefined
      : proxyError('bad_request', {
          message: `The body field "${bad}" is given more than once (or under another spelling); a limit key reads it, so it must appear once.`,
        });
  };
}

/**
 * The first of `fields` the body carries more than once, if any. Form names are compared decoded
 * (`%54o` is `To`, as every form parser reads it); spellings other parsers fold into the same
 * field (another case, `To[]`, `To[0]`) are refused too, since which one an upstream reads is not
 * ours to know. JSON: a duplicate object key on the field's path, found in the raw text.
 */
export function repeatedKeyField(ex: Exchange, fields: readonly string[]): string | undefined {
  const parsed = (ex.fields ??= parseBody(ex));
  if (parsed === null) return undefined;
  if (parsed instanceof URLSearchParams) {
    const seen = new Set<string>();
    const wanted = new Map(fields.map((f) => [f.toLowerCase(), f]));
    for (const name of parsed.keys()) {
      const folded = name.includes('[') ? name.toLowerCase().replace(/\[[^\]]*\]$/, '') : name.toLowerCase();
      const field = wanted.get(folded);
      if (field === undefined) continue;
      if (name !== field || seen.has(field)) return field;
      seen.add(field);
    }
    return undefined;
  }
  return jsonDuplicate(ex.body!.toString('utf8'), fields);
}

/** A duplicate JSON object key on one of the paths (`customer.number`), from the raw text. */
function jsonDuplicate(text: string, fields: readonly string[]): string | undefined {
  // Without escapes, a key seen at most once in the whole text cannot be a duplicate: the
  // common body is answered by a few indexOf calls.
  const escapes = text.includes('\\');
  const watched = new Map<string, string>();
  for (const f of fields) {
    const segs = f.split('.');
    if (!escapes && segs.every((s) => once(text, `"${s}"`))) continue;
    for (let i = 1; i <= segs.length; i++) watched.set(segs.slice(0, i).join('.'), f);
  }
  if (watched.size === 0) return undefined;
  return new JsonKeyScan(text, watched).run();
}

function once(text: string, needle: string): boolean {
  const i = text.indexOf(needle);
  return i < 0 || text.indexOf(needle, i + 1) < 0;
}

/** Walks JSON that JSON.parse already accepted; only watched paths are tracked, the rest skipped flat. */
class JsonKeyScan {
  private i = 0;
  constructor(
    private readonly text: string,
    private readonly watched: ReadonlyMap<string, string>,
  ) {}

  run(): string | undefined {
    return this.value('');
  }

  private ws(): void {
    const t = this.text;
    while (this.i < t.length) {
      const c = t.charCodeAt(this.i);
      if (c !== 32 && c !== 9 && c !== 10 && c !== 13) return;
      this.i++;
    }
  }

  private str(): string {
    const t = this.text;
    const start = ++this.i;
    let escaped = false;
    for (;;) {
      const c = t.charCodeAt(this.i);
      if (c === 34) break;
      if (c === 92) {
        escaped = true;
        this.i += 2;
      } else this.i++;
    }
    const raw = t.slice(start, this.i++);
    return escaped ? (JSON.parse(`"${raw}"`) as string) : raw;
  }

  /** A value whose path is watched (root: ''); returns the field a duplicate key breaks. */
  private value(path: string): string | undefined {
    this.ws();
    const t = this.text;
    const c = t.charCodeAt(this.i);
    if (c !== 123 && c !== 91) {
      this.skip();
      return undefined;
    }
    const isObject = c === 123;
    const close = isObject ? 125 : 93;
    this.i++;
    this.ws();
    if (t.charCodeAt(this.i) === close) {
      this.i++;
      return undefined;
    }
    const seen = isObject ? new Set<string>() : undefined;
    for (let n = 0; ; n++) {
      let child: string;
      this.ws();
      if (seen !== undefined) {
        const k = this.str();
        this.ws();
        this.i++; // ':'
        child = path === '' ? k : `${path}.${k}`;
        if (this.watched.has(child)) {
          if (seen.has(k)) return this.watched.get(child);
          seen.add(k);
        }
      } else child = path === '' ? String(n) : `${path}.${n}`;
      if (this.watched.has(child)) {
        const bad = this.value(child);
        if (bad !== undefined) return bad;
      } else this.skip();
      this.ws();
      if (t.charCodeAt(this.i++) !== 44) return undefined; // ',' or the closing bracket
    }
  }

  /** Skips one value without recursion (a deep unwatched nest costs no stack). */
  private skip(): void {
    const t = this.text;
    this.ws();
    let depth = 0;
    while (this.i < t.length) {
      const c = t.charCodeAt(this.i);
      if (c === 34) {
        this.str();
        if (depth === 0) return;
        continue;
      }
      if (c === 123 || c === 91) depth++;
      else if (c === 125 || c === 93) {
        if (depth === 0) return; // the end of the enclosing container: not ours to eat
        depth--;
        if (depth === 0) {
          this.i++;
          return;
        }
      } else if (depth === 0 && (c === 44 || c === 32 || c === 9 || c === 10 || c === 13)) return;
      this.i++;
    }
  }
}

function part(spec: string): KeyFn {
  if (spec === 'client') return (ex) => ex.clientKey;
  if (spec === 'ip') return (ex) => ex.clientIp;
  if (spec === 'route') return (ex) => ex.route;
  if (spec === 'basic-user') return (ex) => basicUser(ex.authorization);
  if (spec === 'account') return (ex) => ACCOUNT_IN_PATH.exec(ex.upstreamPath)?.[1] ?? basicUser(ex.authorization);
  // The key is stored and logged; a hash keeps the credential itself out of both.
  if (spec === 'authorization') {
    // Nearly every request carries the same credential (often the injected one): hash it once.
    let lastAuth: string | undefined;
    let lastHash = '';
    return (ex) => {
      const auth = ex.authorization;
      if (auth === undefined) return '';
      if (auth !== lastAuth) {
        lastHash = createHash('sha256').update(auth).digest('base64url').slice(0, 16);
        lastAuth = auth;
      }
      return lastHash;
    };
  }
  if (spec.startsWith('header:')) {
    const name = spec.slice(7).toLowerCase();
    // A credential header's value would land in log lines and Redis key names: key on its hash.
    if (CREDENTIAL_HEADERS.has(name)) {
      let last: string | undefined;
      let lastHash = '';
      return (ex) => {
        const v = ex.req.headers[name];
        if (typeof v !== 'string') return undefined;
        if (v !== last) {
          lastHash = createHash('sha256').update(v).digest('base64url').slice(0, 16);
          last = v;
        }
        return lastHash;
      };
    }
    return (ex) => {
      const v = ex.req.headers[name];
      return typeof v === 'string' ? v : undefined;
    };
  }
  if (spec.startsWith('body-prefix:')) {
    const [, field, digits] = spec.split(':');
    const n = Number(digits);
    return (ex) =>
      bodyField(ex, field!)
        ?.replace(/[^+0-9]/g, '')
        .slice(0, n);
  }
  if (spec.startsWith('body:')) {
    const field = spec.slice(5);
    return (ex) => bodyField(ex, field);
  }
  throw new Error(`unknown key part ${spec}`);
}

export function keyFn(specs: readonly string[]): KeyFn {
  const parts = specs.map(part);
  if (parts.length === 1) return parts[0]!;
  return (ex) => {
    let key = '';
    for (const p of parts) {
      const v = p(ex);
      if (v === undefined) return undefined;
      key += key === '' ? v : `\u0000${v}`;
    }
    return key;
  };
}

/** True when the key came from a body field holding a phone number: mask it in logs. */
export function isPhoneKey(specs: readonly string[]): boolean {
  return specs.some((s) => s.startsWith('body'));
}

/** `+15558675310` → `*******5310`: the last four digits are enough to correlate. */
export function maskPhone(v: string): string {
  return v.length <= 4 ? '****' : `${'*'.repeat(v.length - 4)}${v.slice(-4)}`;
}

const PHONE = /^\+?\d{6,}$/;
const SID = /^(AC|SK|MG|PN)[0-9a-fA-F]{32}$/;
const SID_IN = /\b(AC|SK|MG|PN)[0-9a-fA-F]{28}([0-9a-fA-F]{4})\b/g;

/**
 * A key or client id as a log line may show it: phone numbers to their last four digits, Twilio
 * SIDs (accounts, API keys, services, numbers) to their prefix and last four, anywhere in a
 * composite key. Cheap for the common case: only strings holding a digit run or a SID are touched.
 */
export function maskKey(v: string): string {
  if (PHONE.test(v)) return maskPhone(v);
  if (SID.test(v)) return `${v.slice(0, 2)}…${v.slice(-4)}`;
  if (v.length >= 34 && v.includes('|')) return v.split('|').map(maskKey).join('|');
  return v.length >= 34 ? v.replace(SID_IN, '$1…$2') : v;
}
