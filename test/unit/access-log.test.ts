import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { accessLog, str } from '../../src/access-log.js';
import { BatchedStdout, createLogger } from '../../src/log.js';
import { fakeExchange } from './support/exchange.js';
import type { Logger } from 'pino';
import type { Exchange } from '../../src/pipeline/exchange.js';

/** The access log as proxy.ts drives it: the series' fixed middle, then the line. */
function writer(log: Logger) {
  const a = accessLog(log);
  return (ex: Exchange, upstream: string, status: number, outcome: string, seconds: number) =>
    a.write(ex, a.segment(upstream, ex.route, ex.method, status, outcome), seconds);
}

/** A logger on a generic stream (the line is built as a string). */
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

/** A logger on Breakwater's own batched stdout (the line is encoded in place). */
function captureBatched() {
  const chunks: Buffer[] = [];
  // The batch buffer is reused after each write: a sink that keeps data must copy it.
  const out = new BatchedStdout({ write: (c) => chunks.push(Buffer.from(c)), flush: (cb) => cb?.(), flushSync: () => {} });
  const log = createLogger('info', out);
  return {
    log,
    get lines() {
      out.flushSync();
      return Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean);
    },
  };
}

describe.each([
  ['a generic stream', capture],
  ['the batched stdout', captureBatched],
])('access line on %s', (_name, capture) => {
  it('is the line pino would write for the same fields', () => {
    const c = capture();
    const log = c.log;
    const ex = fakeExchange({
      requestId: 'req-42',
      route: 'messages.create',
      method: 'POST',
      clientKey: 'app-1',
      retries: 1,
      upstreamSeconds: 0.0123,
      cause: 'ECONNRESET',
      upstreamRequestId: 'RQabc',
      bytesOut: 228,
    });
    writer(log)(ex, 'twilio', 201, 'forwarded', 0.0456);
    log.info(
      {
        reqId: 'req-42',
        upstream: 'twilio',
        route: 'messages.create',
        method: 'POST',
        status: 201,
        outcome: 'forwarded',
        durationMs: 45.6,
        upstreamMs: 12.3,
        bytesIn: 0,
        bytesOut: 228,
        client: 'app-1',
        retries: 1,
        twilioRequestId: 'RQabc',
        cause: 'ECONNRESET',
      },
      'request',
    );
    const lines = c.lines;
    expect(lines).toHaveLength(2);
    const [ours, pinos] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    delete ours!.time;
    delete pinos!.time;
    expect(ours).toEqual(pinos);
    // Same prefix and key order as pino's own lines: level, time, bindings first, msg last.
    expect(lines[0]).toMatch(/^\{"level":"info","time":"[^"]+","svc":"breakwater","reqId":"req-42",/);
    expect(lines[0]!.endsWith(',"msg":"request"}')).toBe(true);
  });

  it("writes pino's time, to the millisecond, across seconds and whatever the digits", () => {
    const c = capture();
    const write = writer(c.log);
    const base = Date.UTC(2026, 11, 4, 2, 59, 59, 0);
    const times = [
      base,
      base + 7,
      base + 45,
      base + 999,
      base + 1000,
      base + 1001,
      base + 1100,
      base + 61_234,
      base + 61_234,
      base + 60_000 * 60 * 24 * 40 + 3,
    ];
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      for (const t of times) {
        vi.setSystemTime(t);
        write(fakeExchange({}), 'twilio', 200, 'forwarded', 0.001);
      }
    } finally {
      vi.useRealTimers();
    }
    expect(c.lines.map((l) => /"time":"([^"]+)"/.exec(l)?.[1])).toEqual(times.map((t) => new Date(t).toISOString()));
  });

  it('leaves out empty optional fields', () => {
    const c = capture();
    writer(c.log)(fakeExchange({ clientKey: '' }), 'none', 404, 'no_route', 0.0001);
    const line = JSON.parse(c.lines[0]!) as Record<string, unknown>;
    for (const k of ['client', 'retries', 'bytesOut', 'cause', 'aborted', 'twilioRequestId']) expect(line).not.toHaveProperty(k);
    expect(line).toMatchObject({ upstream: 'none', status: 404, outcome: 'no_route' });
  });

  it('escapes whatever a client put in a value', () => {
    for (const v of ['plain', 'quo"te', 'back\\slash', 'new\nline', 'tab\t', '\u0000', 'é→🌊', '\ud800', '</script>']) {
      expect(JSON.parse(str(v))).toBe(JSON.parse(JSON.stringify(v)));
    }
    const c = capture();
    writer(c.log)(
      fakeExchange({ clientKey: 'a"b\\c\n{"level":"error"}', cause: 'é→🌊 \u0000', upstreamRequestId: 'x'.repeat(5000) }),
      'twilio',
      200,
      'forwarded',
      0.001,
    );
    const lines = c.lines;
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ cause: 'é→🌊 \u0000', twilioRequestId: 'x'.repeat(5000) });
    expect((JSON.parse(lines[0]!) as { client: string }).client).toBe('a"b\\c\n{"level":"error"}');
  });
});

describe('access line numbers', () => {
  it('prints durations and counts exactly as JavaScript does', () => {
    const c = captureBatched();
    const write = writer(c.log);
    const samples: [number, number, number][] = [];
    let seed = 7;
    const rnd = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    for (let i = 0; i < 300; i++) {
      const seconds = i < 5 ? [0, 0.00004, 0.00005, 1e-9, 1234.56789][i]! : rnd() * 10 ** (rnd() * 6 - 4);
      const bytesOut = Math.floor(rnd() * 10 ** (rnd() * 9));
      const retries = Math.floor(rnd() * 12);
      samples.push([seconds, bytesOut, retries]);
      write(fakeExchange({ bytesOut, retries, upstreamSeconds: seconds / 2 }), 'twilio', 200, 'forwarded', seconds);
    }
    const lines = c.lines.map((l) => JSON.parse(l) as Record<string, number>);
    expect(lines).toHaveLength(samples.length);
    lines.forEach((l, i) => {
      const [seconds, bytesOut, retries] = samples[i]!;
      expect(l.durationMs).toBe(Math.round(seconds * 1e4) / 10);
      expect(l.upstreamMs).toBe(Math.round((seconds / 2) * 1e4) / 10);
      if (bytesOut > 0) expect(l.bytesOut).toBe(bytesOut);
      if (retries > 0) expect(l.retries).toBe(retries);
    });
  });
});
