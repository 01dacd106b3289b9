// The admin listener (127.0.0.1 by default): health, readiness, metrics and breaker control.
// It is separate from the proxy port so the app (or anyone who can reach :8080) can never force
// a breaker or read metrics.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Metrics } from './metrics.js';
import type { Proxy } from './proxy.js';

export interface AdminDeps {
  metrics: Metrics;
  proxy(): Proxy;
  ready(): boolean;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function adminHandler(deps: AdminDeps) {
  return function admin(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
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
    const m = /^\/breakers\/([a-z0-9_-]+)\/(open|close|reset)$/.exec(path ?? '');
    if (m) {
      if (method !== 'POST') return json(res, 405, { error: 'use POST' });
      const u = deps.proxy().upstreams.get(m[1]!);
      if (!u) return json(res, 404, { error: `no upstream ${m[1]}` });
      if (m[2] === 'open') u.breaker.forceOpen();
      else if (m[2] === 'close') u.breaker.forceClose();
      else u.breaker.reset();
      return json(res, 200, u.breaker.snapshot());
    }
    json(res, 404, { error: 'not found', routes: ['/healthz', '/readyz', '/metrics', '/breakers', 'POST /breakers/<name>/open|close|reset'] });
  };
}
