/**
 * Parquet's RLE / bit-packed hybrid encoding (repetition and definition levels, dictionary indices)
 * decoded into a typed array: hyparquet decodes it into a plain array, a boxed slot per value, which for a
 * list column of 100,000 rows of 32 values is two arrays of 3.2 million slots per row group.
 */

/**
 * Decodes `count` values of `bitWidth` bits (at most 24) from `bytes[start, end)` into `out`.
 *
 * @returns the offset after the last run read
 * @throws Error when the runs end before `count` values
 * @example
 * const out = new Uint8Array(4);
 * readHybrid(Uint8Array.of(0x08, 0x01), 0, 2, 1, 4, out); // an RLE run of four 1s: out = [1, 1, 1, 1]
 */
export function readHybrid(
  bytes: Uint8Array,
  start: number,
  end: number,
  bitWidth: number,
  count: number,
  out: Uint8Array | Int32Array,
): number {
  if (bitWidth > 24) throw new RangeError(`bit width ${bitWidth} over 24`);
  const valueBytes = (bitWidth + 7) >> 3;
  const mask = bitWidth === 0 ? 0 : (1 << bitWidth) - 1;
  let pos = start;
  let i = 0;
  while (i < count) {
    if (pos >= end) throw new Error(`levels end after ${i} of ${count} values`);
    const header = runHeader(bytes, pos, end);
    if (header < 0) throw new Error('a run header runs past the levels');
    pos = headerEnd;
    if (header % 2 === 1) {
      // Bit-packed: groups of 8 values, least significant bit first.
      const values = Math.floor(header / 2) * 8;
      const stop = pos + (values * bitWidth) / 8;
      if (stop > end) throw new Error('a bit-packed run runs past the levels');
      const take = Math.min(values, count - i);
      if (8 % bitWidth === 0 && bitWidth > 0) {
        // Levels (bit width 1 or 2): whole values per byte, a byte at a time.
        const last = i + take;
        for (let p = pos; i < last; p++) {
          const byte = bytes[p] as number;
          for (let shift = 0; shift < 8 && i < last; shift += bitWidth) out[i++] = (byte >> shift) & mask;
        }
        pos = stop;
        continue;
      }
      let buffer = 0;
      let bits = 0;
      for (let k = 0; k < take; k++) {
        while (bits < bitWidth) {
          buffer |= (bytes[pos++] as number) << bits;
          bits += 8;
        }
        out[i++] = buffer & mask;
        buffer >>>= bitWidth;
        bits -= bitWidth;
      }
      pos = stop;
    } else {
      const run = Math.floor(header / 2);
      let value = 0;
      for (let b = 0; b < valueBytes; b++) value |= (bytes[pos++] as number) << (8 * b);
      const to = Math.min(count, i + run);
      out.fill(value, i, to);
      i = to;
    }
  }
  return pos;
}

/**
 * Whether `bytes[start, end)` hold `count` values all equal to `value` as RLE runs (definition levels of a
 * page without nulls, as writers encode them): the caller then needs no array of them.
 */
export function allRunsOf(
  bytes: Uint8Array,
  start: number,
  end: number,
  bitWidth: number,
  count: number,
  value: number,
): boolean {
  const valueBytes = (bitWidth + 7) >> 3;
  let pos = start;
  let seen = 0;
  while (seen < count) {
    const header = runHeader(bytes, pos, end);
    if (header < 0) return false;
    pos = headerEnd;
    if (header % 2 === 1) return false;
    let run = 0;
    for (let b = 0; b < valueBytes; b++) run |= (bytes[pos++] as number) << (8 * b);
    if (run !== value) return false;
    seen += Math.floor(header / 2);
  }
  return true;
}

/**
 * {@link readHybrid} for dictionary indices, each written as its dictionary entry: `out[i] =
 * dictionary[index]`, with no array of indices in between.
 *
 * @throws Error when an index is past the dictionary (a corrupt page), or as {@link readHybrid}
 */
export function readHybridThrough(
  bytes: Uint8Array,
  start: number,
  end: number,
  bitWidth: number,
  count: number,
  dictionary: ArrayLike<unknown>,
  out: { [index: number]: unknown },
): void {
  if (bitWidth > 24) throw new RangeError(`bit width ${bitWidth} over 24`);
  const valueBytes = (bitWidth + 7) >> 3;
  const mask = bitWidth === 0 ? 0 : (1 << bitWidth) - 1;
  const size = dictionary.length;
  let pos = start;
  let i = 0;
  while (i < count) {
    if (pos >= end) throw new Error(`indices end after ${i} of ${count} values`);
    const header = runHeader(bytes, pos, end);
    if (header < 0) throw new Error('a run header runs past the indices');
    pos = headerEnd;
    if (header % 2 === 1) {
      const values = Math.floor(header / 2) * 8;
      const stop = pos + (values * bitWidth) / 8;
      if (stop > end) throw new Error('a bit-packed run runs past the indices');
      const take = Math.min(values, count - i);
      let buffer = 0;
      let bits = 0;
      for (let k = 0; k < take; k++) {
        while (bits < bitWidth) {
          buffer |= (bytes[pos++] as number) << bits;
          bits += 8;
        }
        const index = buffer & mask;
        if (index >= size) throw new Error(`dictionary index ${index} of ${size}`);
        out[i++] = dictionary[index];
        buffer >>>= bitWidth;
        bits -= bitWidth;
      }
      pos = stop;
    } else {
      const run = Math.floor(header / 2);
      let index = 0;
      for (let b = 0; b < valueBytes; b++) index |= (bytes[pos++] as number) << (8 * b);
      if (index >= size) throw new Error(`dictionary index ${index} of ${size}`);
      const entry = dictionary[index];
      const to = Math.min(count, i + run);
      while (i < to) out[i++] = entry;
    }
  }
}

/** Where the header last read by {@link runHeader} ended (a second result without an object per run). */
let headerEnd = 0;

/**
 * The run header at `pos`, a ULEB128 varint (its end in {@link headerEnd}); -1 when it runs past `end`.
 */
function runHeader(bytes: Uint8Array, pos: number, end: number): number {
  let header = 0;
  let shift = 0;
  let byte: number;
  do {
    if (pos >= end) return -1;
    byte = bytes[pos++] as number;
    header += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  headerEnd = pos;
  return header;
}
