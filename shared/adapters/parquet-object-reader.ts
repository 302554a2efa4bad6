/**
 * Reads a Parquet object through the batch object store with ranged reads: the footer first (one read of
 * the file's tail), then one row group at a time, only the planned columns. Memory is bounded by a row
 * group's column chunks and their decoded values, never by the file's size. The decoder is `hyparquet`
 * (pure JavaScript, MIT) with `hyparquet-compressors` for zstd, gzip, brotli and lz4; BENCHMARKS.md says
 * why it was chosen. Flat columns (the common table) skip hyparquet's list assembly
 * ({@link decodeFlatColumn}): numbers without nulls stay in the typed array the page decoded into; simple
 * LIST columns are decoded into one array of values and a start and length per row
 * ({@link decodeListColumn}), with no array per row.
 */
import {
  type AsyncBuffer,
  type ColumnMetaData,
  type FileMetaData,
  parquetMetadataAsync,
  parquetRead,
  parquetSchema,
  type SchemaTree,
} from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { UnsupportedInputError } from '../core/batch/errors';
import { type ColumnChunk, type FileColumn, type ListValues, listRow } from '../core/batch/parquet-mapping';
import type {
  IdColumnType,
  ParquetFile,
  ParquetFileInfo,
  ReadOptions,
  RowGroupInfo,
} from '../core/batch/parquet-port';
import type { BatchObjectStore, ObjectRef } from '../core/batch/ports';
import { decodeFlatColumn } from './parquet-flat-column';
import { decodeListColumn, isSimpleList } from './parquet-list-column';
import { checkPageHeaders } from './parquet-pages';

export type { ParquetFileInfo, RowGroupInfo } from '../core/batch/parquet-port';

/** Which version of the object to read, and caps. */
export interface ParquetReaderOptions {
  /** The object's size in bytes (from a HEAD or the event). */
  readonly size: number;
  readonly etag?: string;
  readonly versionId?: string;
  /** The largest footer (file metadata) accepted. Default 16 MiB. */
  readonly maxFooterBytes?: number;
}

/**
 * One Parquet object, opened by its footer.
 *
 * @example
 * const reader = await ParquetObjectReader.open(store, { bucket, key }, { size, etag });
 * for (const group of reader.info.rowGroups) {
 *   const chunk = await reader.readRowGroup(group.index, ['id', 'x']);
 *   chunk.column('x'); // the decoded values of the row group's rows
 * }
 */
export class ParquetObjectReader implements ParquetFile {
  readonly info: ParquetFileInfo;
  readonly #file: CountingBuffer;
  readonly #metadata: FileMetaData;
  readonly #root: SchemaTree;
  /** Top-level columns that are neither lists nor structs, by name. */
  readonly #flat = new Map<string, SchemaTree>();
  /** Value arrays of list columns kept for reuse, by row-group parity and column (ReadOptions). */
  readonly #spares = new Map<string, Float32Array | Float64Array>();
  /** Three-level LIST columns of a primitive element, by name: their schema path to the leaf. */
  readonly #lists = new Map<string, SchemaTree[]>();

  private constructor(file: CountingBuffer, metadata: FileMetaData, dataEnd: number) {
    this.#file = file;
    this.#metadata = metadata;
    this.info = describeFile(metadata, dataEnd);
    this.#root = parquetSchema(metadata);
    for (const child of this.#root.children) {
      if (child.children.length === 0 && child.element.repetition_type !== 'REPEATED') {
        this.#flat.set(child.element.name, child);
      }
      const repeated = child.children[0];
      const path = [this.#root, child, ...(repeated === undefined ? [] : [repeated, ...repeated.children])];
      if (isSimpleList(path)) this.#lists.set(child.element.name, path);
    }
  }

  /**
   * Reads the footer.
   *
   * @throws UnsupportedInputError when the object is not a Parquet file or its footer is over the cap
   */
  static async open(
    store: BatchObjectStore,
    ref: ObjectRef,
    options: ParquetReaderOptions,
  ): Promise<ParquetObjectReader> {
    const file = new CountingBuffer(store, ref, options);
    const maxFooter = options.maxFooterBytes ?? 16 * 1024 * 1024;
    if (options.size < 12)
      throw new UnsupportedInputError(`${ref.key} is not a Parquet file: ${options.size} bytes`);
    // One read of the tail, which holds the footer of most files: the footer's own read is served from it.
    const tailStart = Math.max(0, options.size - TAIL_BYTES);
    await file.keepTail(tailStart);
    const tail = new Uint8Array(await file.slice(options.size - 8, options.size));
    const view = new DataView(tail.buffer, tail.byteOffset, 8);
    if (view.getUint32(4, true) !== 0x31524150) {
      throw new UnsupportedInputError(`${ref.key} is not a Parquet file: it does not end with PAR1`);
    }
    const footerBytes = view.getUint32(0, true);
    if (footerBytes > maxFooter || footerBytes + 12 > options.size) {
      throw new UnsupportedInputError(
        `${ref.key}: the Parquet footer of ${footerBytes} bytes is over the limit of ${maxFooter} or the file`,
      );
    }
    let metadata: FileMetaData;
    try {
      metadata = await parquetMetadataAsync(file, {
        initialFetchSize: Math.min(options.size, footerBytes + 8),
      });
      // Row groups are read with ranged reads of their own, never from the tail (a small file's tail is all of it).
      file.dropTail();
    } catch (error) {
      if (file.failure !== undefined) throw file.failure;
      throw new UnsupportedInputError(`${ref.key}: the Parquet footer cannot be read: ${messageOf(error)}`, {
        cause: error,
      });
    }
    try {
      // The data lies between the leading `PAR1` and the footer: a chunk outside it is a lying footer.
      return new ParquetObjectReader(file, metadata, options.size - 8 - footerBytes);
    } catch (error) {
      if (error instanceof UnsupportedInputError) throw error;
      throw new UnsupportedInputError(`${ref.key}: the Parquet schema cannot be read: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }

  /** Bytes fetched so far (footer and column chunks). */
  get bytesRead(): number {
    return this.#file.bytesRead;
  }

  /**
   * Decodes the named columns of one row group.
   *
   * @throws UnsupportedInputError when a page cannot be decoded (corrupt data, an unsupported encoding)
   */
  async readRowGroup(
    index: number,
    columns: readonly string[],
    options: ReadOptions = {},
  ): Promise<ColumnChunk> {
    const group = this.info.rowGroups[index];
    if (group === undefined) throw new RangeError(`row group ${index} of ${this.info.rowGroups.length}`);
    const values = new Map<string, ArrayLike<unknown>>();
    const lists = new Map<string, ListValues>();
    const direct = columns.filter((c) => this.#flat.has(c) || this.#lists.has(c));
    const nested = columns.filter((c) => !this.#flat.has(c) && !this.#lists.has(c));
    this.#checkDeclaredValues(index, columns);
    try {
      if (direct.length > 0) await this.#readDirect(index, direct, values, lists, options.reuse === true);
      if (nested.length > 0) await this.#readNested(group, nested, values);
    } catch (error) {
      // The store's errors (a replaced object, throttling) are not the file's fault: they pass as they are.
      if (this.#file.failure !== undefined) throw this.#file.failure;
      if (error instanceof UnsupportedInputError) throw error;
      throw new UnsupportedInputError(`row group ${index} cannot be decoded: ${messageOf(error)}`, {
        cause: error,
      });
    }
    return {
      firstRow: group.firstRow,
      rows: group.rows,
      column: (name) => {
        let found = values.get(name);
        const list = lists.get(name);
        if (found === undefined && list !== undefined) {
          // Rows as hyparquet's reader gives them, made only when asked for (mapRows reads `list`).
          found = Array.from({ length: group.rows }, (_, at) => {
            const row = listRow(list, at);
            return ArrayBuffer.isView(row) ? Array.from(row as Float32Array) : row;
          });
          values.set(name, found);
        }
        if (found === undefined) throw new RangeError(`column '${name}' was not read`);
        return found;
      },
      list: (name) => lists.get(name),
    };
  }

  /**
   * Refuses a row group whose planned chunks declare more values than one row group may decode, before
   * reading it: decoding follows the footer's counts (pages are then held to them: `pageLimits` in
   * parquet-pages.ts), so this bounds what any file, well made or hostile, can make the job allocate.
   *
   * @throws UnsupportedInputError naming the row group, the count and the limit
   */
  #checkDeclaredValues(index: number, columns: readonly string[]): void {
    let declared = 0;
    for (const meta of this.#chunksOf(index, columns)) declared += Number(meta.num_values);
    if (!(declared <= MAX_ROW_GROUP_VALUES)) {
      throw new UnsupportedInputError(
        `row group ${index} declares ${declared} values in the columns read (${columns.join(', ')}), more than the ${MAX_ROW_GROUP_VALUES} one row group may decode: write the file with smaller row groups`,
      );
    }
  }

  /** The column chunks (every leaf) of the top-level `columns` in row group `index`. */
  #chunksOf(index: number, columns: readonly string[]): ColumnMetaData[] {
    return (this.#metadata.row_groups[index]?.columns ?? []).flatMap((c) =>
      c.meta_data !== undefined && columns.includes(c.meta_data.path_in_schema[0] as string)
        ? [c.meta_data]
        : [],
    );
  }

  /** Flat and simple list columns: their chunks in one ranged read, decoded without list assembly. */
  async #readDirect(
    index: number,
    columns: readonly string[],
    into: Map<string, ArrayLike<unknown>>,
    lists: Map<string, ListValues>,
    reuse: boolean,
  ): Promise<void> {
    const group = this.#metadata.row_groups[index];
    const rows = Number(group?.num_rows ?? 0);
    const chunks = columns.map((name) => {
      const depth = this.#lists.has(name) ? 3 : 1;
      const chunk = group?.columns.find(
        (c) => c.meta_data?.path_in_schema.length === depth && c.meta_data.path_in_schema[0] === name,
      );
      const meta = chunk?.meta_data;
      if (meta === undefined)
        throw new UnsupportedInputError(`row group ${index} has no chunk of column '${name}'`);
      const start = chunkStart(meta);
      return { name, meta, start, end: start + Number(meta.total_compressed_size) };
    });
    const low = Math.min(...chunks.map((c) => c.start));
    const high = Math.max(...chunks.map((c) => c.end));
    const bytes = new Uint8Array(await this.#file.slice(low, high));
    for (const { name, meta, start, end } of chunks) {
      const chunkBytes = bytes.subarray(start - low, end - low);
      const listPath = this.#lists.get(name);
      if (listPath !== undefined) {
        // Row groups alternate between two sets of value arrays when the caller allows it (ReadOptions).
        const key = `${index % 2}:${name}`;
        const spare = reuse ? { value: this.#spares.get(key) } : undefined;
        const list = decodeListColumn(chunkBytes, meta, listPath, compressors, rows, spare);
        if (spare?.value !== undefined) this.#spares.set(key, spare.value);
        lists.set(name, list);
        continue;
      }
      const node = this.#flat.get(name) as SchemaTree;
      into.set(name, decodeFlatColumn(chunkBytes, meta, [this.#root, node], compressors, rows));
    }
  }

  /** List columns, through hyparquet's reader (which assembles them). */
  async #readNested(
    group: RowGroupInfo,
    columns: readonly string[],
    into: Map<string, ArrayLike<unknown>>,
  ): Promise<void> {
    const pieces = new Map<string, { rowStart: number; data: ArrayLike<unknown> }[]>();
    for (const c of columns) pieces.set(c, []);
    // hyparquet's page reader allocates what a page header declares: the headers are checked first
    // (pageLimits), on the chunks' bytes read once and then handed to it from memory.
    const chunks = this.#chunksOf(group.index, columns);
    if (chunks.length === 0)
      throw new UnsupportedInputError(`row group ${group.index} has no chunk of ${columns.join(', ')}`);
    const low = Math.min(...chunks.map(chunkStart));
    const high = Math.max(...chunks.map((m) => chunkStart(m) + Number(m.total_compressed_size)));
    const buffer = await this.#file.slice(low, high);
    const bytes = new Uint8Array(buffer);
    for (const meta of chunks) {
      const start = chunkStart(meta) - low;
      checkPageHeaders(bytes.subarray(start, start + Number(meta.total_compressed_size)), meta);
    }
    const file = this.#file;
    const fromMemory = (start: number, end: number) =>
      start === low && end === high ? buffer : bytes.slice(start - low, end - low).buffer;
    await parquetRead({
      file: {
        byteLength: file.byteLength,
        slice: (start, end = file.byteLength) =>
          start >= low && end <= high ? fromMemory(start, end) : file.slice(start, end),
      },
      metadata: this.#metadata,
      columns: [...columns],
      rowStart: group.firstRow,
      rowEnd: group.firstRow + group.rows,
      compressors,
      onChunk: ({ columnName, columnData, rowStart }) => {
        pieces.get(columnName)?.push({ rowStart, data: columnData });
      },
    });
    for (const [name, list] of pieces) into.set(name, joinPieces(name, list, group));
  }
}

/** The column's values for the whole row group, in row order, checked to be complete. */
function joinPieces(
  name: string,
  pieces: { rowStart: number; data: ArrayLike<unknown> }[],
  group: RowGroupInfo,
): ArrayLike<unknown> {
  pieces.sort((a, b) => a.rowStart - b.rowStart);
  const first = pieces[0];
  if (pieces.length === 1 && first !== undefined && first.data.length === group.rows) return first.data;
  const joined = new Array<unknown>(group.rows);
  let filled = 0;
  for (const piece of pieces) {
    for (let k = 0; k < piece.data.length; k++) joined[piece.rowStart - group.firstRow + k] = piece.data[k];
    filled += piece.data.length;
  }
  if (filled !== group.rows) {
    throw new UnsupportedInputError(
      `row group ${group.index}: column '${name}' holds ${filled} of ${group.rows} rows`,
    );
  }
  return joined;
}

/**
 * The footer's columns and row groups, checked against the file: every column chunk must lie within the
 * data (after `PAR1`, before the footer), row counts must be whole and add up to the file's. A footer that
 * lies is the input's fault, found before any row is read.
 *
 * @throws UnsupportedInputError naming what does not add up
 */
function describeFile(metadata: FileMetaData, dataEnd: number): ParquetFileInfo {
  const columns: FileColumn[] = [];
  for (const child of parquetSchema(metadata).children) {
    const element = child.element;
    const isList = element.converted_type === 'LIST' || element.logical_type?.type === 'LIST';
    if (isList) columns.push({ name: element.name, list: true });
    else if (child.children.length === 0) {
      // Decimals decode to fractional numbers: an INT64 id column could not hold them.
      const decimal = element.converted_type === 'DECIMAL' || element.logical_type?.type === 'DECIMAL';
      const idType = decimal ? 'DOUBLE' : ID_TYPES[element.type ?? ''];
      columns.push({ name: element.name, list: false, ...(idType === undefined ? {} : { idType }) });
    }
  }
  let firstRow = 0;
  const rowGroups = metadata.row_groups.map((group, index): RowGroupInfo => {
    const rows = Number(group.num_rows);
    if (!Number.isSafeInteger(rows) || rows < 0) {
      throw new UnsupportedInputError(`the Parquet footer says row group ${index} has ${rows} rows`);
    }
    let bytes = 0;
    for (const column of group.columns) {
      const meta = column.meta_data;
      if (meta === undefined) continue;
      const start = chunkStart(meta);
      const size = Number(meta.total_compressed_size);
      if (!(start >= 4 && size >= 0 && start + size <= dataEnd)) {
        throw new UnsupportedInputError(
          `the Parquet footer places column '${meta.path_in_schema.join('.')}' of row group ${index} at bytes [${start}, ${start + size}), outside the data [4, ${dataEnd})`,
        );
      }
      bytes += size;
    }
    const info = { index, firstRow, rows, bytes };
    firstRow += rows;
    return info;
  });
  const rows = Number(metadata.num_rows);
  if (rows !== firstRow) {
    throw new UnsupportedInputError(
      `the Parquet footer says ${rows} rows, but its row groups hold ${firstRow}`,
    );
  }
  return { rows, columns, rowGroups };
}

/** Where a column chunk starts: its dictionary page, if any (0 means none, as some writers say it). */
function chunkStart(meta: ColumnMetaData): number {
  return Number(meta.dictionary_page_offset || meta.data_page_offset);
}

/**
 * The most values (levels: values, nulls and empty lists) the columns read from one row group may declare
 * together: 2^28, about 1 GiB of 4-byte values, beyond a 1,048,576-row row group (pyarrow's default) of
 * a 128-float list column.
 */
export const MAX_ROW_GROUP_VALUES = 2 ** 28;

/** Bytes read from the end of a file at open: the footer and the trailer of most files fit. */
const TAIL_BYTES = 64 * 1024;

/** Physical types whose values an id column of the output can hold. */
const ID_TYPES: Readonly<Record<string, IdColumnType>> = {
  BYTE_ARRAY: 'STRING',
  INT32: 'INT64',
  INT64: 'INT64',
  FLOAT: 'DOUBLE',
  DOUBLE: 'DOUBLE',
};

/** hyparquet's view of the object: ranged reads of one version, counted. */
class CountingBuffer implements AsyncBuffer {
  readonly byteLength: number;
  bytesRead = 0;
  /** The last error of a read, so that callers tell a store failure from a corrupt file. */
  failure: unknown;
  readonly #store: BatchObjectStore;
  readonly #ref: ObjectRef;
  readonly #options: ParquetReaderOptions;
  #tail: { readonly start: number; readonly bytes: Uint8Array } | undefined;

  constructor(store: BatchObjectStore, ref: ObjectRef, options: ParquetReaderOptions) {
    this.#store = store;
    this.#ref = ref;
    this.#options = options;
    this.byteLength = options.size;
  }

  /** Forgets the tail read by {@link keepTail}. */
  dropTail(): void {
    this.#tail = undefined;
  }

  /** Reads bytes [start, end of file) once; later slices within them are served from memory. */
  async keepTail(start: number): Promise<void> {
    this.#tail = { start, bytes: new Uint8Array(await this.slice(start, this.byteLength)) };
  }

  async slice(start: number, end?: number): Promise<ArrayBuffer> {
    const tail = this.#tail;
    const stop = Math.min(end ?? this.byteLength, this.byteLength);
    if (tail !== undefined && start >= tail.start && stop <= this.byteLength && start <= stop) {
      return tail.bytes.slice(start - tail.start, stop - tail.start).buffer;
    }
    try {
      return await this.#read(start, end);
    } catch (error) {
      this.failure = error;
      throw error;
    }
  }

  async #read(start: number, end: number | undefined): Promise<ArrayBuffer> {
    const stop = Math.min(end ?? this.byteLength, this.byteLength);
    const out = new Uint8Array(Math.max(0, stop - start));
    let at = 0;
    const { etag, versionId } = this.#options;
    for await (const chunk of this.#store.read(this.#ref, {
      start,
      end: stop,
      ...(etag === undefined ? {} : { etag }),
      ...(versionId === undefined ? {} : { versionId }),
    })) {
      if (at + chunk.byteLength > out.byteLength) throw new Error(`read past the range ${start}-${stop}`);
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    if (at !== out.byteLength) {
      throw new Error(`short read of ${this.#ref.key}: ${at} of ${out.byteLength} bytes at ${start}`);
    }
    this.bytesRead += at;
    return out.buffer;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
