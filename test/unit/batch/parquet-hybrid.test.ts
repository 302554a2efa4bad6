import { readHybrid } from '../../../shared/adapters/parquet-hybrid';

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
