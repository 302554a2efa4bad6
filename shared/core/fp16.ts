/**
 * IEEE 754 binary16 ("half", OIP `FP16`) conversion. Tensors hold FP16 as raw half bits in a Uint16Array
 * (see tensor.ts); these functions turn JS numbers into those bits and back.
 */

/** Largest finite half: 65504. Anything at or above the midpoint to the next power, 65520, rounds to infinity. */
export const HALF_MAX = 65504;

const HALF_OVERFLOW = 65520;
const MIN_NORMAL = 2 ** -14;
const HALF_NAN = 0x7e00;
const HALF_INFINITY = 0x7c00;

/**
 * The half bits nearest to `value`, rounding to nearest with ties to even, the way hardware does.
 * Values beyond the half range become ±infinity, tiny values become subnormals or ±0, NaN becomes the
 * canonical quiet NaN 0x7e00.
 *
 * Rounds the double directly rather than through float32: going through float32 first rounds twice and
 * is wrong for values just above a tie.
 *
 * @example
 * toHalfBits(1); // 0x3c00
 * toHalfBits(65504); // 0x7bff
 * toHalfBits(-0); // 0x8000
 */
export function toHalfBits(value: number): number {
  if (Number.isNaN(value)) return HALF_NAN;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const a = Math.abs(value);
  if (a >= HALF_OVERFLOW) return sign | HALF_INFINITY;
  if (a < MIN_NORMAL) {
    // Subnormal: a multiple of 2^-24. Rounding up to 1024 yields the smallest normal's bits, which is right.
    return sign | roundHalfEven(a * 2 ** 24);
  }
  let exponent = Math.floor(Math.log2(a));
  // Math.log2 may be off by one ulp next to a power of two.
  if (2 ** exponent > a) exponent -= 1;
  else if (2 ** (exponent + 1) <= a) exponent += 1;
  let mantissa = roundHalfEven(a * 2 ** (10 - exponent));
  if (mantissa === 2048) {
    mantissa = 1024;
    exponent += 1;
  }
  // 65520 and above were turned into infinity already, so exponent + 15 stays at most 30 here.
  return sign | ((exponent + 15) << 10) | (mantissa - 1024);
}

/**
 * The number that half bits `bits` (the low 16 bits are used) stand for; exact, since every half is a
 * float32 and a double.
 *
 * @example
 * fromHalfBits(0x3c00); // 1
 * fromHalfBits(0x0001); // 5.960464477539063e-8 (smallest subnormal)
 */
export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/** Half bits of every element of `values`. */
export function toHalfArray(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toHalfBits(values[i] as number);
  return out;
}

/** The values of half bits, as float32 (exact). */
export function fromHalfArray(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = fromHalfBits(bits[i] as number);
  return out;
}

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
