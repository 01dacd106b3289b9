// Keys for rate limits and upstream-429 holds, compiled once from the policy's key list
// (`[client]`, `[account]`, `["body:To"]`, `["body-prefix:To:5"]` …). A request lacking a part
// gets no key, and the limit does not apply to it (Envoy's descriptor semantics).
import { createHash } from 'node:crypto';
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

function parseBody(ex: Exchange): URLSearchParams | Record<string, unknown> | null {
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
    return (ex) => bodyField(ex, field!)?.replace(/[^+0-9]/g, '').slice(0, n);
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
