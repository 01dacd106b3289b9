// Counters and histograms for the series touched on every request. prom-client's labelled
// children re-validate and re-hash their labels on each inc()/observe() (validateLabel,
// hashObject, a fresh object per call), which costs microseconds per request across the four
// per-request series. These keep one child per label tuple holding plain numbers; the registry
// reads them only at scrape time, in prom-client's own exposition format, so /metrics and every
// query against it are unchanged.
import type { Registry } from 'prom-client';

type Labels = Record<string, string>;

interface Options {
  name: string;
  help: string;
  labelNames: readonly string[];
  registers: Registry[];
}

interface Value {
  labels: Labels;
  value: number;
  metricName?: string;
}

abstract class HotMetric<C extends { labels: Labels }> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: 'counter' | 'histogram';
  readonly aggregator = 'sum';
  protected readonly children = new Map<string, C>();

  constructor(opts: Options) {
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames;
    // The registry only needs name, help, type and get(); it accepts this as a metric.
    for (const r of opts.registers) r.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The child for these label values, created once. Callers keep it: this call builds a key. */
  labels(...values: string[]): C {
    const key = values.join('\u0000');
    let c = this.children.get(key);
    if (c === undefined) {
      if (values.length !== this.labelNames.length) throw new Error(`${this.name}: expected ${this.labelNames.length} label values`);
      const labels: Labels = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = values[i]!;
      });
      c = this.child(labels);
      this.children.set(key, c);
    }
    return c;
  }

  reset(): void {
    this.children.clear();
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Value[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  protected abstract child(labels: Labels): C;
  protected abstract values(): Value[];
}

export class CounterChild {
  value = 0;
  constructor(readonly labels: Labels) {}
  inc(n = 1): void {
    this.value += n;
  }
}

export class HotCounter extends HotMetric<CounterChild> {
  readonly type = 'counter';
  protected child(labels: Labels): CounterChild {
    return new CounterChild(labels);
  }
  protected values(): Value[] {
    return [...this.children.values()].map((c) => ({ labels: c.labels, value: c.value }));
  }
}

export class HistogramChild {
  sum = 0;
  count = 0;
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    this.sum += v;
    this.count++;
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]! += 1;
  }
}

export class HotHistogram extends HotMetric<HistogramChild> {
  readonly type = 'histogram';
  private readonly bounds: readonly number[];

  constructor(opts: Options & { buckets: readonly number[] }) {
    super(opts);
    this.bounds = [...opts.buckets].sort((a, b) => a - b);
  }

  protected child(labels: Labels): HistogramChild {
    return new HistogramChild(labels, this.bounds);
  }

  protected values(): Value[] {
    const out: Value[] = [];
    const bucket = `${this.name}_bucket`;
    for (const c of this.children.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += c.counts[i]!;
        out.push({ labels: { le: String(le), ...c.labels }, value: cumulative, metricName: bucket });
      });
      out.push({ labels: { le: '+Inf', ...c.labels }, value: c.count, metricName: bucket });
      out.push({ labels: c.labels, value: c.sum, metricName: `${this.name}_sum` });
      out.push({ labels: c.labels, value: c.count, metricName: `${this.name}_count` });
    }
    return out;
  }
}
