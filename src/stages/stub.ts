// Stub mode's terminal stage: answers from the policy's stubs and never opens a connection.
// Stub bodies are compiled once into template functions; a request only fills them in.
// Injected delay and error rate let a team rehearse a slow or failing Twilio in dev.
import { randomBytes, randomUUID } from 'node:crypto';
import { proxyError } from '../errors.js';
import type { StubPolicy } from '../policy/schema.js';
import { RouteTable } from '../routing/route-table.js';
import { sendBuffered } from '../http/respond.js';
import { clientGone, goneBeforeSending, type Exchange, type Reply } from '../pipeline/exchange.js';
import { bodyField } from './keys.js';

interface Scope {
  ex: Exchange;
  params: Record<string, string>;
  sid?: string;
  uuid?: string;
}

type Render = (s: Scope) => unknown;

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
    return (s) => bodyField(s.ex, path);
  }
  if (head?.startsWith('query.')) {
    const name = head.slice(6);
    return (s) => new URLSearchParams(s.ex.query).get(name) ?? undefined;
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

const STUB_HEADER = ['x-breakwater-stub', 'true'] as const;

export function stub(stubs: readonly StubPolicy[], random: () => number = Math.random): (ex: Exchange) => Promise<Reply> {
  const table = new RouteTable<{ policy: StubPolicy; render: Render }>();
  for (const s of stubs) table.add(s.route, { policy: s, render: compileTemplate(s.body) });

  return async function stubAnswer(ex: Exchange): Promise<Reply> {
    const m = table.match(ex.method, ex.routePath);
    if (!m) return proxyError('stub_missing', { message: `Stub mode is on and no stub matches ${ex.method} ${ex.routePath}.` });
    const s = m.value.policy;
    if (s.delay > 0) {
      await new Promise((r) => setTimeout(r, s.delay * 1000));
      // A delayed stub stands in for a slow upstream: an app that gave up meanwhile is answered
      // nothing, as it would be by the real one.
      if (clientGone(ex)) return goneBeforeSending(ex, 'the stub answered');
    }
    let status = s.status;
    let body: string;
    if (s.errorRate > 0 && random() < s.errorRate) {
      status = s.errorStatus;
      body = JSON.stringify({ code: status, message: 'Injected failure (Breakwater stub errorRate)', status });
    } else {
      const rendered = m.value.render({ ex, params: m.params });
      body = rendered === undefined ? '' : JSON.stringify(rendered);
    }
    const headers: Record<string, string> = body === '' ? { ...s.headers } : { 'content-type': 'application/json', ...s.headers };
    ex.upstreamStatus = status;
    if (ex.capture) {
      ex.capture.status = status;
      ex.capture.headers = { ...headers, 'x-breakwater-stub': 'true' };
      ex.capture.chunks.push(Buffer.from(body));
      ex.capture.bytes = ex.capture.chunks[0]!.length;
    }
    sendBuffered(ex, status, headers, body, STUB_HEADER);
    return { kind: 'sent', status, outcome: 'stub' };
  };
}
