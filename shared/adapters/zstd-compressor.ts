/**
 * Zstandard compression of Parquet pages with Node's own zlib (`zstdCompressSync`, in Node from 22.15 and
 * 23.8): nothing in the bundle, and 3-4x the speed of a WebAssembly zstd here (BENCHMARKS.md, "Parquet
 * output compression"). Node 20 has no zstd encoder: there `zstdCompressor()` is `undefined` and the
 * config refuses `ONNX_SERVE_BATCH_PARQUET_COMPRESSION=zstd` at start-up.
 */
import * as zlib from 'node:zlib';

/** Bytes in, one zstd frame out (the shape `hyparquet-writer` takes a compressor in). */
export type PageCompressor = (input: Uint8Array) => Uint8Array;

/** What Node 22.15+ adds to zlib; `@types/node` 20 does not declare it. */
interface ZstdZlib {
  readonly zstdCompressSync?: (input: Uint8Array, options?: { params?: Record<number, number> }) => Buffer;
  readonly constants: { readonly ZSTD_c_compressionLevel?: number };
}

/** zstd's own default level: DuckDB, pyarrow and Spark write level 3 too. */
const ZSTD_LEVEL = 3;

/**
 * The zstd compressor of this runtime, or `undefined` where Node's zlib has none (before 22.15).
 *
 * @example
 * const zstd = zstdCompressor();
 * if (zstd !== undefined) writer = new ParquetWriter({ ..., codec: 'ZSTD', compressors: { ZSTD: zstd } });
 */
export function zstdCompressor(): PageCompressor | undefined {
  const z = zlib as unknown as ZstdZlib;
  const compress = z.zstdCompressSync;
  const level = z.constants.ZSTD_c_compressionLevel;
  if (compress === undefined || level === undefined) return undefined;
  const options = { params: { [level]: ZSTD_LEVEL } };
  return (input) => compress(input, options);
}
