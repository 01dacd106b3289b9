import { afterEach, describe, expect, it, vi } from 'vitest';
import { BatchedStdout, isoTime, type BufferSink } from '../../src/log.js';

function sink() {
  const writes: Buffer[] = [];
  // The batch buffer is reused after each write: a sink that keeps data must copy it.
  const s: BufferSink = { write: (c) => writes.push(Buffer.from(c)), flush: (cb) => cb?.(), flushSync: () => {} };
  return { s, writes };
}

describe('batched stdout', () => {
  it('holds lines briefly and writes them in order, in one write', async () => {
    const { s, writes } = sink();
    const out = new BatchedStdout(s);
    out.write('{"a":1}\n');
    out.write('{"b":"é→"}\n');
    expect(writes).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 120));
    expect(writes).toHaveLength(1);
    expect(writes[0]!.toString('utf8')).toBe('{"a":1}\n{"b":"é→"}\n');
  });

  it('writes at once when the batch would overflow, keeping order', () => {
    const { s, writes } = sink();
    const out = new BatchedStdout(s);
    const line = `${'x'.repeat(1000)}\n`;
    for (let i = 0; i < 100; i++) out.write(line);
    expect(writes.length).toBeGreaterThan(0);
    out.flushSync();
    expect(Buffer.concat(writes).toString()).toBe(line.repeat(100));
  });

  it('reuses its buffer: what a sink was handed is overwritten by the next batch', () => {
    const seen: Buffer[] = [];
    const copies: string[] = [];
    const out = new BatchedStdout({
      write: (c) => {
        seen.push(c);
        copies.push(c.toString());
      },
      flush: (cb) => cb?.(),
      flushSync: () => {},
    });
    out.write('first\n');
    out.flushSync();
    out.write('again\n');
    out.flushSync();
    expect(copies).toEqual(['first\n', 'again\n']);
    // No allocation per flush: both writes were views of the same memory.
    expect(seen[0]!.buffer).toBe(seen[1]!.buffer);
  });

  it('passes a line larger than the batch straight through', () => {
    const { s, writes } = sink();
    const out = new BatchedStdout(s);
    out.write('first\n');
    out.write(`${'y'.repeat(100_000)}\n`);
    out.flushSync();
    expect(Buffer.concat(writes).toString()).toBe(`first\n${'y'.repeat(100_000)}\n`);
  });
});

describe('log timestamps', () => {
  afterEach(() => vi.restoreAllMocks());

  it('are what toISOString prints, across milliseconds, seconds, days and clock steps back', () => {
    let seed = 11;
    const rnd = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const times: number[] = [Date.UTC(2026, 11, 31, 23, 59, 59, 998)];
    for (let i = 0; i < 2000; i++) {
      const last = times[times.length - 1]!;
      const r = rnd();
      // Mostly small steps (same or next millisecond), some jumps forward and back (an NTP step).
      times.push(r < 0.3 ? last : r < 0.8 ? last + Math.floor(rnd() * 5) : r < 0.95 ? last + Math.floor(rnd() * 5000) : last - Math.floor(rnd() * 3000));
    }
    let i = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => times[i]!);
    for (; i < times.length; i++) expect(isoTime()).toBe(`,"time":"${new Date(times[i]!).toISOString()}"`);
  });
});
