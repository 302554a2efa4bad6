/**
 * Settings of the batch door, read from the environment by the serving config's reader (`ONNX_SERVE_BATCH_*`
 * keys; docs/batch.md lists them). Pure: `parseConfig` hands its reader in.
 */

/** Where inputs or outputs live: a bucket (`undefined`: the bucket of the event) and a key prefix. */
export interface BatchLocation {
  readonly bucket: string | undefined;
  /** No leading or trailing `/`; `''` is the bucket's root. */
  readonly prefix: string;
}

/** The batch door's settings (`config.batch`). */
export interface BatchConfig {
  readonly input: BatchLocation;
  readonly output: BatchLocation;
  /** Records in one part (the unit of checkpointing) at most. */
  readonly partRecords: number;
  /** Input bytes in one part at most. */
  readonly partBytes: number;
  /** Input tensor bytes in one micro-batch at most. */
  readonly maxBatchBytes: number;
  /** Stop this long before the invocation's deadline, at a part boundary, and continue in a fresh one. */
  readonly timeMarginMs: number;
  /** The CSV column that holds a record's id. */
  readonly csvIdColumn: string;
  /** Output lines carry the input record too (SageMaker's `JoinSource=Input`). */
  readonly joinInput: boolean;
  /** Write `<name>.out.jsonl.gz` instead of `<name>.out.jsonl`. */
  readonly gzipOutput: boolean;
  /**
   * What a Parquet input's results are written as (`BATCH_PARQUET_OUTPUT`): `parquet` (default,
   * `<name>.out.parquet`) or `jsonl` (`<name>.out.jsonl[.gz]`, the lines a JSON Lines input gets).
   */
  readonly parquetOutput: ParquetOutputFormat;
  /**
   * The codec of `.out.parquet` column chunks (`BATCH_PARQUET_COMPRESSION`): `snappy` (default), `zstd`
   * (Node's zlib from 22.15; refused where the runtime lacks it) or `none`.
   */
  readonly parquetCompression: ParquetCompression;
  /**
   * Rows in one `.out.parquet` row group at most (`BATCH_PARQUET_ROW_GROUP_ROWS`, default 122,880 as
   * DuckDB); a row group never spans two parts, and the writer also keeps one under about 128 MiB.
   */
  readonly parquetRowGroupRows: number;
  /** Bytes of input per shard of a Step Functions run (`BATCH_SHARD_BYTES`, default 256 MiB). */
  readonly shardBytes: number;
  /** A job that needs more continuations than this fails (a guard against a runaway chain). */
  readonly maxContinuations: number;
  /**
   * The Step Functions state machine (functions/batch/state-machine.asl.json) that an S3 upload of at least
   * {@link distributedMinBytes} starts instead of being scored in the function (`BATCH_STATE_MACHINE_ARN`);
   * `undefined`: every upload is scored in the function.
   */
  readonly stateMachineArn: string | undefined;
  /** Uploads of at least this many bytes go to the state machine (`BATCH_DISTRIBUTED_MIN_MB`, 2 GiB). */
  readonly distributedMinBytes: number;
  /**
   * Re-reads of a model (config.json and artifact, past the registry's caches) that was not found, before
   * the job fails with `model_not_found`: a 404 may be transient, or the model still being uploaded.
   */
  readonly modelRechecks: number;
  /** Pause before the first re-read; each next one waits twice as long. */
  readonly modelRecheckMs: number;
}

export const PARQUET_OUTPUT_FORMATS = ['parquet', 'jsonl'] as const;
export type ParquetOutputFormat = (typeof PARQUET_OUTPUT_FORMATS)[number];
export const PARQUET_COMPRESSIONS = ['snappy', 'zstd', 'none'] as const;
export type ParquetCompression = (typeof PARQUET_COMPRESSIONS)[number];

/** What the runtime offers that some settings need (the serving config's instance facts). */
export interface BatchRuntimeFacts {
  /** Node's zlib compresses zstd (22.15 and later). */
  readonly zstdCompression: boolean;
}

/** What the serving config's reader offers (`EnvReader` in config.ts). */
export interface ConfigReader {
  string(key: string, fallback: string): string;
  int(key: string, fallback: number, min: number, max: number): number;
  problem(message: string): void;
}

const MB = 1024 * 1024;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
// arn:<partition>:states:<region>:<account>:stateMachine:<name>, the name as Step Functions allows it.
const STATE_MACHINE_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;
const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

/**
 * Reads the `BATCH_*` keys. Prefixes are `s3://bucket/prefix`, or a bare `prefix` in `BATCH_BUCKET` (or,
 * without it, in the bucket of each event). Input and output must not overlap: results written under the
 * input prefix would trigger the function on its own output.
 *
 * @param envPrefix - the serving prefix (`ONNX_SERVE_`), for messages
 * @param facts - what the runtime can do (zstd)
 */
export function parseBatchConfig(
  read: ConfigReader,
  envPrefix: string,
  facts: BatchRuntimeFacts,
): BatchConfig {
  const bucketValue = read.string('BATCH_BUCKET', '');
  if (bucketValue !== '' && !BUCKET.test(bucketValue)) {
    read.problem(`${envPrefix}BATCH_BUCKET: '${bucketValue}' is not a valid bucket name`);
  }
  const defaultBucket = bucketValue === '' ? undefined : bucketValue;
  const input = location(read, envPrefix, 'BATCH_INPUT_PREFIX', 'batch/in', defaultBucket);
  const output = location(read, envPrefix, 'BATCH_OUTPUT_PREFIX', 'batch/out', defaultBucket);
  if (
    input.bucket === output.bucket &&
    (within(input.prefix, output.prefix) || within(output.prefix, input.prefix))
  ) {
    read.problem(
      `${envPrefix}BATCH_INPUT_PREFIX and ${envPrefix}BATCH_OUTPUT_PREFIX overlap ('${input.prefix}', '${output.prefix}'): outputs would trigger the function again`,
    );
  }
  return {
    input,
    output,
    partRecords: read.int('BATCH_PART_RECORDS', 10_000, 1, 10_000_000),
    partBytes: read.int('BATCH_PART_MB', 16, 1, 4096) * MB,
    maxBatchBytes: read.int('BATCH_MAX_BATCH_BYTES', 4 * MB, 1024, 2 ** 31),
    timeMarginMs: read.int('BATCH_TIME_MARGIN_MS', 30_000, 0, 900_000),
    csvIdColumn: read.string('BATCH_CSV_ID_COLUMN', 'id'),
    joinInput: flag(read, envPrefix, 'BATCH_JOIN_INPUT'),
    gzipOutput: flag(read, envPrefix, 'BATCH_GZIP_OUTPUT'),
    parquetOutput: parquetOutput(read, envPrefix),
    parquetCompression: parquetCompression(read, envPrefix, facts),
    parquetRowGroupRows: read.int('BATCH_PARQUET_ROW_GROUP_ROWS', 122_880, 1, 10_000_000),
    shardBytes: read.int('BATCH_SHARD_BYTES', 256 * MB, 1024, 2 ** 50),
    maxContinuations: read.int('BATCH_MAX_CONTINUATIONS', 1000, 0, 1_000_000),
    stateMachineArn: stateMachineArn(read, envPrefix),
    distributedMinBytes: read.int('BATCH_DISTRIBUTED_MIN_MB', 2048, 1, 2 ** 30) * MB,
    modelRechecks: read.int('BATCH_MODEL_RECHECKS', 3, 0, 10),
    modelRecheckMs: read.int('BATCH_MODEL_RECHECK_MS', 2000, 0, 60_000),
  };
}

function parquetOutput(read: ConfigReader, envPrefix: string): ParquetOutputFormat {
  const value = read.string('BATCH_PARQUET_OUTPUT', 'parquet').toLowerCase();
  if ((PARQUET_OUTPUT_FORMATS as readonly string[]).includes(value)) return value as ParquetOutputFormat;
  read.problem(`${envPrefix}BATCH_PARQUET_OUTPUT: '${value}' must be parquet or jsonl`);
  return 'parquet';
}

function parquetCompression(
  read: ConfigReader,
  envPrefix: string,
  facts: BatchRuntimeFacts,
): ParquetCompression {
  const value = read.string('BATCH_PARQUET_COMPRESSION', 'snappy').toLowerCase();
  if (!(PARQUET_COMPRESSIONS as readonly string[]).includes(value)) {
    read.problem(`${envPrefix}BATCH_PARQUET_COMPRESSION: '${value}' must be snappy, zstd or none`);
    return 'snappy';
  }
  if (value === 'zstd' && !facts.zstdCompression) {
    read.problem(
      `${envPrefix}BATCH_PARQUET_COMPRESSION: zstd needs Node 22.15 or later (zlib.zstdCompressSync), which this runtime is not: use snappy or none, or run on Node 22`,
    );
  }
  return value as ParquetCompression;
}

function stateMachineArn(read: ConfigReader, envPrefix: string): string | undefined {
  const value = read.string('BATCH_STATE_MACHINE_ARN', '');
  if (value === '') return undefined;
  if (!STATE_MACHINE_ARN.test(value)) {
    read.problem(
      `${envPrefix}BATCH_STATE_MACHINE_ARN: '${value}' is not a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>)`,
    );
  }
  return value;
}

function location(
  read: ConfigReader,
  envPrefix: string,
  key: string,
  fallback: string,
  defaultBucket: string | undefined,
): BatchLocation {
  const value = read.string(key, fallback);
  let bucket = defaultBucket;
  let prefix = value;
  if (value.startsWith('s3://')) {
    const rest = value.slice('s3://'.length);
    const slash = rest.indexOf('/');
    bucket = slash === -1 ? rest : rest.slice(0, slash);
    prefix = slash === -1 ? '' : rest.slice(slash + 1);
    if (!BUCKET.test(bucket)) read.problem(`${envPrefix}${key}: '${bucket}' is not a valid bucket name`);
  }
  prefix = prefix.replace(/^\/+|\/+$/g, '');
  if (prefix !== '' && prefix.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    read.problem(`${envPrefix}${key}: the prefix may not hold empty, '.' or '..' segments`);
  }
  return { bucket, prefix };
}

/** Whether keys under `inner` are also under `outer` (`''` holds everything). */
function within(inner: string, outer: string): boolean {
  return outer === '' || inner === outer || inner.startsWith(`${outer}/`);
}

function flag(read: ConfigReader, envPrefix: string, key: string): boolean {
  const value = read.string(key, 'false').toLowerCase();
  if (TRUE.includes(value)) return true;
  if (!FALSE.includes(value))
    read.problem(`${envPrefix}${key}: '${value}' must be on or off (or true or false)`);
  return false;
}
