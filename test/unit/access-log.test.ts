import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { accessLog, str } from '../../src/access-log.js';
import { createLogger } from '../../src/log.js';
import { fakeExchange } from './support/exchange.js';

function capture() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { log: createLogger('info', sink), lines };
}

describe('access line', () => {
  it('is the line pino would write for the same fields', () => {
    const { log, lines } = capture();
    const ex = fakeExchange({ requestId: 'req-42', route: 'messages.create', method: 'POST', clientKey: 'app-1', retries: 1, upstreamSeconds: 0.0123, cause: 'ECONNRESET', upstreamRequestId: 'RQabc', bytesOut: 228 });
    accessLog(log)(ex, 'twilio', 201, 'forwarded', 0.0456);
    log.info({ reqId: 'req-42', upstream: 'twilio', route: 'messages.create', method: 'POST', status: 201, outcome: 'forwarded', durationMs: 45.6, upstreamMs: 12.3, bytesIn: 0, bytesOut: 228, client: 'app-1', retries: 1, twilioRequestId: 'RQabc', cause: 'ECONNRESET' }, 'request');
    expect(lines).toHaveLength(2);
    const [ours, pinos] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    delete ours!.time;
    delete pinos!.time;
    expect(ours).toEqual(pinos);
    // Same prefix and key order as pino's own lines: level, time, bindings first, msg last.
    expect(lines[0]).toMatch(/^\{"level":"info","time":"[^"]+","svc":"breakwater","reqId":"req-42",/);
    expect(lines[0]!.endsWith(',"msg":"request"}')).toBe(true);
  });

  it('leaves out empty optional fields', () => {
    const { log, lines } = capture();
    accessLog(log)(fakeExchange({ clientKey: '' }), 'none', 404, 'no_route', 0.0001);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    for (const k of ['client', 'retries', 'bytesOut', 'cause', 'aborted', 'twilioRequestId']) expect(line).not.toHaveProperty(k);
    expect(line).toMatchObject({ upstream: 'none', status: 404, outcome: 'no_route' });
  });

  it('escapes whatever a client put in a value', () => {
    for (const v of ['plain', 'quo"te', 'back\\slash', 'new\nline', 'tab\t', '\u0000', 'é→🌊', '\ud800', '</script>']) {
      expect(JSON.parse(str(v))).toBe(JSON.parse(JSON.stringify(v)));
    }
    const { log, lines } = capture();
    accessLog(log)(fakeExchange({ clientKey: 'a"b\\c\n{"level":"error"}' }), 'twilio', 200, 'forwarded', 0.001);
    expect(lines).toHaveLength(1);
    expect((JSON.parse(lines[0]!) as { client: string }).client).toBe('a"b\\c\n{"level":"error"}');
  });
});
