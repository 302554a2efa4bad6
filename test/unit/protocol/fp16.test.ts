import { fromHalfArray, fromHalfBits, HALF_MAX, toHalfArray, toHalfBits } from '../../../shared/core/fp16';

describe('toHalfBits', () => {
  it.each([
    ['0', 0, 0x0000],
    ['-0', -0, 0x8000],
    ['1', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['0.5', 0.5, 0x3800],
    ['0.1 (rounds down)', 0.1, 0x2e66],
    ['1/3', 1 / 3, 0x3555],
    ['65504 (largest half)', HALF_MAX, 0x7bff],
    ['65519 (below the overflow midpoint)', 65519, 0x7bff],
    ['65520 (overflow midpoint, ties to even: infinity)', 65520, 0x7c00],
    ['-1e6', -1e6, 0xfc00],
    ['Infinity', Number.POSITIVE_INFINITY, 0x7c00],
    ['-Infinity', Number.NEGATIVE_INFINITY, 0xfc00],
    ['NaN', Number.NaN, 0x7e00],
    ['2^-14 (smallest normal)', 2 ** -14, 0x0400],
    ['2^-24 (smallest subnormal)', 2 ** -24, 0x0001],
    ['1023 * 2^-24 (largest subnormal)', 1023 * 2 ** -24, 0x03ff],
    ['2^-25 (tie between 0 and the smallest subnormal: even is 0)', 2 ** -25, 0x0000],
    ['just above 2^-25', 2 ** -25 * 1.000001, 0x0001],
    ['3 * 2^-25 (tie: even mantissa 2)', 3 * 2 ** -25, 0x0002],
    ['2^-14 - 2^-25 (subnormal tie rounding up into the normals)', 2 ** -14 - 2 ** -25, 0x0400],
    ['1e-10 (underflow)', 1e-10, 0x0000],
    ['-1e-10 (underflow keeps the sign)', -1e-10, 0x8000],
    ['1 + 2^-11 (tie: even is 1)', 1 + 2 ** -11, 0x3c00],
    ['1 + 3 * 2^-11 (tie: even mantissa 2)', 1 + 3 * 2 ** -11, 0x3c02],
    ['2049 (tie: 2048)', 2049, 0x6800],
    ['2051 (tie: 2052)', 2051, 0x6802],
    ['2^15 (exact power of two)', 2 ** 15, 0x7800],
  ])('%s', (_label, value, bits) => {
    expect(toHalfBits(value)).toBe(bits);
  });

  it('rounds the double directly, not through float32 (no double rounding)', () => {
    // float32 would round this to 1 + 2^-11, a tie that then goes to even 1.0 (0x3c00).
    const value = 1 + 2 ** -11 + 2 ** -40;
    expect(Math.fround(value)).toBe(1 + 2 ** -11);
    expect(toHalfBits(value)).toBe(0x3c01);
  });
});

describe('fromHalfBits', () => {
  it.each(
    [
      [0x0000, 0],
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24],
      [0x0400, 2 ** -14],
      [0x7c00, Number.POSITIVE_INFINITY],
      [0xfc00, Number.NEGATIVE_INFINITY],
    ].map(
      ([bits, value]) =>
        [(bits as number).toString(16).padStart(4, '0'), value as number, bits as number] as const,
    ),
  )('0x%s is %p', (_hex, value, bits) => {
    expect(fromHalfBits(bits)).toBe(value);
  });

  it('gives -0 for 0x8000 and NaN for every NaN pattern', () => {
    expect(Object.is(fromHalfBits(0x8000), -0)).toBe(true);
    expect(fromHalfBits(0x7e00)).toBeNaN();
    expect(fromHalfBits(0x7c01)).toBeNaN();
    expect(fromHalfBits(0xffff)).toBeNaN();
  });

  it('round-trips every one of the 65536 patterns except NaNs', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = fromHalfBits(bits);
      if (Number.isNaN(value)) continue;
      if (toHalfBits(value) !== bits) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });

  it('rounds every midpoint between neighbouring halves to the even one', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x7bff; bits++) {
      const mid = (fromHalfBits(bits) + fromHalfBits(bits + 1)) / 2;
      const even = bits % 2 === 0 ? bits : bits + 1;
      if (toHalfBits(mid) !== even) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });
});

describe('toHalfArray / fromHalfArray', () => {
  it('convert whole arrays', () => {
    const bits = toHalfArray([1, -2, 0.5, 65504]);
    expect(Array.from(bits)).toEqual([0x3c00, 0xc000, 0x3800, 0x7bff]);
    expect(Array.from(fromHalfArray(bits))).toEqual([1, -2, 0.5, 65504]);
  });
});
