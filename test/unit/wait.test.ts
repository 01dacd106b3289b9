// The shared poller and port helper (test/support/wait.mjs) every suite waits with: it hands back
// the probe's value, gives up with undefined (never throws) at its deadline or when the process
// it watches has exited, and freePort's port can be listened on.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, waitFor } from '../support/wait.mjs';

describe('waitFor', () => {
  it('resolves with the first truthy value the probe returns', async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : undefined), { timeoutMs: 2000, everyMs: 1 });
    expect(v).toEqual({ n: 3 });
  });

  it('awaits an async probe', async () => {
    expect(await waitFor(async () => 'ready', { timeoutMs: 100 })).toBe('ready');
  });

  it('gives up with undefined once a probe at or after the deadline fails, never throwing', async () => {
    let probes = 0;
    const t0 = Date.now();
    const v = await waitFor(() => (probes++, false), { timeoutMs: 50, everyMs: 5 });
    expect(v).toBeUndefined();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(50);
    expect(probes).toBeGreaterThan(1);
  });

  it('stops early when `exited` settles', async () => {
    let probes = 0;
    const exited = Promise.resolve();
    const v = await waitFor(() => (probes++, false), { timeoutMs: 10_000, everyMs: 5, exited });
    expect(v).toBeUndefined();
    expect(probes).toBeLessThanOrEqual(2);
  });
});

describe('freePort', () => {
  it('returns a loopback port that can be listened on', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const s = net.createServer();
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', resolve);
    });
    expect((s.address() as net.AddressInfo).port).toBe(port);
    await new Promise<void>((r) => s.close(() => r()));
  });
});
