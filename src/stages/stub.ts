// Stub mode's terminal stage: answers from the policy's stubs and never opens a connection.
// Stub bodies are compiled once into template functions; a request only fills them in.
// Injected delay and error rate let a team rehearse a slow or failing Twilio in dev.
import { proxyError } from '../errors.js';
import type { StubPolicy } from '../policy/schema.js';
import { RouteTable } from '../routing/route-table.js';
import { bufferedAnswer, clientGone, goneBeforeSending, type Exchange, type Reply } from '../pipeline/exchange.js';
import { bodyField } from '../pipeline/keys.js';
import { compileTemplate, type Render } from '../stub-template.js';
import { sleep } from '../resilience/clock.js';

const STUB_HEADER = ['x-breakwater-stub', 'true'] as const;

export function stub(stubs: readonly StubPolicy[], random: () => number = Math.random): (ex: Exchange) => Promise<Reply> {
  const table = new RouteTable<{ policy: StubPolicy; render: Render }>();
  for (const s of stubs) table.add(s.route, { policy: s, render: compileTemplate(s.body) });

  return async function stubAnswer(ex: Exchange): Promise<Reply> {
    const m = table.match(ex.method, ex.routePath);
    if (!m) return proxyError('stub_missing', { message: `Stub mode is on and no stub matches ${ex.method} ${ex.routePath}.` });
    const s = m.value.policy;
    if (s.delay > 0) {
      await sleep(s.delay);
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
      const rendered = m.value.render({ body: (path) => bodyField(ex, path), query: ex.query, params: m.params });
      body = rendered === undefined ? '' : JSON.stringify(rendered);
    }
    const headers: Record<string, string> = body === '' ? { ...s.headers } : { 'content-type': 'application/json', ...s.headers };
    return bufferedAnswer(status, headers, Buffer.from(body), 'stub', STUB_HEADER);
  };
}
