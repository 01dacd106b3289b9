// compose(): stages run in list order on the way in and unwind in reverse on the way out; a
// stage that answers without calling next stops the chain; each stage sees what the one before
// it passed on; an empty list is the terminal itself.
import { describe, expect, it } from 'vitest';
import { compose } from '../../../src/pipeline/compose.js';
import type { Exchange, Next, Reply, Stage } from '../../../src/pipeline/exchange.js';
import { proxyError } from '../../../src/errors.js';
import { fakeExchange, SENT_200 } from '../support/exchange.js';

function recorder() {
  const log: string[] = [];
  const stage =
    (name: string): Stage =>
    async (ex, next) => {
      log.push(`${name}>`);
      const r = await next(ex);
      log.push(`<${name}`);
      return r;
    };
  const terminal: Next = async () => {
    log.push('terminal');
    return SENT_200;
  };
  return { log, stage, terminal };
}

describe('compose', () => {
  it('runs stages in order and unwinds in reverse', async () => {
    const { log, stage, terminal } = recorder();
    const run = compose([stage('a'), stage('b'), stage('c')], terminal);
    expect(await run(fakeExchange())).toBe(SENT_200);
    expect(log).toEqual(['a>', 'b>', 'c>', 'terminal', '<c', '<b', '<a']);
  });

  it('with no stages is the terminal', async () => {
    const { log, terminal } = recorder();
    expect(await compose([], terminal)(fakeExchange())).toBe(SENT_200);
    expect(log).toEqual(['terminal']);
  });

  it('a stage that answers by itself stops the chain: later stages and the terminal never run', async () => {
    const { log, stage, terminal } = recorder();
    const refusal = proxyError('rate_limited');
    const refuse: Stage = async () => {
      log.push('refuse');
      return refusal;
    };
    const run = compose([stage('a'), refuse, stage('b')], terminal);
    expect(await run(fakeExchange())).toBe(refusal);
    expect(log).toEqual(['a>', 'refuse', '<a']);
  });

  it('each stage gets the exchange the previous one passed on', async () => {
    const seen: Exchange[] = [];
    const swap = fakeExchange({ requestId: 'swapped' });
    const replace: Stage = (_ex, next) => next(swap);
    const look: Stage = (ex, next) => {
      seen.push(ex);
      return next(ex);
    };
    const terminal: Next = async (ex) => {
      seen.push(ex);
      return SENT_200;
    };
    await compose([replace, look], terminal)(fakeExchange());
    expect(seen).toEqual([swap, swap]);
  });

  it('a stage may replace the reply on the way out', async () => {
    const other: Reply = proxyError('upstream_unavailable');
    const wrap: Stage = async (ex, next) => {
      await next(ex);
      return other;
    };
    const { terminal } = recorder();
    expect(await compose([wrap], terminal)(fakeExchange())).toBe(other);
  });

  it('a rejection travels outwards through every stage', async () => {
    const { log, stage } = recorder();
    const run = compose([stage('a'), stage('b')], () => Promise.reject(new Error('terminal failed')));
    await expect(run(fakeExchange())).rejects.toThrow('terminal failed');
    expect(log).toEqual(['a>', 'b>']);
  });

  it('can be run many times: the chain is built once', async () => {
    const { log, stage, terminal } = recorder();
    const run = compose([stage('a')], terminal);
    await run(fakeExchange());
    await run(fakeExchange());
    expect(log).toEqual(['a>', 'terminal', '<a', 'a>', 'terminal', '<a']);
  });
});
