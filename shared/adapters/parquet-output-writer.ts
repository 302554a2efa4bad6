/**
 * Parquet results, written the way batch jobs write everything: in immutable parts, concatenated at the
 * commit. A part is one or more row groups' bytes with no header and no footer ({@link encodeRowGroups});
 * the file is `PAR1`, the parts in order, then a footer built from the parts' row-group metadata with their
 * offsets moved to where each part landed ({@link parquetFileEnds}). So a part written twice (a crash
 * between the part and its checkpoint) has the same bytes, and the commit streams parts as it does for
 * JSON Lines.
 *
 * Schema: the id column (`id`: the input's id column's type, or INT64 row indices), then one column per
 * model output, named like it: a scalar column for an output of one element per example, otherwise a LIST
 * of the example's values in row-major order. Snappy (default), zstd or no compression, no statistics, no
 * page indexes (their offsets would point into other parts). Encoding is `hyparquet-writer` (pure
 * JavaScript, MIT). Row groups: at most {@link ParquetWriteOptions.rowGroupRows} rows and about
 * {@link ROW_GROUP_TARGET_BYTES}, of even size within a part (a row group never spans two parts).
 */
import type { ColumnChunk, CompressionCodec, RowGroup, SchemaElement } from 'hyparquet';
import { ByteWriter, ParquetWriter } from 'hyparquet-writer';
import type {
  EncodedPart,
  IdColumnType,
  OutputColumn,
  ParquetOutputSchema,
  PartLayout,
  ScoredBatch,
} from '../core/batch/parquet-port';
import { fromHalfArray } from '../core/fp16';
import type { InferOutput } from '../core/protocol/infer-types';
import type { Datatype, TensorData } from '../core/tensor';
import { writeColumnsDirect } from './parquet-direct-columns';
import type { PageCompressor } from './zstd-compressor';

export {
  type EncodedPart,
  type IdColumnType,
  type OutputColumn,
  outputSchemaFor,
  type ParquetOutputSchema,
  type PartLayout,
  type ScoredBatch,
} from '../core/batch/parquet-port';

/**
/** How parts are written: codec and row-group size. */
export interface ParquetWriteOptions {
  /** Rows in one row group at most. */
  readonly rowGroupRows: number;
  /** The column chunks' codec. */
  readonly codec: Extract<CompressionCodec, 'SNAPPY' | 'ZSTD' | 'UNCOMPRESSED'>;
  /** The ZSTD compressor; `hyparquet-writer` compresses snappy itself. */
  readonly zstd?: PageCompressor;
}

/**
 * A row group's values at most, about (uncompressed, as estimated from the outputs' widths): parquet-mr's
 * and Spark's block size. Wide outputs get fewer rows a group, so a reader that holds a row group (pyarrow,
 * Spark, this job's own reader) holds at most about this much.
 */
export const ROW_GROUP_TARGET_BYTES = 128 * 1024 * 1024;

const DEFAULT_WRITE: ParquetWriteOptions = { rowGroupRows: 122_880, codec: 'SNAPPY' };

/**
 * Encodes scored rows, in order, as row groups (a part's bytes): as few as {@link ParquetWriteOptions}
 * allow, of even size.
 *
 * @example
 * const part = encodeRowGroups(schema, [{ ids: ['a', 'b'], outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 1], data }] }]);
 */
export function encodeRowGroups(
  schema: ParquetOutputSchema,
  batches: readonly ScoredBatch[],
  options: ParquetWriteOptions = DEFAULT_WRITE,
): EncodedPart {
  const rows = batches.reduce((n, b) => n + b.ids.length, 0);
  const writer = new ByteWriter();
  const parquet = new ParquetWriter({
    writer,
    schema: schemaElements(schema),
    statistics: false,
    codec: options.codec,
    ...(options.zstd === undefined ? {} : { compressors: { ZSTD: options.zstd } }),
  });
  const rowGroupSize = rowGroupSizeFor(rows, options.rowGroupRows, rowBytes(schema, batches));
  // Straight from the output tensors (issue #12); hyparquet-writer's own path when list widths vary.
  if (rows > 0 && !writeColumnsDirect(parquet, parquet.schema, schema, batches, rows, rowGroupSize)) {
    const columnData = [
      // PLAIN: a dictionary is tried, at a cost, and rarely pays for unique ids and model outputs.
      {
        name: schema.idColumn,
        data: idValues(schema.idType, batches, rows),
        offsetIndex: false,
        encoding: 'PLAIN',
      },
      ...schema.outputs.map((column) => ({
        name: column.name,
        data: column.scalar ? scalarValues(column, batches, rows) : listValues(column, batches, rows),
        offsetIndex: false,
        encoding: 'PLAIN',
      })),
    ];
    // The writer checks no sizes: the data was built from the schema above.
    void parquet.write({ columnData: columnData as never, rowGroupSize });
  }
  // A view past the writer's 'PAR1', not a copy: two copies of a part (getBuffer, then the slice) were the
  // peak of a job's memory at each part's end, when the part's outputs and encoded pages are still alive.
  const bytes = writer.getBytes().subarray(4);
  const groups = parquet.row_groups.map((g) => moveRowGroup(g, -4));
  return { bytes, rows, rowGroups: JSON.stringify(groups, bigintAsText) };
}

/**
 * The bytes before the first part (`PAR1`) and after the last (the footer) of the file made of `parts`.
 */
export function parquetFileEnds(
  schema: ParquetOutputSchema,
  parts: readonly PartLayout[],
): { head: Uint8Array; footer: Uint8Array } {
  const writer = new ByteWriter();
  const parquet = new ParquetWriter({ writer, schema: schemaElements(schema), statistics: false });
  let at = 4;
  let rows = 0n;
  for (const part of parts) {
    for (const group of JSON.parse(part.rowGroups, textAsBigint) as RowGroup[]) {
      parquet.row_groups.push(moveRowGroup(group, at));
      rows += group.num_rows;
    }
    at += part.bytes;
  }
  parquet.num_rows = rows;
  void parquet.finish();
  const all = new Uint8Array(writer.getBuffer());
  return { head: all.slice(0, 4), footer: all.slice(4) };
}

/**
 * Rows per row group for a part of `rows` rows: within `maxRows` and {@link ROW_GROUP_TARGET_BYTES}, as
 * few groups as that allows, of even size (130,000 rows under a 122,880 cap: two of 65,000, not one of
 * 122,880 and one of 7,120).
 */
export function rowGroupSizeFor(rows: number, maxRows: number, bytesPerRow: number): number {
  const cap = Math.max(1, Math.min(maxRows, Math.floor(ROW_GROUP_TARGET_BYTES / Math.max(1, bytesPerRow))));
  const groups = Math.max(1, Math.ceil(rows / cap));
  return Math.ceil(rows / groups);
}

/** Bytes of one row as written, about: the id and every output's values at the leaf type's size. */
function rowBytes(schema: ParquetOutputSchema, batches: readonly ScoredBatch[]): number {
  const first = batches.find((b) => b.ids.length > 0);
  if (first === undefined) return 1;
  const n = first.ids.length;
  const id = first.ids[0];
  let bytes = typeof id === 'string' ? 4 + id.length : 8;
  for (const column of schema.outputs) {
    const width = outputOf(first, column.name).data.length / n;
    bytes += width * LEAF_BYTES[column.datatype] + (column.scalar ? 0 : 4);
  }
  return bytes;
}

/** Bytes a value of each datatype takes in its leaf type (BYTES: a guess, strings vary). */
const LEAF_BYTES: Readonly<Record<Datatype, number>> = {
  FP16: 4,
  FP32: 4,
  FP64: 8,
  INT8: 4,
  INT16: 4,
  INT32: 4,
  UINT8: 4,
  UINT16: 4,
  UINT32: 4,
  INT64: 8,
  UINT64: 8,
  BOOL: 1,
  BYTES: 16,
};

function schemaElements(schema: ParquetOutputSchema): SchemaElement[] {
  const elements: SchemaElement[] = [
    { name: 'root', num_children: 1 + schema.outputs.length },
    { ...ID_TYPES[schema.idType], name: schema.idColumn, repetition_type: 'REQUIRED' },
  ];
  for (const column of schema.outputs) {
    const leaf = LEAF_TYPES[column.datatype];
    if (column.scalar) {
      elements.push({ ...leaf, name: column.name, repetition_type: 'REQUIRED' });
    } else {
      elements.push(
        { name: column.name, repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { ...leaf, name: 'element', repetition_type: 'REQUIRED' },
      );
    }
  }
  return elements;
}

type LeafType = Pick<SchemaElement, 'type' | 'converted_type'>;

const ID_TYPES: Readonly<Record<IdColumnType, LeafType>> = {
  STRING: { type: 'BYTE_ARRAY', converted_type: 'UTF8' },
  INT64: { type: 'INT64' },
  DOUBLE: { type: 'DOUBLE' },
};

const LEAF_TYPES: Readonly<Record<Datatype, LeafType>> = {
  FP16: { type: 'FLOAT' },
  FP32: { type: 'FLOAT' },
  FP64: { type: 'DOUBLE' },
  INT8: { type: 'INT32', converted_type: 'INT_8' },
  INT16: { type: 'INT32', converted_type: 'INT_16' },
  INT32: { type: 'INT32' },
  UINT8: { type: 'INT32', converted_type: 'UINT_8' },
  UINT16: { type: 'INT32', converted_type: 'UINT_16' },
  // UINT_32 annotates INT32 (the same 32 bits; readers undo the sign): DuckDB refuses it on INT64.
  UINT32: { type: 'INT32', converted_type: 'UINT_32' },
  INT64: { type: 'INT64' },
  UINT64: { type: 'INT64', converted_type: 'UINT_64' },
  BOOL: { type: 'BOOLEAN' },
  BYTES: { type: 'BYTE_ARRAY', converted_type: 'UTF8' },
};

function idValues(type: IdColumnType, batches: readonly ScoredBatch[], rows: number): unknown[] {
  const out = new Array<unknown>(rows);
  let at = 0;
  for (const batch of batches) {
    for (const id of batch.ids) {
      out[at++] = type === 'INT64' ? BigInt(id) : type === 'DOUBLE' ? Number(id) : String(id);
    }
  }
  return out;
}

/** One output's values as the leaf type takes them: numbers, bigints, booleans or strings. */
function leafValues(datatype: Datatype, data: TensorData): ArrayLike<unknown> {
  switch (datatype) {
    case 'FP16':
      return fromHalfArray(data as Uint16Array);
    case 'BOOL':
      return Array.from(data as Uint8Array, (v) => v !== 0);
    default:
      return data;
  }
}

function outputOf(batch: ScoredBatch, name: string): InferOutput {
  const output = batch.outputs.find((o) => o.name === name);
  if (output === undefined) throw new Error(`a scored batch lacks output '${name}'`);
  return output;
}

function scalarValues(
  column: OutputColumn,
  batches: readonly ScoredBatch[],
  rows: number,
): ArrayLike<unknown> {
  const first = batches[0];
  if (batches.length === 1 && first !== undefined)
    return leafValues(column.datatype, outputOf(first, column.name).data);
  const out = new Array<unknown>(rows);
  let at = 0;
  for (const batch of batches) {
    const values = leafValues(column.datatype, outputOf(batch, column.name).data);
    for (let k = 0; k < values.length; k++) out[at++] = values[k];
  }
  return out;
}

function listValues(column: OutputColumn, batches: readonly ScoredBatch[], rows: number): unknown[] {
  const out = new Array<unknown>(rows);
  let at = 0;
  for (const batch of batches) {
    const output = outputOf(batch, column.name);
    const values = leafValues(column.datatype, output.data);
    const n = batch.ids.length;
    const width = n === 0 ? 0 : values.length / n;
    for (let r = 0; r < n; r++) {
      out[at++] = Array.prototype.slice.call(values, r * width, (r + 1) * width);
    }
  }
  return out;
}

/** A row group with every file offset moved by `delta` bytes. */
function moveRowGroup(group: RowGroup, delta: number): RowGroup {
  const d = BigInt(delta);
  const move = (v: bigint | undefined) => (v === undefined ? undefined : v + d);
  return {
    ...group,
    columns: group.columns.map(
      (c): ColumnChunk => ({
        ...c,
        file_offset: c.file_offset + d,
        ...(c.meta_data === undefined
          ? {}
          : {
              meta_data: {
                ...c.meta_data,
                data_page_offset: c.meta_data.data_page_offset + d,
                ...definedOnly('dictionary_page_offset', move(c.meta_data.dictionary_page_offset)),
                ...definedOnly('index_page_offset', move(c.meta_data.index_page_offset)),
              },
            }),
      }),
    ),
    ...definedOnly('file_offset', move(group.file_offset)),
  };
}

function definedOnly<K extends string>(key: K, value: bigint | undefined): Partial<Record<K, bigint>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, bigint>);
}

function bigintAsText(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? { $bigint: value.toString() } : value;
}

function textAsBigint(_key: string, value: unknown): unknown {
  if (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { $bigint?: unknown }).$bigint === 'string'
  ) {
    return BigInt((value as { $bigint: string }).$bigint);
  }
  return value;
}
