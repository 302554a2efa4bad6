/**
 * The batch job's Parquet port ({@link ParquetCodec}) on hyparquet: the reader opens objects through the
 * batch object store with ranged reads, the writer encodes parts and the footer that joins them.
 */
import type { ParquetCompression } from '../core/batch/batch-config';
import type { ParquetCodec } from '../core/batch/parquet-port';
import type { BatchObjectStore } from '../core/batch/ports';
import { ParquetObjectReader } from './parquet-object-reader';
import { encodeRowGroups, type ParquetWriteOptions, parquetFileEnds } from './parquet-output-writer';
import { zstdCompressor } from './zstd-compressor';

/** How `.out.parquet` is written (`ONNX_SERVE_BATCH_PARQUET_COMPRESSION`, `_ROW_GROUP_ROWS`). */
export interface ParquetOutputSettings {
  readonly compression: ParquetCompression;
  /** Rows per output row group at most (DuckDB's default is 122,880). */
  readonly rowGroupRows: number;
}

/**
 * @example
 * const runner = new BatchJobRunner({ ..., parquet: hyparquetCodec(objects, { compression: 'zstd', rowGroupRows: 122_880 }) });
 * @throws Error when zstd is asked for on a runtime without it (the config refuses that first)
 */
export function hyparquetCodec(store: BatchObjectStore, output: ParquetOutputSettings): ParquetCodec {
  const write = writeOptions(output);
  return {
    open: (ref, options) => ParquetObjectReader.open(store, ref, options),
    encodeRowGroups: (schema, batches) => encodeRowGroups(schema, batches, write),
    fileEnds: (schema, parts) => parquetFileEnds(schema, parts),
  };
}

function writeOptions({ compression, rowGroupRows }: ParquetOutputSettings): ParquetWriteOptions {
  if (compression === 'snappy') return { rowGroupRows, codec: 'SNAPPY' };
  if (compression === 'none') return { rowGroupRows, codec: 'UNCOMPRESSED' };
  const zstd = zstdCompressor();
  if (zstd === undefined) throw new Error('zstd output needs Node 22.15 or later (zlib.zstdCompressSync)');
  return { rowGroupRows, codec: 'ZSTD', zstd };
}
