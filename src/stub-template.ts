// Stub body templates (`{{sid SM}}`, `{{body.To}}`, …), compiled once when the policy loads so a bad
// template is a policy error with a line number, not a 500 at request time.
import { randomBytes, randomUUID } from 'node:crypto';

/** What a template may read; the stub stage fills it per request, so templates know no Exchange. */
export interface Scope {
  body: (path: string) => string | undefined;
  query: string;
  params: Record<string, string>;
  sid?: string;
  uuid?: string;
}

export type Render = (s: Scope) => unknown;

const TEMPLATE = /\{\{\s*([^}]+?)\s*\}\}/g;

function expression(expr: string): (s: Scope) => string | undefined {
  const [head, arg] = expr.split(/\s+/);
  if (head === 'sid') {
    // `{{sid SM}}` mints a Twilio-style id (prefix + 32 hex); a bare `{{sid}}` repeats it.
    return (s) => (arg ? (s.sid = arg + randomBytes(16).toString('hex')) : s.sid);
  }
  if (head === 'uuid') return (s) => (s.uuid ??= randomUUID());
  if (head === 'now') return () => new Date().toUTCString().replace('GMT', '+0000');
  if (head === 'nowIso') return () => new Date().toISOString();
  if (head?.startsWith('param.')) {
    const name = head.slice(6);
    return (s) => s.params[name];
  }
  if (head?.startsWith('body.')) {
    const path = head.slice(5);
    return (s) => s.body(path);
  }
  if (head?.startsWith('query.')) {
    const name = head.slice(6);
    return (s) => new URLSearchParams(s.query).get(name) ?? undefined;
  }
  throw new Error(`unknown stub template {{${expr}}}`);
}

export function compileTemplate(value: unknown): Render {
  if (typeof value === 'string') {
    if (!value.includes('{{')) return () => value;
    const whole = /^\{\{\s*([^}]+?)\s*\}\}$/.exec(value);
    if (whole) {
      const fn = expression(whole[1]!);
      return (s) => fn(s) ?? null; // a missing field is JSON null, as Twilio shows absent values
    }
    const parts: (string | ((s: Scope) => string | undefined))[] = [];
    let last = 0;
    for (const m of value.matchAll(TEMPLATE)) {
      parts.push(value.slice(last, m.index), expression(m[1]!));
      last = m.index! + m[0].length;
    }
    parts.push(value.slice(last));
    return (s) => parts.map((p) => (typeof p === 'string' ? p : (p(s) ?? ''))).join('');
  }
  if (Array.isArray(value)) {
    const items = value.map(compileTemplate);
    return (s) => items.map((f) => f(s));
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).map(([k, v]) => [k, compileTemplate(v)] as const);
    return (s) => {
      const out: Record<string, unknown> = {};
      for (const [k, f] of entries) out[k] = f(s);
      return out;
    };
  }
  return () => value;
}
