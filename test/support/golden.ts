/** Tolerances for comparing floating-point outputs: |actual - expected| <= atol + rtol * |expected|. */
export interface Tolerance {
  readonly atol?: number;
  readonly rtol?: number;
}

/**
 * Throws, naming the first element out of tolerance, unless `actual` and `expected` have the same length and
 * every element is within `atol + rtol * |expected|` (NaN matches only NaN).
 *
 * @example
 * expectClose(outputs.y.data as Float32Array, [0.5, -0.25], { atol: 1e-6 });
 */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-4 }: Tolerance = {},
): void {
  if (actual.length !== expected.length) {
    throw new Error(`expected ${expected.length} elements, got ${actual.length}`);
  }
  let failures = 0;
  let first = '';
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    const ok = Number.isNaN(e) ? Number.isNaN(a) : Math.abs(a - e) <= atol + rtol * Math.abs(e);
    if (!ok) {
      if (failures === 0) first = `[${i}]: got ${a}, expected ${e}`;
      failures++;
    }
  }
  if (failures > 0) {
    throw new Error(
      `${failures} of ${expected.length} elements out of tolerance (atol ${atol}, rtol ${rtol}); first ${first}`,
    );
  }
}
