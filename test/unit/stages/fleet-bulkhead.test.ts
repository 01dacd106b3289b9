// The fleet bulkhead stage's feedback, against a recording semaphore: which figure each attempt's
// release carries (Twilio-Concurrent-Requests of that attempt's answer, never a stale one), when the cap is lowered, and which key a request is capped under.
import { describe, expect, it } from 'vitest';
import type { Reply } from '../../../src/pipeline/exchange.js';
import { fleetBulkhead } from '../../../src/stages/fleet-bulkhead.js';
import type { FleetSemaphore } from '../../../src/store/redis-semaphore.js';
import { answer, drain, fakeExchange } from '../support/exchange.js';

function recorder() {
  const released: (number | undefined)[] = [];
  const lowered: string[] = [];
  const accounts: string[] = [];
  const sem: FleetSemaphore = {
    acquire: async (account) => {
      accounts.push(account);
      return { release: (reported?: number) => void released.push(reported) };
    },
    lower: async (account) => void lowered.push(account),
    waiting: () => 0,
  };
  return { sem, released, lowered, accounts };
}

const tick = () => new Promise((r) => setTimeout(r, 0));
const SID = 'AC' + 'a'.repeat(32);
const OVER = [{ status: 400, bodyIncludes: 'Over Concurrency Limit' }];

describe('fleet bulkhead feedback', () => {
  it('releases with the Twilio-Concurrent-Requests of an answer once its body is over, and only that attempt’s', async () => {
    const r = recorder();
    const stage = fleetBulkhead(r.sem, 'twilio', 1000, () => {});
    const ex = fakeExchange({ routePath: `/2010-04-01/Accounts/${SID}/Messages.json` });
    await stage(ex, async () => answer(201, { 'twilio-concurrent-requests': '7' })).then(drain);
    // The next attempt's answer carries none: the 7 from before must not be fed back again.
    await stage(ex, async () => answer(201)).then(drain);
    await stage(ex, async () => answer(201, { 'twilio-concurrent-requests': 'lots' })).then(drain);
    await tick();
    expect(r.released).toEqual([7, undefined, undefined]);
    expect(r.accounts).toEqual([SID, SID, SID]);
    expect(r.lowered).toEqual([]);
  });

  it('reads the figure from a held 429 and lowers the cap', async () => {
    const r = recorder();
    const stage = fleetBulkhead(r.sem, 'twilio', 1000, () => {});
    const held: Reply = answer(429, { 'twilio-concurrent-requests': '12' }, '{"code":20429}');
    await stage(fakeExchange({ routePath: `/2010-04-01/Accounts/${SID}/Calls.json` }), async () => held).then(drain);
    await tick();
    expect(r.released).toEqual([12]);
    expect(r.lowered).toEqual([SID]);
  });

  it('lowers on an answer the policy names as back-pressure, and not on another 400', async () => {
    const r = recorder();
    const stage = fleetBulkhead(r.sem, 'vapi', 1000, () => {}, OVER);
    const auth = 'Bearer secret-key-1';
    const refusal: Reply = answer(400, {}, '{"error":"Over Concurrency Limit"}');
    const bad: Reply = answer(400, {}, '{"error":"Bad Request"}');
    await stage(fakeExchange({ routePath: '/call', authorization: auth }), async () => refusal).then(drain);
    await stage(fakeExchange({ routePath: '/call', authorization: auth }), async () => bad).then(drain);
    await stage(fakeExchange({ routePath: '/call', authorization: 'Bearer other-org' }), async () => answer(201)).then(drain);
    await stage(fakeExchange({ routePath: '/call' }), async () => answer(201)).then(drain);
    await tick();
    // One cap per API key (its org), named by a hash; no credential: the upstream's one cap.
    const [a, b, c, d] = r.accounts;
    expect(a).toMatch(/^vapi:[A-Za-z0-9_-]{16}$/);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(r.accounts.some((k) => k.includes('secret-key-1'))).toBe(false);
    expect(d).toBe('vapi');
    expect(r.lowered).toEqual([a]);
  });
});

describe('fleet bulkhead lease', () => {
  it('is held while the answer streams and given back when its body is over', async () => {
    const r = recorder();
    const stage = fleetBulkhead(r.sem, 'twilio', 1000, () => {});
    const reply = await stage(fakeExchange({ routePath: `/2010-04-01/Accounts/${SID}/Messages.json` }), async () => answer(200, {}, 'x'.repeat(10)));
    await tick();
    expect(r.released).toEqual([]);
    await drain(reply);
    expect(r.released).toEqual([undefined]);
  });
});
