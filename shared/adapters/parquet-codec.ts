/**
 * The batch job's Parquet port ({@link ParquetCodec}) on hyparquet: the reader opens objects through the
 * batch object store with ranged reads, the writer encodes parts and the footer that joins them.
 */
import type { ParquetCodec } from '../core/batch/parquet-port';
import type { BatchObjectStore } from '../core/batch/ports';
import { ParquetObjectReader } from './parquet-object-reader';
import { encodeRowGroups, parquetFileEnds } from './parquet-output-writer';

/** Rows per output row group: DuckDB's default, and a part of `BATCH_PART_RECORDS` rows holds one. */
const OUTPUT_ROW_GROUP_ROWS = 122_880;

/**
 * @example
 * const runner = new BatchJobRunner({ ..., parquet: hyparquetCodec(objects) });
 */
export function hyparquetCodec(store: BatchObjectStore): ParquetCodec {
  return {
    open: (ref, options) => ParquetObjectReader.open(store, ref, options),
    encodeRowGroups: (schema, batches) => encodeRowGroups(schema, batches, OUTPUT_ROW_GROUP_ROWS),
    fileEnds: (schema, parts) => parquetFileEnds(schema, parts),
  };
}
