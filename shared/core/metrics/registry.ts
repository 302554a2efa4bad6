/**
 * A small Prometheus registry: counters, gauges and histograms with fixed buckets and labels, rendered in
 * the text exposition format (version 0.0.4) by hand, so the server needs no metrics dependency. Pure: no
 * I/O, no clock; the telemetry adapter feeds it and the server door renders it on `GET /metrics`.
 *
 * @example
 * const registry = new MetricsRegistry();
 * const requests = registry.counter('app_requests_total', 'Requests answered.', ['model', 'outcome']);
 * requests.inc({ model: 'linear', outcome: 'success' });
 * registry.render(); // '# HELP app_requests_total Requests answered.\n# TYPE app_requests_total counter\n…'
 */

/** Label values by label name; every metric takes exactly the label names it was declared with. */
export type Labels = Readonly<Record<string, string>>;

/** The `Content-Type` of {@link MetricsRegistry.render}'s output. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric<Value> {
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  /** Series by their label values joined with NUL, in first-seen order. */
  protected readonly series = new Map<string, { readonly labels: readonly string[]; value: Value }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!METRIC_NAME.test(name)) throw new RangeError(`'${name}' is not a valid metric name`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith('__') || label === 'le') {
        throw new RangeError(`metric '${name}': '${label}' is not a valid label name`);
      }
    }
  }

  protected abstract initial(): Value;

  protected entry(labels: Labels): { readonly labels: readonly string[]; value: Value } {
    const values = this.labelNames.map((name) => {
      const value = labels[name];
      if (value === undefined) throw new RangeError(`metric '${this.name}' needs the label '${name}'`);
      return value;
    });
    if (Object.keys(labels).length !== values.length) {
      throw new RangeError(`metric '${this.name}' takes the labels ${this.labelNames.join(', ')} only`);
    }
    const key = values.join('\u0000');
    let entry = this.series.get(key);
    if (entry === undefined) {
      entry = { labels: values, value: this.initial() };
      this.series.set(key, entry);
    }
    return entry;
  }

  /** Appends this metric's lines to `lines`: HELP, TYPE, then one line per series (or bucket). */
  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    for (const { labels, value } of this.series.values()) this.renderSeries(lines, labels, value);
  }

  protected abstract renderSeries(lines: string[], labels: readonly string[], value: Value): void;

  protected labelText(values: readonly string[], extra?: readonly [string, string]): string {
    const pairs = this.labelNames.map((name, i) => `${name}="${escapeLabel(values[i] as string)}"`);
    if (extra !== undefined) pairs.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
    return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
  }
}

/** A value that only goes up (requests, loads). */
export class Counter extends Metric<number> {
  readonly type = 'counter';
  protected initial(): number {
    return 0;
  }
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`counter '${this.name}' cannot go down (${by})`);
    this.entry(labels).value += by;
  }
  /** The current value of one series (0 if never incremented). */
  get(labels: Labels = {}): number {
    return this.entry(labels).value;
  }
  protected renderSeries(lines: string[], labels: readonly string[], value: number): void {
    lines.push(`${this.name}${this.labelText(labels)} ${formatNumber(value)}`);
  }
}

/** A value that goes up and down (queue depth). */
export class Gauge extends Metric<number> {
  readonly type = 'gauge';
  protected initial(): number {
    return 0;
  }
  set(labels: Labels, value: number): void {
    this.entry(labels).value = value;
  }
  get(labels: Labels = {}): number {
    return this.entry(labels).value;
  }
  protected renderSeries(lines: string[], labels: readonly string[], value: number): void {
    lines.push(`${this.name}${this.labelText(labels)} ${formatNumber(value)}`);
  }
}

interface HistogramValue {
  /** Observations per bucket, not cumulative; the last slot is `+Inf`. */
  readonly counts: number[];
  sum: number;
  count: number;
}

/** Observations counted into fixed buckets (`le`, cumulative when rendered), with their sum and count. */
export class Histogram extends Metric<HistogramValue> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(name, help, labelNames);
    const sorted = [...buckets].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((b, i) => !Number.isFinite(b) || b === sorted[i - 1])) {
      throw new RangeError(`histogram '${name}' needs distinct finite buckets`);
    }
    this.buckets = sorted;
  }

  protected initial(): HistogramValue {
    return { counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  observe(labels: Labels, value: number): void {
    const entry = this.entry(labels).value;
    let i = this.buckets.findIndex((bound) => value <= bound);
    if (i === -1) i = this.buckets.length;
    entry.counts[i] = (entry.counts[i] as number) + 1;
    entry.sum += value;
    entry.count += 1;
  }

  /** Count and sum of one series. */
  get(labels: Labels = {}): { count: number; sum: number } {
    const { count, sum } = this.entry(labels).value;
    return { count, sum };
  }

  protected renderSeries(lines: string[], labels: readonly string[], value: HistogramValue): void {
    let cumulative = 0;
    for (const [i, bound] of [...this.buckets, Number.POSITIVE_INFINITY].entries()) {
      cumulative += value.counts[i] as number;
      const le = formatNumber(bound);
      lines.push(`${this.name}_bucket${this.labelText(labels, ['le', le])} ${cumulative}`);
    }
    lines.push(`${this.name}_sum${this.labelText(labels)} ${formatNumber(value.sum)}`);
    lines.push(`${this.name}_count${this.labelText(labels)} ${value.count}`);
  }
}

/** What the registry needs of a metric. */
interface Renderable {
  readonly name: string;
  render(lines: string[]): void;
}

/** Holds the metrics of one process, in registration order. Names are unique. */
export class MetricsRegistry {
  readonly #metrics = new Map<string, Renderable>();

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  histogram(
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ): Histogram {
    return this.#add(new Histogram(name, help, labelNames, buckets));
  }

  /** Every metric in the text exposition format, ending with a newline. */
  render(): string {
    const lines: string[] = [];
    for (const metric of this.#metrics.values()) metric.render(lines);
    return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
  }

  #add<M extends Renderable>(metric: M): M {
    if (this.#metrics.has(metric.name)) throw new RangeError(`metric '${metric.name}' is registered already`);
    this.#metrics.set(metric.name, metric);
    return metric;
  }
}

function formatNumber(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return Number.isNaN(value) ? 'NaN' : String(value);
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabel(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
