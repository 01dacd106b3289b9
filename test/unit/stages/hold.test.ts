// Holding a key after an upstream 429: Retry-After parsing (seconds or HTTP-date), the bounded
// hold table, and the stage that answers 429 upstream_rate_limited locally during a hold.
import { describe, expect, it } from 'vitest';
import type { ProxyError } from '../../../src/errors.js';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { holdSchema } from '../../../src/policy/schema.js';
import { manualClock } from '../../../src/resilience/clock.js';
import { hold, parseRetryAfter } from '../../../src/stages/hold.js';
import { HoldTable } from '../../../src/resilience/hold-table.js';
import { readBody } from '../../../src/pipeline/body.js';
import { answer, fakeExchange } from '../support/exchange.js';

const NOW = Date.parse('2025-01-01T00:00:00Z');

describe('parseRetryAfter', () => {
  const rows: { desc: string; value: string | undefined; want: number | undefined }[] = [
    { desc: 'absent', value: undefined, want: undefined },
    { desc: 'delta-seconds', value: '120', want: 120_000 },
    { desc: 'zero seconds', value: '0', want: 0 },
    { desc: 'decimal seconds', value: '1.5', want: 1500 },
    { desc: 'surrounding whitespace', value: ' 5 ', want: 5000 },
    { desc: 'IMF-fixdate in the future', value: 'Wed, 01 Jan 2025 00:00:30 GMT', want: 30_000 },
    { desc: 'IMF-fixdate in the past → 0', value: 'Tue, 31 Dec 2024 23:59:00 GMT', want: 0 },
    { desc: 'obsolete RFC 850 date', value: 'Wednesday, 01-Jan-25 00:01:00 GMT', want: 60_000 },
    { desc: 'obsolete asctime date', value: 'Wed Jan  1 00:00:10 2025', want: 10_000 },
    { desc: 'garbage', value: 'soon', want: undefined },
    { desc: 'empty', value: '', want: undefined },
    { desc: 'negative seconds are not a delay', value: '-5', want: undefined },
    { desc: 'exponent notation is not delta-seconds', value: '1e3', want: undefined },
    { desc: 'hex is not delta-seconds', value: '0x10', want: undefined },
    { desc: 'a list of numbers is not a date', value: '1, 2', want: undefined },
    { desc: 'a word and a number is not a date', value: 'abc 1', want: undefined },
  ];
  it.each(rows)('$desc: $value', ({ value, want }) => {
    expect(parseRetryAfter(value, NOW)).toBe(want);
  });
});

describe('HoldTable', () => {
  it('never holds more than maxKeys, and keeps the hold just set', () => {
    const t = new HoldTable(2);
    for (const k of ['a', 'b', 'c', 'd', 'e']) {
      t.set(k, { until: 1000, strikes: 1 }, 0);
      expect(t.size).toBeLessThanOrEqual(2);
      expect(t.get(k)?.until).toBe(1000);
    }
  });

  it('re-setting a key refreshes its age', () => {
    const t = new HoldTable(2);
    t.set('a', { until: 1000, strikes: 1 }, 0);
    t.set('b', { until: 1000, strikes: 1 }, 0);
    t.set('a', { until: 2000, strikes: 2 }, 0);
    t.set('c', { until: 1000, strikes: 1 }, 0);
    expect(t.get('b')).toBeUndefined();
    expect(t.size).toBe(2);
    expect(t.get('a')).toEqual({ until: 2000, strikes: 2 });
  });

  it('stays bounded under 10 000 keys', () => {
    const t = new HoldTable(100);
    for (let i = 0; i < 10_000; i++) t.set(`k${i}`, { until: i + 1000, strikes: 1 }, i);
    expect(t.size).toBe(100);
  });

  it('counts only active holds', () => {
    const t = new HoldTable(10);
    t.set('old', { until: 500, strikes: 1 }, 0);
    t.set('new', { until: 5000, strikes: 1 }, 0);
    expect(t.active(1000)).toBe(1);
  });
});

describe('hold stage', () => {
  function setup(policy: Record<string, unknown> = {}) {
    const clock = manualClock(0);
    const table = new HoldTable(100);
    const holds: [string, number][] = [];
    let held = 0;
    const stage = hold(holdSchema.parse({ key: ['account'], jitter: 0, ...policy }), table, {
      clock,
      now: () => NOW + clock(),
      random: () => 0,
      onHold: (k, ms) => holds.push([k, ms]),
      onHeld: () => held++,
    })!;
    const send = async (upstreamStatus: number, retryAfter?: string, account = 'AC1') => {
      const ex = fakeExchange({ upstreamPath: `/2010-04-01/Accounts/${account}/Messages.json` });
      let forwarded = false;
      const reply = await stage(ex, async (e: Exchange): Promise<Reply> => {
        forwarded = true;
        return answer(upstreamStatus, retryAfter === undefined ? {} : { 'retry-after': retryAfter });
      });
      return { reply, forwarded };
    };
    return { clock, send, holds, held: () => held, table };
  }

  it('after a 429 with Retry-After, the account is answered locally until it passes', async () => {
    const { send, clock, holds, held } = setup();
    await send(429, '3');
    expect(holds).toEqual([['AC1', 3000]]);
    const during = await send(200);
    expect(during.forwarded).toBe(false);
    const err = during.reply as ProxyError;
    expect(err.code).toBe('upstream_rate_limited');
    expect(err.headers).toEqual({ 'retry-after': '3' });
    expect(held()).toBe(1);
    clock.advance(3000);
    expect((await send(200)).forwarded).toBe(true);
  });

  it('other accounts are unaffected', async () => {
    const { send } = setup();
    await send(429, '60');
    expect((await send(200, undefined, 'AC2')).forwarded).toBe(true);
  });

  it('a 429 without Retry-After holds for the default, doubling on repeats, capped', async () => {
    const { send, clock, holds } = setup({ defaultHold: 1, maxHold: 3 });
    for (let i = 0; i < 4; i++) {
      await send(429);
      clock.advance(10_000);
    }
    expect(holds.map(([, ms]) => ms)).toEqual([1000, 2000, 3000, 3000]);
  });

  it('a success after the hold clears the strikes', async () => {
    const { send, clock, holds, table } = setup({ defaultHold: 1 });
    await send(429);
    clock.advance(1000);
    await send(200);
    expect(table.get('AC1')).toBeUndefined();
    await send(429);
    expect(holds.map(([, ms]) => ms)).toEqual([1000, 1000]);
  });

  it('Retry-After is capped by maxHold', async () => {
    const { send, holds } = setup({ maxHold: 10 });
    await send(429, '3600');
    expect(holds).toEqual([['AC1', 10_000]]);
  });

  it('a request without a key passes straight through', async () => {
    const { send } = setup({ key: ['header:X-None'] });
    await send(429, '60');
    expect((await send(200)).forwarded).toBe(true);
  });

  it('disabled: no stage', () => {
    expect(hold(holdSchema.parse({ enabled: false }), new HoldTable(1), { clock: manualClock(), onHold() {}, onHeld() {} })).toBeUndefined();
  });

  it('answers with a sent reply it was given', async () => {
    const { send } = setup();
    expect((await send(200)).reply).toMatchObject({ kind: 'answer', status: 200 });
  });
});

describe('hold stage: other back-pressure answers (`also`)', () => {
  const VAPI_ALSO = [{ status: 400, bodyIncludes: 'Over Concurrency Limit' }];
  function setup() {
    const clock = manualClock(0);
    const holds: [string, number][] = [];
    const stage = hold(holdSchema.parse({ key: ['account'], jitter: 0, defaultHold: 2, also: VAPI_ALSO }), new HoldTable(100), {
      clock,
      now: () => NOW + clock(),
      random: () => 0,
      onHold: (k, ms) => holds.push([k, ms]),
      onHeld: () => {},
    })!;
    const send = async (reply: Reply) => {
      const ex = fakeExchange({ upstreamPath: '/2010-04-01/Accounts/AC1/Calls.json' });
      let forwarded = false;
      const out = await stage(ex, async (_e: Exchange) => {
        forwarded = true;
        return reply;
      });
      return { out, forwarded };
    };
    return { clock, send, holds };
  }
  const held400 = (body: string, headers: Record<string, string> = {}): Reply => answer(400, headers, body);

  it("reads a 400's body, then turns Vapi's concurrency refusal into a hold and 429 upstream_rate_limited", async () => {
    const { send, holds, clock } = setup();
    const first = await send(held400('{"error":"Over Concurrency Limit"}'));
    expect(first.out).toMatchObject({ kind: 'error', code: 'upstream_rate_limited', status: 429, headers: { 'retry-after': '2' } });
    expect(holds).toEqual([['AC1', 2000]]);
    // The account is now held locally: nothing is sent.
    const during = await send(held400('{}'));
    expect(during.forwarded).toBe(false);
    expect(during.out).toMatchObject({ code: 'upstream_rate_limited' });
    clock.advance(2000);
    expect((await send(answer(200))).forwarded).toBe(true);
  });

  it("takes the hold from the refusal's own Retry-After when it has one", async () => {
    const { send, holds } = setup();
    await send(held400('{"error":"Over Concurrency Limit"}', { 'retry-after': '5' }));
    expect(holds).toEqual([['AC1', 5000]]);
  });

  it('passes any other 400 through unchanged (its body now in memory), without a hold', async () => {
    const { send, holds } = setup();
    const other = held400('{"message":["phoneNumberId must be a UUID"]}');
    const { out } = await send(other);
    expect(out).toMatchObject({ kind: 'answer', status: 400, source: 'forwarded' });
    expect(out.kind === 'answer' && (await readBody(out.body, 1024)).buf.toString()).toBe('{"message":["phoneNumberId must be a UUID"]}');
    expect(holds).toEqual([]);
  });
});

describe('hold stage: one more send after a short hold (retryWithin)', () => {
  function setup(retryWithin: number, budget = true) {
    const clock = manualClock(0);
    const table = new HoldTable(100);
    const sleeps: number[] = [];
    let resends = 0;
    const stage = hold(holdSchema.parse({ key: ['account'], jitter: 0, retryWithin }), table, {
      clock,
      now: () => NOW + clock(),
      random: () => 0,
      onHold: () => {},
      onHeld: () => {},
      tryResend: () => budget,
      onResend: () => resends++,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock.advance(ms);
      },
    })!;
    /** Sends through the stage; the upstream answers `statuses` in turn. */
    const ends: string[] = [];
    const send = async (statuses: number[], retryAfter?: string) => {
      const ex = fakeExchange({ upstreamPath: '/2010-04-01/Accounts/AC9/Messages.json', method: 'POST' });
      let calls = 0;
      const reply = await stage(ex, async (_e: Exchange): Promise<Reply> => {
        const status = statuses[calls++] ?? 201;
        const a = status === 429 ? answer(status, retryAfter === undefined ? {} : { 'retry-after': retryAfter }, '{"code":20429}') : answer(status);
        a.body.tap({ end: (how) => ends.push(`${status} ${how}`) });
        return a;
      });
      return { reply, calls, ex };
    };
    return { send, sleeps, resends: () => resends, table, ends };
  }

  it('holds the 429 back, waits the hold out and sends once more, whatever the method', async () => {
    const s = setup(2);
    const { reply, calls, ex } = await s.send([429]);
    expect(calls).toBe(2);
    // The 429 was dropped (never written) before the second send; the 201 is left for the writer.
    expect(s.ends).toEqual(['429 complete']);
    expect(s.sleeps).toEqual([1000]);
    expect(reply).toMatchObject({ kind: 'answer', status: 201 });
    expect(ex.retries).toBe(1);
    expect(s.resends()).toBe(1);
    expect(s.table.size).toBe(0); // the 201 ended the hold
  });

  it('does not when the hold is longer than retryWithin, when the budget says no, or when it is off', async () => {
    for (const [s, retryAfter] of [
      [setup(2), '3'],
      [setup(2, false), undefined],
      [setup(0), undefined],
    ] as const) {
      const { reply, calls } = await s.send([429], retryAfter);
      expect(calls).toBe(1);
      expect(reply.kind).toBe('answer');
      expect((reply as { status: number }).status).toBe(429);
      expect(s.sleeps).toEqual([]);
      expect(s.table.size).toBe(1);
    }
  });

  it('waits for a Retry-After equal to retryWithin (jitter aside), and sends at most once more', async () => {
    const s = setup(2);
    const { reply, calls } = await s.send([429, 429, 429], '2');
    expect(calls).toBe(2);
    expect(s.sleeps).toEqual([2000]);
    expect((reply as { status: number }).status).toBe(429);
    expect(s.table.get('AC9')?.strikes).toBe(2);
  });
});
