/**
 * The port through which batch jobs read and write Parquet: a file opened by its footer and read a row
 * group at a time, and results encoded as headerless row groups joined by a footer at the commit. The
 * adapter is `shared/adapters/parquet-codec.ts` (hyparquet, hyparquet-writer); the core knows only these
 * shapes, so the job lifecycle stays free of any Parquet library.
 */
import type { InferOutput } from '../protocol/infer-types';
import type { Datatype, TensorSpec } from '../tensor';
import type { ColumnChunk, FileColumn, RowId } from './parquet-mapping';
import type { ObjectRef } from './ports';

/** A row group: its rows and the bytes its column chunks span. */
export interface RowGroupInfo {
  readonly index: number;
  /** The file row index of its first row. */
  readonly firstRow: number;
  readonly rows: number;
  /** Bytes of its column chunks, compressed (what a read of all its columns fetches). */
  readonly bytes: number;
}

/** What the footer says. */
export interface ParquetFileInfo {
  readonly rows: number;
  /** Top-level columns a model input can take: scalars and LIST columns (structs and maps are left out). */
  readonly columns: readonly FileColumn[];
  readonly rowGroups: readonly RowGroupInfo[];
}

/** A Parquet object opened by its footer. */
export interface ParquetFile {
  readonly info: ParquetFileInfo;
  /**
   * Decodes the named columns of one row group.
   *
   * @throws UnsupportedInputError when a page cannot be decoded (the input's fault); store errors as they are
   */
  readRowGroup(index: number, columns: readonly string[], options?: ReadOptions): Promise<ColumnChunk>;
}

/** How a row group is read. */
export interface ReadOptions {
  /**
   * The decoded values may reuse the memory of the row group read two reads before with `reuse` (row groups
   * alternate between two sets of buffers): for a caller that is done with a row group before it reads the
   * one after the next, as a shard's source is.
   */
  readonly reuse?: boolean;
}

/** Which version of the object to open. */
export interface ParquetOpenOptions {
  /** The object's size in bytes, as the job pinned it. */
  readonly size: number;
  readonly etag?: string;
  readonly versionId?: string;
}

/** The id column's Parquet type. */
export type IdColumnType = 'STRING' | 'INT64' | 'DOUBLE';

/** One output column: a scalar per row when `scalar`, else a list per row. */
export interface OutputColumn {
  readonly name: string;
  readonly datatype: Datatype;
  readonly scalar: boolean;
}

/** The columns of a results file. */
export interface ParquetOutputSchema {
  readonly idColumn: string;
  readonly idType: IdColumnType;
  readonly outputs: readonly OutputColumn[];
}

/**
 * The output schema for a model's outputs: a scalar column for each output whose examples hold exactly
 * one element (`[batch]` or `[batch, 1]`), a list column for every other.
 */
export function outputSchemaFor(
  outputs: readonly TensorSpec[],
  idColumn: string,
  idType: IdColumnType,
): ParquetOutputSchema {
  return {
    idColumn,
    idType,
    outputs: outputs.map((spec) => {
      const example = spec.shape.slice(1);
      return { name: spec.name, datatype: spec.datatype, scalar: example.every((d) => d === 1) };
    }),
  };
}

/** Scored rows: their ids and each output with the batch axis first, as a micro-batch's run returns them. */
export interface ScoredBatch {
  readonly ids: readonly RowId[];
  readonly outputs: readonly InferOutput[];
}

/** A part's bytes and what the footer needs to know of them (JSON text, offsets relative to the part). */
export interface EncodedPart {
  readonly bytes: Uint8Array;
  readonly rows: number;
  /** The part's row groups as JSON, to keep beside the part (in the checkpoint) until the commit. */
  readonly rowGroups: string;
}

/** What a footer needs of a stored part. */
export interface PartLayout {
  /** The part's bytes. */
  readonly bytes: number;
  /** {@link EncodedPart.rowGroups}. */
  readonly rowGroups: string;
}

/** Parquet reading and writing, as batch jobs need it. */
export interface ParquetCodec {
  /**
   * Opens an object by its footer, through ranged reads of the batch object store.
   *
   * @throws UnsupportedInputError when the object is not a Parquet file, or its footer is unusable
   */
  open(ref: ObjectRef, options: ParquetOpenOptions): Promise<ParquetFile>;
  /** Scored rows, in order, as the bytes of one part: row groups with no header and no footer. */
  encodeRowGroups(schema: ParquetOutputSchema, batches: readonly ScoredBatch[]): EncodedPart;
  /** The bytes before the first part (`PAR1`) and after the last (the footer) of the file of `parts`. */
  fileEnds(
    schema: ParquetOutputSchema,
    parts: readonly PartLayout[],
  ): { readonly head: Uint8Array; readonly footer: Uint8Array };
}
