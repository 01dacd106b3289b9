import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram } from '../../src/metric-types.js';

// The hot series must expose exactly what prom-client would: dashboards and alerts depend on it.
describe('HotCounter / HotHistogram', () => {
  const buckets = [0.005, 0.05, 0.5, 5];
  const observations = [0.001, 0.005, 0.02, 0.7, 9, 0.05, 0.049];

  it('a histogram exposes the same text as prom-client for the same observations', async () => {
    const a = new Registry();
    const b = new Registry();
    const ref = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['upstream', 'route'], buckets, registers: [a] });
    const hot = new HotHistogram({ name: 'x_seconds', help: 'h', labelNames: ['upstream', 'route'], buckets, registers: [b] });
    for (const v of observations) {
      ref.labels('twilio', 'messages.create').observe(v);
      hot.labels('twilio', 'messages.create').observe(v);
    }
    ref.labels('vapi', 'call.create').observe(1);
    hot.labels('vapi', 'call.create').observe(1);
    expect(await b.metrics()).toBe(await a.metrics());
  });

  it('a counter exposes the same text as prom-client', async () => {
    const a = new Registry();
    const b = new Registry();
    const ref = new Counter({ name: 'y_total', help: 'h', labelNames: ['upstream', 'status'], registers: [a] });
    const hot = new HotCounter({ name: 'y_total', help: 'h', labelNames: ['upstream', 'status'], registers: [b] });
    for (const [u, s, n] of [
      ['twilio', '200', 3],
      ['twilio', '503', 1],
      ['vapi', '200', 2],
    ] as const) {
      ref.labels(u, s).inc(n);
      for (let i = 0; i < n; i++) hot.labels(u, s).inc();
    }
    expect(await b.metrics()).toBe(await a.metrics());
  });

  it('returns the same child for the same label values, and refuses a wrong label count', () => {
    const hot = new HotCounter({ name: 'z_total', help: 'h', labelNames: ['upstream'], registers: [] });
    expect(hot.labels('twilio')).toBe(hot.labels('twilio'));
    expect(() => hot.labels('twilio', 'extra')).toThrow(/expected 1 label/);
  });

  it('ignores a non-finite observation instead of corrupting the sum', async () => {
    const r = new Registry();
    const hot = new HotHistogram({ name: 'w_seconds', help: 'h', labelNames: ['u'], buckets, registers: [r] });
    hot.labels('a').observe(Number.NaN);
    hot.labels('a').observe(0.01);
    expect(await r.metrics()).toContain('w_seconds_count{u="a"} 1');
    expect(await r.metrics()).toContain('w_seconds_sum{u="a"} 0.01');
  });
});
