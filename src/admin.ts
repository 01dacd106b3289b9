// The admin listener (127.0.0.1 by default): health, readiness, metrics, breaker control and the
// status page. It is separate from the proxy port so the app (or anyone who can reach :8080)
// can never force a breaker or read metrics.
//
// Two browser-borne attacks reach a loopback listener anyway, and both are refused (SPEC):
// DNS rebinding (a page on evil.example re-pointed at 127.0.0.1 sends `Host: evil.example`),
// and a cross-site form or fetch that needs no preflight. A state change must carry
// X-Breakwater-Admin, which a cross-site page cannot add without a CORS preflight that this
// listener never grants, and must not be a form content type.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Log } from './log.js';
import type { Metrics } from './metrics.js';
import type { Proxy } from './proxy.js';
import type { StatusRecorder } from './status/record.js';
import { summarize } from './status/summary.js';
import { renderPage } from './status/page.js';

export const ADMIN_HEADER = 'x-breakwater-admin';

export interface AdminDeps {
  metrics: Metrics;
  proxy(): Proxy;
  ready(): boolean;
  log?: Log;
  status?: StatusRecorder;
  store?: string;
  storeFallback?: () => boolean;
  now?: () => number;
  /** Host names besides loopback and localhost that may address this listener. */
  names?: readonly string[];
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(text);
}

/** The Host header's name without the port, lower-cased; IPv6 without brackets. */
export function hostName(host: string | undefined): string | undefined {
  if (!host) return undefined;
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? undefined : h.slice(1, end);
  }
  const colon = h.indexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

/**
 * `local` is the address the connection arrived on: an IP-literal Host naming it cannot come
 * from DNS rebinding (which needs the attacker's name in Host), and it is what kubelet probes
 * and Prometheus's pod discovery send.
 */
export function isAllowedHost(host: string | undefined, names: readonly string[] = [], local?: string): boolean {
  const h = hostName(host);
  if (!h) return false;
  if (local && isIP(h) && (h === local || `::ffff:${h}` === local)) return true;
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '::1' || h === '::ffff:127.0.0.1') return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return names.some((n) => n.toLowerCase() === h);
}

// What a browser sends cross-site without a preflight (the CORS "simple" content types).
const FORM_TYPES = /^\s*(application\/x-www-form-urlencoded|multipart\/form-data|text\/plain)\s*(;|$)/i;

/** Why a state-changing request is refused, or undefined when it may proceed. */
export function forgeable(req: IncomingMessage): string | undefined {
  const h = req.headers[ADMIN_HEADER];
  if (typeof h !== 'string' || h.trim() === '') return `state-changing requests need the ${ADMIN_HEADER} header`;
  const ct = req.headers['content-type'];
  if (ct !== undefined && FORM_TYPES.test(ct)) return `form content type ${ct.split(';')[0]} is refused`;
  return undefined;
}

function caller(req: IncomingMessage) {
  return { peer: `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`, userAgent: req.headers['user-agent'] ?? null };
}

export function adminHandler(deps: AdminDeps) {
  const now = deps.now ?? (() => performance.now());
  return function admin(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    if (!isAllowedHost(req.headers.host, deps.names, req.socket.localAddress)) {
      deps.log?.warn(
        { ...caller(req), method, path, host: req.headers.host ?? null },
        'admin request refused: Host is not loopback, localhost or an admin name',
      );
      return json(res, 403, { error: 'forbidden', detail: 'The admin listener answers only to loopback, localhost or a configured admin name in Host.' });
    }
    if (method === 'GET' && path === '/healthz') return json(res, 200, { status: 'ok' });
    if (method === 'GET' && path === '/readyz') return deps.ready() ? json(res, 200, { status: 'ready' }) : json(res, 503, { status: 'draining' });
    if (method === 'GET' && path === '/metrics') {
      deps.proxy().collect();
      deps.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => json(res, 500, { error: String(err) }),
      );
      return;
    }
    if (method === 'GET' && path === '/breakers') {
      // The base breaker of each upstream, then each host-routed destination's, with its scope.
      const breakers = [...deps.proxy().upstreams.values()].flatMap((u) => [
        { ...u.breaker.snapshot(), scope: 'base' },
        ...(u.breakerScopes?.entries() ?? []).map(([scope, cb]) => ({ ...cb.snapshot(), name: u.name, scope })),
      ]);
      return json(res, 200, { breakers });
    }
    if (method === 'GET' && (path === '/status.json' || path === '/')) {
      const summary = deps.status
        ? summarize(deps.proxy(), deps.status, {
            store: deps.store ?? 'memory',
            storeFallback: deps.storeFallback?.() ?? false,
            ready: deps.ready(),
            now: now(),
          })
        : undefined;
      if (path === '/status.json') return summary ? json(res, 200, summary) : json(res, 404, { error: 'status not enabled' });
      const nonce = randomBytes(16).toString('base64');
      const html = renderPage(summary, nonce);
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': Buffer.byteLength(html),
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'DENY',
        'referrer-policy': 'no-referrer',
        // Nothing external, nothing inline but what carries this response's nonce; fetches
        // only to this listener; no framing (clickjacking the force buttons).
        'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      });
      res.end(html);
      return;
    }
    const m = /^\/breakers\/([a-z0-9_-]+)\/(open|close|reset)$/.exec(path ?? '');
    if (m) {
      if (method !== 'POST') return json(res, 405, { error: 'use POST' });
      const refused = forgeable(req);
      if (refused) {
        deps.log?.warn({ ...caller(req), method, path }, `admin action refused: ${refused}`);
        return json(res, 403, { error: 'forbidden', detail: `${refused}; send it with ${ADMIN_HEADER}: 1 and no form body.` });
      }
      const u = deps.proxy().upstreams.get(m[1]!);
      if (!u) return json(res, 404, { error: `no upstream ${m[1]}` });
      const before = u.breaker.stateName;
      if (m[2] === 'open') u.breaker.forceOpen();
      else if (m[2] === 'close') u.breaker.forceClose();
      else u.breaker.reset();
      // Who forced a breaker is the first question in an incident review.
      deps.log?.warn({ ...caller(req), action: m[2], upstream: u.name, before, after: u.breaker.stateName }, `admin: breaker ${u.name} ${m[2]}`);
      return json(res, 200, u.breaker.snapshot());
    }
    json(res, 404, {
      error: 'not found',
      routes: ['/', '/status.json', '/healthz', '/readyz', '/metrics', '/breakers', 'POST /breakers/<name>/open|close|reset'],
    });
  };
}
