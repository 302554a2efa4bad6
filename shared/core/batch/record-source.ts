/**
 * The port between the job lifecycle and an input format. A record source reads one shard from where its
 * checkpoint says, a part at a time: it parses (or maps) the part's records, scores them in micro-batches
 * and hands back the part's encoded result and error bytes with the position where the next part starts.
 * The lifecycle (prepare, parts, checkpoints, continuation, commit) knows no format: JSON Lines and CSV
 * are a {@link LineSource} (byte ranges, lines), Parquet a {@link ParquetSource} (row groups, columns).
 */

/** Bytes appended in order, as a part's output holds them. */
export interface PartBytes {
  readonly bytes: number;
  chunks(): Uint8Array[];
}

/** One scored part, ready to be written as immutable part objects. */
export interface ScoredPart {
  readonly read: number;
  readonly scored: number;
  readonly failed: number;
  /** Result bytes (JSON lines, or Parquet row groups without header and footer). */
  readonly out: PartBytes;
  /** Error lines. */
  readonly errors: PartBytes;
  /** Bytes [start, end) of the input and its first and last line (Parquet: row groups and rows). */
  readonly start: number;
  readonly end: number;
  readonly firstLine: number;
  readonly lastLine: number;
  /** Where the next part starts. */
  readonly next: { readonly offset: number; readonly line: number };
  /** Parquet output: the part's row-group metadata, which the commit needs for the footer. */
  readonly rowGroups?: string;
}

/** One shard's records, a part at a time, from its checkpoint on. */
export interface RecordSource {
  /** Whether the shard holds another part; `false`: the shard is done. */
  more(): Promise<boolean>;
  /** Reads and scores the next part; only after {@link more} answered `true`. */
  next(): Promise<ScoredPart>;
  /** Releases the read (a stream stopped early frees its socket). */
  close(): Promise<void>;
}

/** A shard with nothing left to read. */
export const EMPTY_SOURCE: RecordSource = Object.freeze({
  more: async () => false,
  next: async () => {
    throw new Error('an empty record source has no part');
  },
  close: async () => {},
});
