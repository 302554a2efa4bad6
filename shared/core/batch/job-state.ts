/**
 * What a batch job writes down: the job (pinned when it starts), checkpoints of shards, the plan of a
 * sharded run and the manifest, the commit point. Completed parts are immutable objects; a checkpoint
 * lists them and the input offset where the next part starts, so a resumed run reads on from there.
 */
import { BatchStateError, UnreadableBatchStateError } from './errors';
import type { InputFormat, OutputFormat } from './object-names';
import type { ParquetMappingConfig } from './parquet-mapping';
import type { ParquetOutputSchema } from './parquet-port';

/** The `format` tag of each stored document; a reader refuses any other. */
export const CHECKPOINT_FORMAT = 'onnx-serverless/batch-checkpoint@1';
export const MANIFEST_FORMAT = 'onnx-serverless/batch-manifest@1';
export const PLAN_FORMAT = 'onnx-serverless/batch-plan@1';

/** Everything fixed when a job starts, so every invocation and every shard scores the same way. */
export interface JobSpec {
  readonly input: {
    readonly bucket: string;
    readonly key: string;
    readonly etag: string;
    readonly versionId?: string;
    readonly size: number;
    readonly format: InputFormat;
    readonly gzip: boolean;
  };
  readonly model: {
    readonly name: string;
    readonly version: string;
    readonly sha256: string;
    readonly maxBatchSize: number;
  };
  readonly output: {
    readonly bucket: string;
    readonly out: string;
    readonly errors: string;
    readonly manifest: string;
    readonly work: string;
    readonly gzip: boolean;
    /** What the results are written as; absent: JSON Lines (jobs pinned before Parquet output existed). */
    readonly format?: OutputFormat;
  };
  /** Parquet inputs: what the footer said when the job started, and how columns fill inputs and outputs. */
  readonly parquet?: ParquetJob;
  /** CSV: the header line (line 1), which shards that start later need too. */
  readonly csvHeader?: string;
  readonly settings: {
    readonly partRecords: number;
    readonly partBytes: number;
    readonly maxBatchBytes: number;
    readonly maxLineBytes: number;
    readonly joinInput: boolean;
    readonly csvIdColumn: string;
  };
  /** ISO time the job started. */
  readonly startedAt: string;
}

/** What a Parquet job pins when it starts, so every invocation and shard reads the file the same way. */
export interface ParquetJob {
  /** The model's `batch` mapping (config.json), or the default one. */
  readonly mapping: ParquetMappingConfig;
  /** Rows and row groups the footer declares: the parts must account for exactly these. */
  readonly rows: number;
  readonly rowGroups: number;
  /** The results file's columns (also when the results are written as JSON Lines: unused then). */
  readonly schema: ParquetOutputSchema;
}

/**
 * A byte range of the input (for Parquet, a range of row groups [start, end)): lines that *start* in [start, end) belong to it (a line that runs past `end`
 * is read to its end). `end` null: to the end of the input. `newlinesBefore` counts the `\n` bytes before
 * `start`, so lines keep their numbers in the file; when absent the shard counts them itself.
 */
export interface ShardSpec {
  readonly start: number;
  readonly end: number | null;
  readonly newlinesBefore?: number;
}

/** The whole input as one shard: what an S3-triggered run scores. */
export const WHOLE_INPUT: ShardSpec = Object.freeze({ start: 0, end: null, newlinesBefore: 0 });

/**
 * A completed part: records of lines `firstLine`..`lastLine`, bytes [start, end) of the input. For a
 * Parquet input, row groups [start, end) and rows `firstLine`..`lastLine` (0-based row indices).
 */
export interface PartRecord {
  readonly no: number;
  readonly start: number;
  readonly end: number;
  readonly firstLine: number;
  readonly lastLine: number;
  readonly read: number;
  readonly scored: number;
  readonly failed: number;
  /** The part's result lines; absent when no record of the part was scored. */
  readonly out?: { readonly key: string; readonly bytes: number };
  /** The part's error lines; absent when none failed. */
  readonly errors?: { readonly key: string; readonly bytes: number };
  /**
   * Parquet output: the part's row-group metadata (JSON, offsets relative to the part), which the commit
   * needs to write the file's footer; kept here because the part's bytes have no footer of their own.
   */
  readonly rowGroups?: string;
  readonly ms: number;
}

/** A shard's progress, rewritten after each part; `done` once its last line is scored. */
export interface Checkpoint {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly job: JobSpec;
  readonly shard: ShardSpec;
  /**
   * Where the next part starts: a line start (for Parquet: `offset` is the next row group, `line` its first
   * row). `null` before the first part of a shard that starts mid-file.
   */
  readonly next: { readonly offset: number; readonly line: number } | null;
  readonly parts: readonly PartRecord[];
  readonly done: boolean;
  /** Invocations that worked on this shard. */
  readonly invocations: number;
}

/** A sharded (Step Functions) run: the job and its shards, written by the plan step. */
export interface Plan {
  readonly format: typeof PLAN_FORMAT;
  readonly job: JobSpec;
  readonly shards: readonly ShardSpec[];
}

/** `failed`: the job could not run at all (see `error`); no output object was written. */
export type ManifestStatus = 'succeeded' | 'failed';

/** The commit point of a job, written last. */
export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly status: ManifestStatus;
  readonly input: {
    readonly bucket: string;
    readonly key: string;
    readonly etag: string;
    readonly versionId?: string;
    readonly size: number;
    readonly format?: InputFormat;
    readonly gzip?: boolean;
  };
  readonly model: { readonly name: string; readonly version?: string; readonly sha256?: string };
  readonly counts: { readonly read: number; readonly scored: number; readonly failed: number };
  readonly outputs?: {
    readonly out: { readonly key: string; readonly bytes: number };
    readonly errors: { readonly key: string; readonly bytes: number };
  };
  readonly parts: readonly (PartRecord & { readonly shard: readonly [number, number | null] })[];
  readonly timings: {
    readonly startedAt: string;
    readonly finishedAt: string;
    /** Time spent reading, scoring and writing parts, summed over parts. */
    readonly scoringMs: number;
    readonly invocations: number;
  };
  readonly error?: { readonly code: string; readonly message: string };
}

/** `all` for the whole input, else `<start>-<end|end>`: the folder of a shard's parts. */
export function shardId(shard: ShardSpec): string {
  return shard.start === 0 && shard.end === null ? 'all' : `${shard.start}-${shard.end ?? 'end'}`;
}

/** Key of a shard's checkpoint, in the job's work folder. */
export function checkpointKey(work: string, shard: ShardSpec): string {
  return `${work}/${shardId(shard)}/checkpoint.json`;
}

/** Keys of a part's objects. */
export function partKeys(job: JobSpec, shard: ShardSpec, no: number): { out: string; errors: string } {
  const stem = `${job.output.work}/${shardId(shard)}/${String(no).padStart(6, '0')}`;
  const out =
    job.output.format === 'parquet'
      ? `${stem}.out.parquet`
      : `${stem}.out.jsonl${job.output.gzip ? '.gz' : ''}`;
  return { out, errors: `${stem}.errors.jsonl` };
}

/** Keys of the first and last bytes of a Parquet results file (`PAR1`, the footer), written at the commit. */
export function parquetEndKeys(work: string): { head: string; footer: string } {
  return { head: `${work}/head.parquet-bytes`, footer: `${work}/footer.parquet-bytes` };
}

/**
 * Row groups of a Parquet input cut into shards of about `shardBytes` compressed bytes, each at least one
 * row group (a Parquet file cannot be entered mid-row-group); the last is open-ended. An empty file: one.
 *
 * @example
 * rowGroupShards([60, 60, 60, 60], 100); // [{start: 0, end: 2}, {start: 2, end: null}]
 */
export function rowGroupShards(
  groupBytes: readonly number[],
  shardBytes: number,
): { start: number; end: number | null }[] {
  const shards: { start: number; end: number | null }[] = [];
  let start = 0;
  let bytes = 0;
  groupBytes.forEach((b, i) => {
    bytes += b;
    if (bytes >= shardBytes && i + 1 < groupBytes.length) {
      shards.push({ start, end: i + 1 });
      start = i + 1;
      bytes = 0;
    }
  });
  shards.push({ start, end: null });
  return shards;
}

/** Keys of a sharded run's plan and of the shard list its Distributed Map reads. */
export function planKeys(work: string): { plan: string; items: string } {
  return { plan: `${work}/plan.json`, items: `${work}/shards.json` };
}

/**
 * Fixed-size byte ranges covering an input of `size` bytes; the last one is open-ended (`end: null`) so a
 * line that starts in it is never lost. Gzip inputs cannot be entered mid-stream: one shard.
 *
 * @example
 * shardRanges(250, 100, false); // [{start: 0, end: 100}, {start: 100, end: 200}, {start: 200, end: null}]
 */
export function shardRanges(
  size: number,
  shardBytes: number,
  gzip: boolean,
): { start: number; end: number | null }[] {
  if (gzip || size <= shardBytes) return [{ start: 0, end: null }];
  const ranges: { start: number; end: number | null }[] = [];
  for (let start = 0; start < size; start += shardBytes) {
    ranges.push({ start, end: start + shardBytes >= size ? null : start + shardBytes });
  }
  return ranges;
}

/**
 * Checks, before a commit, that the parts of `checkpoints` (in input order) account for the whole input:
 * from byte 0 each starts where the one before ended, the last ends at the input's size (for gzip the
 * decoded size is known to no one: there only the tiling is checked), and each counts every record it read
 * as scored or failed. A job that read less than its input has not succeeded.
 *
 * @throws {@link BatchStateError} naming the first gap
 */
export function assertPartsCoverInput(job: JobSpec, checkpoints: readonly Checkpoint[]): void {
  if (job.parquet !== undefined) {
    assertPartsCoverRowGroups(job, job.parquet, checkpoints);
    return;
  }
  const what = `the parts of '${job.input.key}'`;
  let at = 0;
  for (const checkpoint of checkpoints) {
    if (!checkpoint.done) {
      throw new BatchStateError(
        `${what}: shard [${checkpoint.shard.start}, ${checkpoint.shard.end ?? 'end'}) is not done`,
      );
    }
    for (const part of checkpoint.parts) {
      if (part.start !== at) {
        throw new BatchStateError(
          part.start > at
            ? `${what} leave bytes [${at}, ${part.start}) unread`
            : `${what} read bytes [${part.start}, ${at}) twice`,
        );
      }
      if (part.read !== part.scored + part.failed) {
        throw new BatchStateError(
          `${what}: part ${part.no} read ${part.read} records but scored ${part.scored} and failed ${part.failed}`,
        );
      }
      at = part.end;
    }
  }
  if (!job.input.gzip && at !== job.input.size) {
    throw new BatchStateError(`${what} end at byte ${at} of ${job.input.size}`);
  }
}

/**
 * The Parquet form of {@link assertPartsCoverInput}: from row group 0 each part starts where the one before
 * ended, the last ends at the footer's row-group count, each part reads exactly the rows of its row groups
 * (rows consecutive from 0) and counts each as scored or failed, and the rows read add up to the footer's.
 *
 * @throws {@link BatchStateError} naming the first gap
 */
function assertPartsCoverRowGroups(
  job: JobSpec,
  parquet: ParquetJob,
  checkpoints: readonly Checkpoint[],
): void {
  const what = `the parts of '${job.input.key}'`;
  let group = 0;
  let row = 0;
  for (const checkpoint of checkpoints) {
    if (!checkpoint.done) {
      throw new BatchStateError(
        `${what}: row groups [${checkpoint.shard.start}, ${checkpoint.shard.end ?? 'end'}) are not done`,
      );
    }
    for (const part of checkpoint.parts) {
      if (part.start !== group || part.end <= part.start) {
        throw new BatchStateError(
          part.start > group
            ? `${what} leave row groups [${group}, ${part.start}) unread`
            : `${what} read row groups [${part.start}, ${group}) twice`,
        );
      }
      const rows = part.lastLine - part.firstLine + 1;
      if (part.firstLine !== row || part.read !== rows) {
        throw new BatchStateError(
          `${what}: part ${part.no} read ${part.read} rows from row ${part.firstLine}, expected ${Math.max(0, rows)} from row ${row}`,
        );
      }
      if (part.read !== part.scored + part.failed) {
        throw new BatchStateError(
          `${what}: part ${part.no} read ${part.read} rows but scored ${part.scored} and failed ${part.failed}`,
        );
      }
      group = part.end;
      row = part.lastLine + 1;
    }
  }
  if (group !== parquet.rowGroups || row !== parquet.rows) {
    throw new BatchStateError(
      `${what} end at row group ${group} of ${parquet.rowGroups}, row ${row} of ${parquet.rows}`,
    );
  }
}

type Json = Record<string, unknown>;

function parseStored(text: string, format: string, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UnreadableBatchStateError(`the ${what} is not valid JSON`, { cause: error });
  }
  if (typeof value !== 'object' || value === null || (value as Json).format !== format) {
    throw new UnreadableBatchStateError(`the ${what} is not a ${format} document`);
  }
  return value as Json;
}

/** @throws {@link UnreadableBatchStateError} when `text` is not a checkpoint */
export function parseCheckpoint(text: string): Checkpoint {
  const value = parseStored(text, CHECKPOINT_FORMAT, 'checkpoint');
  if (!isJobSpec(value.job) || !Array.isArray(value.parts) || typeof value.done !== 'boolean') {
    throw new UnreadableBatchStateError('the checkpoint is incomplete');
  }
  return value as unknown as Checkpoint;
}

/** @throws {@link BatchStateError} when `text` is not a manifest */
export function parseManifest(text: string): Manifest {
  const value = parseStored(text, MANIFEST_FORMAT, 'manifest');
  const input = value.input as Json | undefined;
  if (typeof input?.etag !== 'string' || (value.status !== 'succeeded' && value.status !== 'failed')) {
    throw new BatchStateError('the manifest is incomplete');
  }
  return value as unknown as Manifest;
}

/** @throws {@link UnreadableBatchStateError} when `text` is not a plan */
export function parsePlan(text: string): Plan {
  const value = parseStored(text, PLAN_FORMAT, 'plan');
  if (!isJobSpec(value.job) || !Array.isArray(value.shards))
    throw new UnreadableBatchStateError('the plan is incomplete');
  return value as unknown as Plan;
}

/** A structural check of a job handed back by Step Functions (our own plan output, passed through). */
export function isJobSpec(value: unknown): value is JobSpec {
  if (typeof value !== 'object' || value === null) return false;
  const job = value as Json;
  const input = job.input as Json | undefined;
  const model = job.model as Json | undefined;
  const output = job.output as Json | undefined;
  const settings = job.settings as Json | undefined;
  return (
    typeof input?.bucket === 'string' &&
    typeof input.key === 'string' &&
    typeof input.etag === 'string' &&
    typeof input.size === 'number' &&
    (input.format === 'jsonl' || input.format === 'csv' || input.format === 'parquet') &&
    (input.format !== 'parquet' || isParquetJob(job.parquet)) &&
    typeof input.gzip === 'boolean' &&
    typeof model?.name === 'string' &&
    typeof model.version === 'string' &&
    typeof model.maxBatchSize === 'number' &&
    typeof output?.bucket === 'string' &&
    typeof output.work === 'string' &&
    typeof output.out === 'string' &&
    typeof output.errors === 'string' &&
    typeof output.manifest === 'string' &&
    typeof settings?.partRecords === 'number' &&
    typeof settings.partBytes === 'number' &&
    typeof settings.maxBatchBytes === 'number' &&
    typeof settings.maxLineBytes === 'number'
  );
}

function isParquetJob(value: unknown): value is ParquetJob {
  if (typeof value !== 'object' || value === null) return false;
  const p = value as Json;
  const schema = p.schema as Json | undefined;
  return (
    typeof p.mapping === 'object' &&
    p.mapping !== null &&
    typeof p.rows === 'number' &&
    typeof p.rowGroups === 'number' &&
    typeof schema?.idColumn === 'string' &&
    Array.isArray(schema.outputs)
  );
}
