// The status page's rolling minute: counts by outcome, the window forgetting old seconds.
import { describe, expect, it } from 'vitest';
import { RollingStats } from '../../../src/status/stats.js';

describe('RollingStats', () => {
  it('counts cache hits, replays and rate-limit refusals per route, and forgets seconds older than a minute', () => {
    let now = 1_000_000;
    const stats = new RollingStats(() => now);
    stats.record('vapi', 'assistant.fetch', { status: 200, outcome: 'forwarded', seconds: 0.05 });
    stats.record('vapi', 'assistant.fetch', { status: 200, outcome: 'cached', seconds: 0.001 });
    stats.record('vapi', 'assistant.fetch', { status: 200, outcome: 'cached', seconds: 0.001 });
    stats.record('vapi', 'call.create', { status: 201, outcome: 'replayed', seconds: 0.001 });
    stats.record('vapi', 'call.create', { status: 429, outcome: 'rate_limited', seconds: 0.001 });
    const [fetch, create] = stats.window();
    expect(fetch).toMatchObject({ route: 'assistant.fetch', requests: 3, cacheHits: 2, replays: 0, rateLimited: 0 });
    expect(create).toMatchObject({ route: 'call.create', requests: 2, cacheHits: 0, replays: 1, rateLimited: 1 });
    now += 61_000;
    expect(stats.window()).toEqual([]);
  });
});
