/** The one input every benchmark feeds, so JSON, binary and raw baselines see the same numbers. */

/** Elements of a shape. */
export function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Deterministic values in [-1, 1], multiples of 1/1024: float32 holds them exactly, and so does their
 * shortest JSON text, so a JSON payload decodes to the very floats a binary one carries.
 *
 * @example
 * benchInput(3); // Float32Array [0, 0.361328125, 0.6748046875]
 */
export function benchInput(count: number): Float32Array {
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = Math.round(Math.sin(i * 0.37) * 1024) / 1024;
  return data;
}
