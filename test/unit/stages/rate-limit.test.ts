// The rate-limit stage over the memory store with a manual clock: the 429 reply, Retry-After
// rounding, the IETF RateLimit / RateLimit-Policy field values, every limit having to allow,
// and shadow limits that only count.
import { describe, expect, it } from 'vitest';
import type { ProxyError } from '../../../src/errors.js';
import type { Exchange, Reply } from '../../../src/pipeline/exchange.js';
import { rateLimitSchema, type RateLimitPolicy } from '../../../src/policy/schema.js';
import { manualClock } from '../../../src/resilience/clock.js';
import { rateLimit } from '../../../src/stages/rate-limit.js';
import { memoryStore } from '../../../src/store/store.js';
import { fakeExchange, SENT_200 } from '../support/exchange.js';

type Input = Parameters<typeof rateLimitSchema.parse>[0];

function setup(limits: Input[]) {
  const clock = manualClock(0);
  const store = memoryStore({ maxKeys: 1000, idleMs: 3_600_000, clock });
  const counts = new Map<string, number>();
  const logs: { fields: Record<string, unknown>; msg: string }[] = [];
  const sleeps: number[] = [];
  const collectors: (() => void)[] = [];
  const keyGauges = new Map<string, number>();
  // These tests read the fields on allowed answers too; the default (429s only) has its own test.
  const policies: RateLimitPolicy[] = limits.map((l) => rateLimitSchema.parse({ headers: 'always', ...(l as object) }));
  const stage = rateLimit('twilio', policies, {
    store,
    memory: store,
    counter: (limit, outcome) => ({ inc: () => counts.set(`${limit}/${outcome}`, (counts.get(`${limit}/${outcome}`) ?? 0) + 1) }),
    log: (fields, msg) => logs.push({ fields, msg }),
    collect: (read) => collectors.push(read),
    keys: (limit) => ({ set: (n) => keyGauges.set(limit, n) }),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  })!;
  let forwarded = 0;
  const next = async (_ex: Exchange): Promise<Reply> => {
    forwarded++;
    return SENT_200;
  };
  const send = async (init: Parameters<typeof fakeExchange>[0] = {}) => {
    const ex = fakeExchange(init);
    const reply = await stage(ex, next);
    return { ex, reply };
  };
  const scrape = () => {
    for (const read of collectors) read();
    return keyGauges;
  };
  return { clock, send, counts, logs, sleeps, scrape, forwarded: () => forwarded };
}

const asError = (r: Reply) => {
  expect(r.kind).toBe('error');
  return r as ProxyError;
};

describe('rateLimit stage: 5 per minute', () => {
  const FIVE = { name: 'default', rate: 5, per: 60 };

  it('allows the burst, then answers 429 rate_limited with the IETF fields', async () => {
    const { send, forwarded } = setup([FIVE]);
    for (let i = 0; i < 5; i++) expect((await send()).reply).toBe(SENT_200);
    const { ex, reply } = await send();
    const err = asError(reply);
    expect(err.code).toBe('rate_limited');
    expect(err.status).toBe(429);
    expect(err.headers).toEqual({ 'retry-after': '12' });
    expect(ex.rateLimit).toBe('"default";r=0;t=12');
    expect(ex.rateLimitPolicy).toBe('"default";q=5;w=60');
    expect(forwarded()).toBe(5);
  });

  it('allowed responses carry RateLimit with the remaining quota', async () => {
    const { send } = setup([FIVE]);
    const seen: string[] = [];
    for (let i = 0; i < 5; i++) seen.push((await send()).ex.rateLimit!);
    expect(seen).toEqual(['"default";r=4;t=12', '"default";r=3;t=24', '"default";r=2;t=36', '"default";r=1;t=48', '"default";r=0;t=60']);
    expect((await send()).ex.rateLimitPolicy).toBe('"default";q=5;w=60');
  });

  const resetRows = [
    { desc: 'no time passed', advance: 0, want: '"default";r=3;t=24' },
    { desc: '11 s after the first: one token nearly back', advance: 11_000, want: '"default";r=3;t=13' },
    { desc: '6 s after the first', advance: 6_000, want: '"default";r=3;t=18' },
  ];
  it.each(resetRows)('RateLimit t on an allowed response is the whole seconds until full: $desc', async ({ advance, want }) => {
    const { send, clock } = setup([FIVE]);
    await send();
    clock.advance(advance);
    expect((await send()).ex.rateLimit).toBe(want);
  });

  const rounding = [
    { desc: 'a full token period away: 12 s', advance: 0, want: '12' },
    { desc: 'a fractional wait rounds up', advance: 500, want: '12' },
    { desc: '0.5 s left rounds up to 1', advance: 11_500, want: '1' },
    { desc: 'a sliver of a millisecond left is 1, never 0', advance: 11_999.9, want: '1' },
    { desc: 'exactly 1 s left is 1', advance: 11_000, want: '1' },
    { desc: '1.001 s left is 2', advance: 10_999, want: '2' },
  ];
  it.each(rounding)('Retry-After: $desc', async ({ advance, want }) => {
    const { send, clock } = setup([FIVE]);
    for (let i = 0; i < 5; i++) await send();
    clock.advance(advance);
    const { ex, reply } = await send();
    expect(asError(reply).headers!['retry-after']).toBe(want);
    expect(ex.rateLimit).toBe(`"default";r=0;t=${want}`);
  });

  it('Retry-After is the real wait for a token: after it, the request passes', async () => {
    const { send, clock } = setup([{ name: 'default', rate: 7, per: 60 }]);
    for (let i = 0; i < 7; i++) await send();
    const wait = Number(asError((await send()).reply).headers!['retry-after']);
    expect(wait).toBe(9); // 60/7 = 8.57 s, rounded up
    clock.advance(wait * 1000 - 1000);
    expect((await send()).reply.kind).toBe('error');
    clock.advance(1000);
    expect((await send()).reply).toBe(SENT_200);
  });

  it('keys each client separately', async () => {
    const { send } = setup([{ name: 'default', rate: 1, per: 60 }]);
    expect((await send({ clientKey: 'a' })).reply).toBe(SENT_200);
    expect((await send({ clientKey: 'a' })).reply.kind).toBe('error');
    expect((await send({ clientKey: 'b' })).reply).toBe(SENT_200);
  });

  it('counts allowed and limited decisions', async () => {
    const { send, counts } = setup([{ name: 'default', rate: 2, per: 60 }]);
    for (let i = 0; i < 5; i++) await send();
    expect(counts.get('default/allowed')).toBe(2);
    expect(counts.get('default/limited')).toBe(3);
  });

  it('exports the number of local keys per limit at scrape time', async () => {
    const { send, scrape } = setup([FIVE]);
    for (const clientKey of ['a', 'b', 'c']) await send({ clientKey });
    expect(scrape().get('default')).toBe(3);
  });

  it('a burst larger than the rate widens the policy window', async () => {
    const { send } = setup([{ name: 'default', rate: 60, per: 60, burst: 120 }]);
    expect((await send()).ex.rateLimitPolicy).toBe('"default";q=120;w=120');
  });
});

describe('rateLimit stage: which answers carry the RateLimit fields', () => {
  it('by default an allowed answer carries RateLimit (what remains), the 429 both fields', async () => {
    expect(rateLimitSchema.parse({ name: 'x', rate: 1 }).headers).toBe('remaining');
    const { send } = setup([{ name: 'default', rate: 2, per: 60, headers: 'remaining' }]);
    const { ex, reply } = await send();
    expect(reply.kind).toBe('answer');
    expect(ex.rateLimit).toMatch(/^"default";r=1;t=\d+$/);
    expect(ex.rateLimitPolicy).toBeUndefined();
    await send();
    const refused = await send();
    expect(refused.ex.rateLimit).toMatch(/^"default";r=0;t=\d+$/);
    expect(refused.ex.rateLimitPolicy).toBe('"default";q=2;w=60');
  });

  it('limited: only the 429 (Envoy local rate limit): an allowed answer carries none', async () => {
    const { send } = setup([{ name: 'default', rate: 2, per: 60, headers: 'limited' }]);
    for (let i = 0; i < 2; i++) {
      const { ex, reply } = await send();
      expect(reply.kind).toBe('answer');
      expect(ex.rateLimit).toBeUndefined();
      expect(ex.rateLimitPolicy).toBeUndefined();
    }
    const { ex } = await send();
    expect(ex.rateLimit).toMatch(/^"default";r=0;t=\d+$/);
    expect(ex.rateLimitPolicy).toBe('"default";q=2;w=60');
  });

  it('always: allowed answers report the limit with the fewest tokens left among those that say always', async () => {
    const { send } = setup([
      { name: 'quiet', rate: 1, per: 60, headers: 'limited' },
      { name: 'loud', rate: 5, per: 60, headers: 'always' },
    ]);
    const { ex } = await send();
    expect(ex.rateLimit).toMatch(/^"loud";r=4;t=\d+$/);
    expect(ex.rateLimitPolicy).toBe('"loud";q=5;w=60');
  });
});

describe('rateLimit stage: several limits', () => {
  const limits = [
    { name: 'per-route', rate: 1, per: 60, route: 'POST /2010-04-01/Accounts/*/Messages.json' },
    { name: 'upstream', rate: 3, per: 60 },
  ];
  const post = { method: 'POST', routePath: '/2010-04-01/Accounts/AC1/Messages.json' };
  const get = { method: 'GET', routePath: '/2010-04-01/Accounts/AC1/Messages.json' };

  it('every limit that applies must allow the request', async () => {
    const { send, forwarded } = setup(limits);
    expect((await send(post)).reply).toBe(SENT_200);
    const second = await send(post);
    expect(asError(second.reply).code).toBe('rate_limited');
    expect(second.ex.rateLimit).toBe('"per-route";r=0;t=60');
    expect(second.ex.rateLimitPolicy).toBe('"per-route";q=1;w=60');
    expect(forwarded()).toBe(1);
  });

  it('a route-scoped limit does not touch other routes', async () => {
    const { send } = setup(limits);
    await send(post);
    expect((await send(get)).reply).toBe(SENT_200);
  });

  it('the upstream-wide limit refuses once its own budget is spent, whatever the route', async () => {
    const { send } = setup(limits);
    await send(post); // upstream 2 left
    await send(get); // 1 left
    await send(get); // 0 left
    const r = await send(get);
    expect(asError(r.reply).code).toBe('rate_limited');
    expect(r.ex.rateLimit).toBe('"upstream";r=0;t=20');
  });

  it('RateLimit on an allowed response names the tightest limit', async () => {
    const { send } = setup(limits);
    const r = await send(post);
    expect(r.ex.rateLimit).toBe('"per-route";r=0;t=60');
    const g = await send(get);
    expect(g.ex.rateLimit).toBe('"upstream";r=1;t=40');
  });

  it('a request one limit refuses gives back the tokens other limits granted it', async () => {
    // Upstream-wide limit first, so it grants before the route limit refuses.
    const { send, forwarded } = setup([limits[1]!, limits[0]!]);
    expect((await send(post)).reply).toBe(SENT_200); // upstream: 2 left; route: 0 left
    for (let i = 0; i < 3; i++) expect(asError((await send(post)).reply).code).toBe('rate_limited');
    // The refused POSTs cost nothing upstream-wide: two GETs still pass.
    expect((await send(get)).reply).toBe(SENT_200);
    expect((await send(get)).reply).toBe(SENT_200);
    expect(asError((await send(get)).reply).code).toBe('rate_limited');
    expect(forwarded()).toBe(3);
  });

  it('a request lacking a key part skips that limit', async () => {
    const { send } = setup([{ name: 'by-tenant', rate: 1, per: 60, key: ['header:X-Tenant'] }]);
    for (let i = 0; i < 3; i++) expect((await send()).reply).toBe(SENT_200);
    await send({ headers: { 'x-tenant': 't1' } });
    expect((await send({ headers: { 'x-tenant': 't1' } })).reply.kind).toBe('error');
  });
});

describe('rateLimit stage: shadow mode', () => {
  it('never refuses, counts and logs would-be rejections', async () => {
    const { send, counts, logs, forwarded } = setup([{ name: 'trial', rate: 1, per: 60, shadow: true }]);
    for (let i = 0; i < 4; i++) expect((await send()).reply).toBe(SENT_200);
    expect(forwarded()).toBe(4);
    expect(counts.get('trial/shadow_limited')).toBe(3);
    expect(counts.get('trial/limited')).toBeUndefined();
    expect(logs).toHaveLength(3);
    expect(logs[0]!.fields).toMatchObject({ limit: 'trial', key: 'client-a', upstream: 'twilio' });
  });

  it('a shadow limit sets no RateLimit header of its own', async () => {
    const { send } = setup([{ name: 'trial', rate: 1, per: 60, shadow: true }]);
    expect((await send()).ex.rateLimit).toBeUndefined();
  });

  it('an enforced limit beside a shadow one still refuses', async () => {
    const { send } = setup([
      { name: 'trial', rate: 1, per: 60, shadow: true },
      { name: 'default', rate: 2, per: 60 },
    ]);
    await send();
    await send();
    expect(asError((await send()).reply).code).toBe('rate_limited');
  });

  it('a phone number used as a key is masked in the shadow log', async () => {
    const { send, logs } = setup([{ name: 'to', rate: 1, per: 60, shadow: true, key: ['body:To'] }]);
    const body = Buffer.from('To=%2B15558675310&Body=hi');
    const init = { body, headers: { 'content-type': 'application/x-www-form-urlencoded' } };
    await send(init);
    await send(init);
    expect(logs[0]!.fields['key']).toBe('********5310');
    expect(JSON.stringify(logs)).not.toContain('8675310');
  });
});

describe('rateLimit stage: shaping', () => {
  it('delays within maxDelay instead of refusing, then refuses', async () => {
    const { send, sleeps, counts } = setup([{ name: 'pacing', rate: 1, per: 1, burst: 1, maxDelay: 2 }]);
    const replies = [];
    for (let i = 0; i < 4; i++) replies.push((await send()).reply);
    expect(replies.map((r) => r.kind)).toEqual(['answer', 'answer', 'answer', 'error']);
    expect(sleeps).toEqual([1000, 2000]);
    expect(counts.get('pacing/delayed')).toBe(2);
  });
});

it('no limits: no stage', () => {
  const clock = manualClock();
  const store = memoryStore({ maxKeys: 1, idleMs: 1, clock });
  expect(rateLimit('x', [], { store, memory: store, counter: () => ({ inc() {} }), log() {}, collect() {}, keys: () => ({ set() {} }) })).toBeUndefined();
});
