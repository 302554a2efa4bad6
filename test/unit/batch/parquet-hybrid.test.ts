import { allRunsOf, readHybrid, readHybridThrough } from '../../../shared/adapters/parquet-hybrid';

describe('readHybrid', () => {
  it('reads the specification example: 0..7 bit-packed at 3 bits', () => {
    const out = new Uint8Array(8);
    const end = readHybrid(Uint8Array.of(0x03, 0x88, 0xc6, 0xfa), 0, 4, 3, 8, out);
    expect(Array.from(out)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(end).toBe(4);
  });

  it('reads RLE runs and bit-packed runs in turn, stopping at the count inside a padded group', () => {
    // RLE: 300 values of 1 (header 600 as a varint: 0xd8 0x04); bit-packed: one group 0,1,0,1,1,0,0,0.
    const bytes = Uint8Array.of(0xd8, 0x04, 0x01, 0x03, 0b00011010);
    const out = new Uint8Array(305);
    readHybrid(bytes, 0, bytes.length, 1, 305, out);
    expect(out.subarray(0, 300).every((v) => v === 1)).toBe(true);
    expect(Array.from(out.subarray(300))).toEqual([0, 1, 0, 1, 1]);
  });

  it('reads 2-bit and 8-bit bit-packed runs (definition levels, small dictionaries)', () => {
    const two = new Uint8Array(8);
    // 3,0,1,2 then 2,2,0,3: bytes 0b10010011, 0b11001010.
    readHybrid(Uint8Array.of(0x03, 0b10_01_00_11, 0b11_00_10_10), 0, 3, 2, 8, two);
    expect(Array.from(two)).toEqual([3, 0, 1, 2, 2, 2, 0, 3]);
    const eight = new Int32Array(8);
    readHybrid(Uint8Array.of(0x03, 9, 8, 7, 6, 5, 4, 3, 255), 0, 9, 8, 8, eight);
    expect(Array.from(eight)).toEqual([9, 8, 7, 6, 5, 4, 3, 255]);
  });

  it('reads wide values (dictionary indices) across byte boundaries and RLE values of several bytes', () => {
    // 8 values of 17 bits, bit-packed; then an RLE run of 2 values 70000 (3 bytes, little-endian).
    const values = [0, 1, 70_000, 131_071, 5, 65_536, 3, 99_999];
    let bits = 0n;
    values.forEach((v, k) => {
      bits |= BigInt(v) << BigInt(17 * k);
    });
    const packed = Array.from({ length: 17 }, (_, b) => Number((bits >> BigInt(8 * b)) & 0xffn));
    const bytes = Uint8Array.from([0x03, ...packed, 0x04, 0x70, 0x11, 0x01]);
    const out = new Int32Array(10);
    readHybrid(bytes, 0, bytes.length, 17, 10, out);
    expect(Array.from(out)).toEqual([...values, 70_000, 70_000]);
  });

  it('refuses runs that end before the count or run past the bytes', () => {
    expect(() => readHybrid(Uint8Array.of(0x04, 0x01), 0, 2, 1, 3, new Uint8Array(3))).toThrow(/end after 2/);
    expect(() => readHybrid(Uint8Array.of(0x05, 0xff), 0, 2, 1, 16, new Uint8Array(16))).toThrow(/runs past/);
  });
});

describe('allRunsOf', () => {
  it('recognises levels that are RLE runs of one value, and nothing else', () => {
    // 300 threes in one run (header 600: 0xd8 0x04), or in two runs of 200 and 100.
    expect(allRunsOf(Uint8Array.of(0xd8, 0x04, 3), 0, 3, 2, 300, 3)).toBe(true);
    expect(allRunsOf(Uint8Array.of(0x90, 0x03, 3, 0xc8, 0x01, 3), 0, 6, 2, 300, 3)).toBe(true);
    // A run of another value, a bit-packed run, or too few values.
    expect(allRunsOf(Uint8Array.of(0x90, 0x03, 3, 0xc8, 0x01, 2), 0, 6, 2, 300, 3)).toBe(false);
    expect(allRunsOf(Uint8Array.of(0x03, 0xff, 0xff), 0, 3, 2, 8, 3)).toBe(false);
    expect(allRunsOf(Uint8Array.of(0x90, 0x03, 3), 0, 3, 2, 300, 3)).toBe(false);
  });
});

describe('readHybridThrough', () => {
  it('writes each index as its dictionary entry, from bit-packed and RLE runs', () => {
    const dictionary = Float32Array.of(0.5, -1, 2.25, 8);
    // Bit-packed at 2 bits: 3,0,1,2,2,2,0,3; then an RLE run of three 1s.
    const bytes = Uint8Array.of(0x03, 0b10_01_00_11, 0b11_00_10_10, 0x06, 0x01);
    const out = new Float32Array(11);
    readHybridThrough(bytes, 0, bytes.length, 2, 11, dictionary, out);
    expect(Array.from(out)).toEqual([8, 0.5, -1, 2.25, 2.25, 2.25, 0.5, 8, -1, -1, -1]);
  });

  it('refuses an index past the dictionary', () => {
    expect(() => readHybridThrough(Uint8Array.of(0x04, 0x05), 0, 2, 3, 2, ['a', 'b'], new Array(2))).toThrow(
      'dictionary index 5 of 2',
    );
  });
});
