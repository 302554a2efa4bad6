/**
 * Scored rows written as Parquet row groups straight from the output tensors (issue #12): each column's
 * values are the micro-batches' tensor data laid end to end in one typed array, written as PLAIN pages
 * from its bytes, with the levels of a fixed-width list computed, not derived row by row. hyparquet-writer's
 * own path builds an array per row for every list column and walks every value (its Dremel encoder, its
 * page sizing, a DataView write per value); for 100,000 rows of a 10-wide output that was most of a part's
 * encoding time. Columns that are not numbers (strings, booleans) go through hyparquet-writer's column
 * writer with the flattened values, and parts whose list widths differ between rows are left to the caller.
 */
import type { ColumnChunk, CompressionCodec, SchemaElement } from 'hyparquet';
import type { ParquetWriter } from 'hyparquet-writer';
import { writeColumn } from 'hyparquet-writer/src/column.js';
import { writePageHeader } from 'hyparquet-writer/src/datapage.js';
import type { ParquetOutputSchema, ScoredBatch } from '../core/batch/parquet-port';
import { fromHalfArray } from '../core/fp16';
import type { TensorData } from '../core/tensor';
import { snappyCompress } from './snappy-compress';

/** hyparquet-writer's default page size: pages of about this many value bytes. */
const PAGE_BYTES = 1 << 20;

/** PLAIN numbers are little-endian; a typed array's bytes are only on a little-endian machine. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

type Numbers = Float32Array | Float64Array | Int32Array | BigInt64Array;

/** One leaf column of a part: its schema path and every value, row after row. */
interface Leaf {
  readonly schemaPath: SchemaElement[];
  /** Values per row: 1 for a scalar column, the list's length for a list column. */
  readonly width: number;
  readonly list: boolean;
  /** A typed array is written from its bytes; anything else through hyparquet-writer. */
  readonly values: Numbers | unknown[];
}

/**
 * Writes the rows of `batches` as row groups of at most `rowGroupRows` rows through `parquet` (its writer,
 * codec and compressors; the row groups are appended to `parquet.row_groups`), or answers `false`, having
 * written nothing, when a list output's width differs between batches.
 *
 * @param elements the schema `parquet` was made with: the root, the id column, then each output's elements
 *   (one for a scalar output, three for a list: the LIST group, its repeated group and the element)
 */
export function writeColumnsDirect(
  parquet: ParquetWriter,
  elements: readonly SchemaElement[],
  schema: ParquetOutputSchema,
  batches: readonly ScoredBatch[],
  rows: number,
  rowGroupRows: number,
): boolean {
  const leaves = leavesOf(elements, schema, batches, rows);
  if (leaves === undefined) return false;
  // The writer grows by doubling, copying as it goes: sized once for the numbers (most of a part; snappy
  // rarely shrinks float bits), it makes one buffer instead of a series.
  let estimate = 64 * 1024;
  for (const leaf of leaves) if (!Array.isArray(leaf.values)) estimate += leaf.values.byteLength * 1.05;
  parquet.writer.ensure(Math.ceil(estimate));
  for (let from = 0; from < rows; from += rowGroupRows) {
    const to = Math.min(rows, from + rowGroupRows);
    const groupStart = parquet.writer.offset;
    const columns = leaves.map((leaf) => writeChunk(parquet, leaf, from, to));
    let uncompressed = 0n;
    for (const c of columns) uncompressed += c.meta_data?.total_uncompressed_size ?? 0n;
    parquet.num_rows += BigInt(to - from);
    parquet.row_groups.push({
      columns,
      total_byte_size: uncompressed,
      num_rows: BigInt(to - from),
      total_compressed_size: BigInt(parquet.writer.offset - groupStart),
    });
  }
  return true;
}

function leavesOf(
  elements: readonly SchemaElement[],
  schema: ParquetOutputSchema,
  batches: readonly ScoredBatch[],
  rows: number,
): Leaf[] | undefined {
  const root = elements[0] as SchemaElement;
  const id = elements[1] as SchemaElement;
  const leaves: Leaf[] = [
    { schemaPath: [root, id], width: 1, list: false, values: idValues(id, batches, rows) },
  ];
  let at = 2;
  for (const column of schema.outputs) {
    const path = column.scalar
      ? [root, elements[at] as SchemaElement]
      : [root, ...(elements.slice(at, at + 3) as SchemaElement[])];
    at += path.length - 1;
    const leaf = path[path.length - 1] as SchemaElement;
    let width: number | undefined;
    for (const batch of batches) {
      const output = batch.outputs.find((o) => o.name === column.name);
      if (output === undefined) throw new Error(`a scored batch lacks output '${column.name}'`);
      const n = batch.ids.length;
      const w = n === 0 ? (width ?? 0) : output.data.length / n;
      if (width !== undefined && w !== width) return undefined;
      width = w;
    }
    const w = column.scalar ? 1 : (width ?? 0);
    const data = batches.map((b) => b.outputs.find((o) => o.name === column.name)?.data as TensorData);
    leaves.push({ schemaPath: path, width: w, list: !column.scalar, values: joinData(leaf, data, rows * w) });
  }
  return leaves;
}

/** The ids as the id column's physical type holds them. */
function idValues(
  element: SchemaElement,
  batches: readonly ScoredBatch[],
  rows: number,
): Numbers | unknown[] {
  const out: Numbers | unknown[] =
    element.type === 'INT64'
      ? new BigInt64Array(rows)
      : element.type === 'DOUBLE'
        ? new Float64Array(rows)
        : new Array<unknown>(rows);
  // A 32-bit integer id goes in as its two words, without a BigInt.
  const words = out instanceof BigInt64Array && LITTLE_ENDIAN ? new Int32Array(out.buffer) : undefined;
  let at = 0;
  for (const batch of batches) {
    for (const id of batch.ids) {
      if (words !== undefined && typeof id === 'number' && (id | 0) === id && !Object.is(id, -0)) {
        words[2 * at] = id;
        words[2 * at + 1] = id >> 31;
        at++;
      } else if (out instanceof BigInt64Array) out[at++] = BigInt(id);
      else if (out instanceof Float64Array) out[at++] = Number(id);
      else out[at++] = String(id);
    }
  }
  return out;
}

/** Tensor data of every batch, end to end, as the leaf's physical type holds it. */
function joinData(leaf: SchemaElement, data: readonly TensorData[], count: number): Numbers | unknown[] {
  let out: Numbers | unknown[];
  if (leaf.type === 'FLOAT') out = new Float32Array(count);
  else if (leaf.type === 'DOUBLE') out = new Float64Array(count);
  else if (leaf.type === 'INT32') out = new Int32Array(count);
  else if (leaf.type === 'INT64') out = new BigInt64Array(count);
  else out = new Array<unknown>(count);
  let at = 0;
  for (const d of data) {
    if (out instanceof Float32Array && d instanceof Uint16Array) {
      out.set(fromHalfArray(d), at); // FP16 outputs are stored as FLOAT
    } else if (out instanceof BigInt64Array) {
      // UINT64: the same 64 bits, as PLAIN stores them.
      const bits = d as BigInt64Array | BigUint64Array;
      out.set(new BigInt64Array(bits.buffer, bits.byteOffset, bits.length), at);
    } else if (Array.isArray(out)) {
      for (let k = 0; k < d.length; k++) out[at + k] = leaf.type === 'BOOLEAN' ? d[k] !== 0 : d[k];
    } else {
      (out as Float32Array).set(d as Float32Array, at);
    }
    at += d.length;
  }
  return out;
}

/** One column chunk of rows [from, to): PLAIN pages from the typed array's bytes, or hyparquet-writer's. */
function writeChunk(parquet: ParquetWriter, leaf: Leaf, from: number, to: number): ColumnChunk {
  const element = leaf.schemaPath[leaf.schemaPath.length - 1] as SchemaElement;
  const { values, width } = leaf;
  if (Array.isArray(values) || !LITTLE_ENDIAN || width === 0) {
    const count = (to - from) * width;
    const levels = leaf.list ? listLevelArrays(to - from, width) : { defs: [], reps: [] };
    return writeColumn({
      writer: parquet.writer,
      column: {
        columnName: leaf.schemaPath
          .slice(1)
          .map((e) => e.name)
          .join('.'),
        element,
        schemaPath: leaf.schemaPath,
        codec: parquet.codec,
        compressors: parquet.compressors as never,
        stats: false,
        pageSize: PAGE_BYTES,
        columnIndex: false,
        offsetIndex: false,
        encoding: 'PLAIN',
      },
      pageData: {
        values: values.slice(from * width, from * width + count) as never,
        definitionLevels: levels.defs,
        repetitionLevels: levels.reps,
        maxDefinitionLevel: leaf.list ? 1 : 0,
      },
    }).chunk;
  }
  const writer = parquet.writer;
  const start = writer.offset;
  const rowBytes = width * values.BYTES_PER_ELEMENT;
  const rowsPerPage = Math.max(1, Math.floor(PAGE_BYTES / rowBytes));
  let uncompressed = 0;
  for (let a = from; a < to; a += rowsPerPage) {
    uncompressed += writePage(parquet, leaf.list, values, width, a, Math.min(to, a + rowsPerPage));
  }
  return {
    file_offset: BigInt(start),
    meta_data: {
      type: element.type as NonNullable<SchemaElement['type']>,
      encodings: leaf.list ? ['PLAIN', 'RLE'] : ['PLAIN'],
      path_in_schema: leaf.schemaPath.slice(1).map((e) => e.name),
      codec: parquet.codec as CompressionCodec,
      num_values: BigInt((to - from) * width),
      total_compressed_size: BigInt(writer.offset - start),
      total_uncompressed_size: BigInt(uncompressed),
      data_page_offset: BigInt(start),
    },
  };
}

/** A DATA_PAGE_V2 of rows [a, b); returns its uncompressed size, header included. */
function writePage(
  parquet: ParquetWriter,
  list: boolean,
  values: Numbers,
  width: number,
  a: number,
  b: number,
) {
  const writer = parquet.writer;
  const rows = b - a;
  const count = rows * width;
  const bytes = values.BYTES_PER_ELEMENT;
  const plain = new Uint8Array(values.buffer, values.byteOffset + a * width * bytes, count * bytes);
  // SNAPPY: our compressor (the same format, literals copied as ranges); other codecs: the writer's.
  const compress =
    parquet.codec === 'SNAPPY'
      ? snappyCompress
      : (parquet.compressors as Record<string, ((input: Uint8Array) => Uint8Array) | undefined>)[
          parquet.codec
        ];
  const body = compress === undefined ? plain : compress(plain);
  const levels = list ? listLevels(rows, width) : undefined;
  const levelBytes = (levels?.reps.length ?? 0) + (levels?.defs.length ?? 0);
  const headerStart = writer.offset;
  writePageHeader(writer, {
    type: 'DATA_PAGE_V2',
    uncompressed_page_size: levelBytes + plain.length,
    compressed_page_size: levelBytes + body.length,
    data_page_header_v2: {
      num_values: count,
      num_nulls: 0,
      num_rows: rows,
      encoding: 'PLAIN',
      definition_levels_byte_length: levels?.defs.length ?? 0,
      repetition_levels_byte_length: levels?.reps.length ?? 0,
      is_compressed: true,
    },
  });
  const headerBytes = writer.offset - headerStart;
  if (levels !== undefined) {
    writer.appendBytes(levels.reps);
    writer.appendBytes(levels.defs);
  }
  writer.appendBytes(body);
  return headerBytes + levelBytes + plain.length;
}

/**
 * The levels of `rows` lists of `width` required elements, RLE/bit-packed hybrid (bit width 1, no length
 * prefix, as DATA_PAGE_V2 holds them): repetition 0 at each row's first element and 1 at the others, one
 * bit-packed run; definition 1 everywhere, one RLE run.
 */
export function listLevels(rows: number, width: number): { reps: Uint8Array; defs: Uint8Array } {
  const count = rows * width;
  const groups = Math.ceil(count / 8);
  const header = varint(groups * 2 + 1);
  const reps = new Uint8Array(header.length + groups);
  reps.set(header);
  for (let i = 0, row = 0; i < count; i++, row++) {
    if (row === width) row = 0;
    const at = header.length + (i >> 3);
    if (row !== 0) reps[at] = (reps[at] as number) | (1 << (i & 7));
  }
  const run = varint(count * 2);
  const defs = new Uint8Array(run.length + 1);
  defs.set(run);
  defs[run.length] = 1;
  return { reps, defs };
}

/** The same levels as arrays, for hyparquet-writer's column writer. */
function listLevelArrays(rows: number, width: number): { defs: number[]; reps: number[] } {
  const count = rows * width;
  const reps = new Array<number>(width === 0 ? rows : count);
  const defs = new Array<number>(reps.length);
  if (width === 0) return { reps: reps.fill(0), defs: defs.fill(0) };
  for (let i = 0; i < count; i++) reps[i] = i % width === 0 ? 0 : 1;
  return { reps, defs: defs.fill(1) };
}

/** An unsigned LEB128 varint. */
function varint(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}
