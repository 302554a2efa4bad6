/**
 * Snappy compression into one preallocated buffer, for the pages of Parquet results. hyparquet-writer's
 * compressor appends every literal byte through its growing writer, one call per byte; results are mostly
 * float bits, which snappy keeps as literals, so that was most of the time spent encoding a part. This is
 * the reference algorithm (64 KiB blocks, a 14-bit hash table, the skipping heuristic on incompressible
 * data) with literals copied as byte ranges.
 */

const BLOCK_BYTES = 1 << 16;
const HASH_BITS = 14;
/** Bytes at the end of a block where no match search starts (so 4-byte loads stay in the block). */
const INPUT_MARGIN = 15;

/** Positions within the current block, by hash of the 4 bytes there; reused by every call. */
const table = new Int32Array(1 << HASH_BITS);
let scratch = new Uint8Array(0);

/**
 * Compresses `input` to the snappy format (raw, no framing), as Parquet's SNAPPY codec stores pages.
 *
 * @example
 * snappyCompress(new TextEncoder().encode('aaaaaaaaaaaaaaaaaaaa')); // 7 bytes
 */
export function snappyCompress(input: Uint8Array): Uint8Array {
  const length = input.length;
  const bound = 32 + length + Math.ceil(length / 6);
  // The worst case is compressed into a buffer kept between calls; only the result's bytes are copied out.
  if (scratch.length < bound) scratch = new Uint8Array(bound);
  const out = scratch;
  let op = 0;
  // The uncompressed length, as a varint.
  let v = length;
  while (v >= 0x80) {
    out[op++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[op++] = v;
  for (let start = 0; start < length; start += BLOCK_BYTES) {
    op = compressBlock(input, start, Math.min(length, start + BLOCK_BYTES), out, op);
  }
  return out.slice(0, op);
}

function load32(src: Uint8Array, i: number): number {
  return (
    (src[i] as number) |
    ((src[i + 1] as number) << 8) |
    ((src[i + 2] as number) << 16) |
    ((src[i + 3] as number) << 24)
  );
}

function hash(word: number): number {
  return Math.imul(word, 0x1e35a7bd) >>> (32 - HASH_BITS);
}

function compressBlock(src: Uint8Array, start: number, end: number, dst: Uint8Array, at: number): number {
  let op = at;
  let nextEmit = start;
  if (end - start >= INPUT_MARGIN) {
    table.fill(0);
    const ipLimit = end - INPUT_MARGIN;
    let ip = start + 1;
    let nextHash = hash(load32(src, ip));
    search: for (;;) {
      let skip = 32;
      let nextIp = ip;
      let candidate: number;
      do {
        ip = nextIp;
        const h = nextHash;
        nextIp = ip + (skip++ >> 5);
        if (nextIp > ipLimit) break search;
        nextHash = hash(load32(src, nextIp));
        candidate = start + (table[h] as number);
        table[h] = ip - start;
      } while (load32(src, ip) !== load32(src, candidate));
      op = emitLiteral(src, nextEmit, ip, dst, op);
      do {
        const base = ip;
        let matched = 4;
        while (ip + matched < end && src[candidate + matched] === src[ip + matched]) matched++;
        ip += matched;
        op = emitCopy(dst, op, base - candidate, matched);
        nextEmit = ip;
        if (ip >= ipLimit) break search;
        table[hash(load32(src, ip - 1))] = ip - 1 - start;
        const h = hash(load32(src, ip));
        candidate = start + (table[h] as number);
        table[h] = ip - start;
      } while (load32(src, ip) === load32(src, candidate));
      ip += 1;
      nextHash = hash(load32(src, ip));
    }
  }
  if (nextEmit < end) op = emitLiteral(src, nextEmit, end, dst, op);
  return op;
}

function emitLiteral(src: Uint8Array, from: number, to: number, dst: Uint8Array, at: number): number {
  let op = at;
  const n = to - from - 1;
  if (n < 60) {
    dst[op++] = n << 2;
  } else if (n < 0x100) {
    dst[op++] = 60 << 2;
    dst[op++] = n;
  } else if (n < 0x10000) {
    dst[op++] = 61 << 2;
    dst[op++] = n & 0xff;
    dst[op++] = n >>> 8;
  } else if (n < 0x1000000) {
    dst[op++] = 62 << 2;
    dst[op++] = n & 0xff;
    dst[op++] = (n >>> 8) & 0xff;
    dst[op++] = n >>> 16;
  } else {
    dst[op++] = 63 << 2;
    dst[op++] = n & 0xff;
    dst[op++] = (n >>> 8) & 0xff;
    dst[op++] = (n >>> 16) & 0xff;
    dst[op++] = n >>> 24;
  }
  if (to - from < 16) {
    for (let i = from; i < to; i++) dst[op++] = src[i] as number;
    return op;
  }
  dst.set(src.subarray(from, to), op);
  return op + (to - from);
}

/** A copy of `length` bytes from `offset` back (offset < 64 KiB: within a block). */
function emitCopy(dst: Uint8Array, at: number, offset: number, length: number): number {
  let op = at;
  let left = length;
  while (left >= 68) {
    op = emitCopyUpTo64(dst, op, offset, 64);
    left -= 64;
  }
  if (left > 64) {
    op = emitCopyUpTo64(dst, op, offset, 60);
    left -= 60;
  }
  return emitCopyUpTo64(dst, op, offset, left);
}

function emitCopyUpTo64(dst: Uint8Array, at: number, offset: number, length: number): number {
  let op = at;
  if (length < 12 && offset < 2048) {
    dst[op++] = 1 + ((length - 4) << 2) + ((offset >>> 8) << 5);
    dst[op++] = offset & 0xff;
  } else {
    dst[op++] = 2 + ((length - 1) << 2);
    dst[op++] = offset & 0xff;
    dst[op++] = offset >>> 8;
  }
  return op;
}
