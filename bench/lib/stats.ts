/** Summaries of repeated measurements: the median as the figure, min and max as its spread. */

/** A figure over repeated samples. `p99` is the nearest-rank 99th percentile. */
export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

/**
 * The nearest-rank percentile `p` (0 < p <= 100) of `values`. Throws on an empty list or a value that is
 * not finite, so a broken measurement never turns into a figure.
 *
 * @example
 * percentile([1, 2, 3, 4], 50); // 2
 */
export function percentile(values: readonly number[], p: number): number {
  const sorted = sortedFinite(values);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

/**
 * The median of `values` (the mean of the two middle values for an even count).
 *
 * @example
 * median([3, 1, 2, 10]); // 2.5
 */
export function median(values: readonly number[]): number {
  const sorted = sortedFinite(values);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Median, p99, min and max of `values`.
 *
 * @example
 * summarize([12, 10, 11]); // { n: 3, median: 11, p99: 12, min: 10, max: 12 }
 */
export function summarize(values: readonly number[]): Summary {
  const sorted = sortedFinite(values);
  return {
    n: sorted.length,
    median: median(sorted),
    p99: percentile(sorted, 99),
    min: sorted[0] as number,
    max: sorted[sorted.length - 1] as number,
  };
}

function sortedFinite(values: readonly number[]): number[] {
  if (values.length === 0) throw new RangeError('no samples to summarize');
  for (const value of values) {
    if (!Number.isFinite(value)) throw new RangeError(`a sample is not a finite number: ${value}`);
  }
  return [...values].sort((a, b) => a - b);
}
