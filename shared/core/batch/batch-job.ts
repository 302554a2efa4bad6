/**
 * Batch jobs: one input object scored with one model version into result, error and manifest objects,
 * exactly once, streaming, and in as many invocations as it takes.
 *
 * A job reads its input as a stream of lines and cuts it into *parts* (at most `partRecords` records or
 * `partBytes` bytes of input; boundaries depend on the input alone). Each part is parsed, scored in
 * micro-batches and written as immutable part objects; then the shard's checkpoint records the part and
 * the input offset where the next one starts. A job stopped anywhere resumes from its checkpoint with a
 * ranged read: a part written again after a crash is written with the same bytes. When every part is
 * done, the parts are streamed into the final objects and the manifest is written, last: it is the commit
 * point, and a job whose manifest names the input's ETag is never run again.
 *
 * Before each part but the first of an invocation, the job checks the time left; short of the margin
 * plus the slowest part so far, it stops at the part boundary and schedules a continuation (a fresh
 * invocation that resumes), so no input size meets Lambda's 15-minute ceiling. Step Functions runs
 * (`plan`, `scoreShards`, `commitShards`) spread one input over byte-range shards scored in parallel.
 */
import { ModelNotFoundError, type ServingError } from '../errors';
import type { ModelConfig } from '../model-config';
import type { ResolvedModel } from '../model-registry';
import type { CodecLimits } from '../protocol/infer-types';
import type { ModelSignature } from '../tensor';
import type { BatchConfig } from './batch-config';
import {
  BatchStateError,
  InputChangedError,
  InputMismatchError,
  isTerminalJobError,
  TooManyContinuationsError,
  UnreadableBatchStateError,
  UnsupportedInputError,
} from './errors';
import type { BatchEvent, ShardItem } from './events';
import { exactBytes } from './exact-bytes';
import {
  assertPartsCoverInput,
  CHECKPOINT_FORMAT,
  type Checkpoint,
  checkpointKey,
  type JobSpec,
  MANIFEST_FORMAT,
  type Manifest,
  type ParquetJob,
  type PartRecord,
  PLAN_FORMAT,
  type Plan,
  parquetEndKeys,
  parseCheckpoint,
  parseManifest,
  parsePlan,
  partKeys,
  planKeys,
  rowGroupShards,
  type ShardSpec,
  shardRanges,
  WHOLE_INPUT,
} from './job-state';
import { LineSource } from './line-source';
import { type Line, type SplitStart, splitLines } from './line-splitter';
import {
  type InputKey,
  normalizeEtag,
  type OutputFormat,
  type OutputNames,
  outputNames,
  parseInputKey,
} from './object-names';
import { DEFAULT_PARQUET_MAPPING, planParquetColumns } from './parquet-mapping';
import { outputSchemaFor, type ParquetCodec, type ParquetFile } from './parquet-port';
import { ParquetSource } from './parquet-source';
import {
  type BatchLog,
  type BatchObjectStore,
  type Continuation,
  NO_LOG,
  type ObjectInfo,
  type ObjectRef,
  type ObjectVersionRef,
} from './ports';
import { EMPTY_SOURCE, type RecordSource, type ScoredPart } from './record-source';
import { createRecordParser, hasBatchAxis, type RecordResult } from './records';
import type { Scorer } from './score-records';

/** How a job invocation ended. */
export type JobOutcome =
  /** Not a job: outside the input prefix, a folder marker, no model folder. */
  | { readonly status: 'ignored'; readonly reason: string }
  /** A job that needs nothing done: already committed, or its object was replaced or deleted. */
  | { readonly status: 'skipped'; readonly reason: string }
  /** Stopped at a part boundary before the deadline; a continuation will resume it. */
  | { readonly status: 'continued'; readonly hop: number; readonly parts: number }
  /** Committed: the manifest says `succeeded` or `failed`. */
  | {
      readonly status: 'succeeded' | 'failed';
      readonly manifest: string;
      readonly counts: Manifest['counts'];
      readonly error?: Manifest['error'];
    };

/** Every outcome but `continued`: what a job that needs nothing more from this invocation returns. */
export type FinalOutcome = Exclude<JobOutcome, { status: 'continued' }>;

/** What the Step Functions plan state returns; `ready` carries what the Distributed Map needs. */
export type PlanOutcome =
  | {
      readonly status: 'ready';
      readonly job: JobSpec;
      /** The JSON array of shard items the map's ItemReader reads. */
      readonly items: ObjectRef;
      readonly shards: number;
    }
  | FinalOutcome;

/** What a shard-batch state returns: `done` false means "invoke me again with the same input". */
export interface ShardsOutcome {
  readonly done: boolean;
  readonly shards: number;
  readonly finished: number;
}

/** What one invocation answers, per kind of event (Step Functions reads the plan and shard answers). */
export type BatchResult =
  | { readonly outcomes: readonly JobOutcome[]; readonly scheduled: number }
  | JobOutcome
  | PlanOutcome
  | ShardsOutcome;

/** The time of one invocation: milliseconds left before its deadline. */
export interface InvocationClock {
  remainingMs(): number;
}

/** The ports and settings a {@link BatchJobRunner} works with. */
export interface BatchJobRunnerOptions {
  readonly store: BatchObjectStore;
  readonly registry: {
    resolve(model: string, version?: string, options?: { fresh?: boolean }): Promise<ResolvedModel>;
  };
  readonly service: Scorer & { signature(model: string, version?: string): Promise<ModelSignature> };
  readonly continuation: Continuation;
  /** Parquet reading and writing; without it a `.parquet` input fails its job (`unsupported_input`). */
  readonly parquet?: ParquetCodec;
  readonly config: BatchConfig;
  /** The serving limits: tensor elements per record, and the longest line (the request body cap). */
  readonly limits: CodecLimits & { readonly maxLineBytes: number };
  readonly log?: BatchLog;
  /** Epoch milliseconds; injected so tests can drive time. */
  readonly now?: () => number;
  /** Waits between re-reads of a missing model; injected so tests need not wait. */
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * Conservative speed of streaming part objects into the final ones, to judge whether the commit fits in
 * what is left of an invocation (bytes per millisecond: 20 MB/s).
 */
const COMMIT_BYTES_PER_MS = 20_000;
const NDJSON = 'application/x-ndjson';
const PARQUET = 'application/vnd.apache.parquet';

/** What {@link BatchJobRunner} `#runShard` did in one invocation. */
interface ShardRun {
  readonly checkpoint: Checkpoint;
  readonly done: boolean;
  /** At least one part was scored. */
  readonly worked: boolean;
  /** The invocation is counted in the checkpoint. */
  readonly counted: boolean;
}

interface Prepared {
  readonly object: ObjectVersionRef;
  readonly input: InputKey;
  readonly info: ObjectInfo;
  readonly etag: string;
  readonly names: OutputNames;
  readonly outputBucket: string;
}

/**
 * Runs batch jobs over the ports; the runtime builds one per instance.
 *
 * @example
 * const runner = new BatchJobRunner({ store, registry, service, continuation, config: config.batch, limits });
 * await runner.runObject({ bucket: 'data', key: 'batch/in/linear/day1.jsonl', etag }, { remainingMs: () => 60_000 });
 */
export class BatchJobRunner {
  readonly #store: BatchObjectStore;
  readonly #registry: BatchJobRunnerOptions['registry'];
  readonly #service: BatchJobRunnerOptions['service'];
  readonly #continuation: Continuation;
  readonly #parquet: ParquetCodec | undefined;
  readonly #config: BatchConfig;
  readonly #limits: BatchJobRunnerOptions['limits'];
  readonly #log: BatchLog;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(options: BatchJobRunnerOptions) {
    this.#store = options.store;
    this.#registry = options.registry;
    this.#service = options.service;
    this.#continuation = options.continuation;
    this.#parquet = options.parquet;
    this.#config = options.config;
    this.#limits = options.limits;
    this.#log = options.log ?? NO_LOG;
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /**
   * Runs what an invocation's event asks for. An S3 event's first object is scored here; any further
   * objects of the same event each get an invocation of their own (continuations with no checkpoint yet).
   */
  async handle(event: BatchEvent, clock: InvocationClock): Promise<BatchResult> {
    switch (event.kind) {
      case 's3': {
        for (const { eventName, key } of event.skipped) {
          this.#log.info('batch event ignored', { key, eventName, reason: 'not an object creation' });
        }
        const [first, ...rest] = event.objects;
        for (const object of rest) {
          await this.#continuation.schedule({ onnxServerlessBatch: { action: 'run', object, hop: 0 } });
        }
        const outcomes = first === undefined ? [] : [await this.runObject(first, clock)];
        return { outcomes, scheduled: rest.length };
      }
      case 'run':
        return this.runObject(event.object, clock, event.hop);
      case 'plan': {
        const { kind: _kind, ...object } = event;
        return this.plan(object);
      }
      case 'shards':
        return this.scoreShards(event.job, event.items, clock);
      case 'commit':
        return this.commitShards(event.job);
    }
  }

  /**
   * Scores one object version (an S3 event's object, or a continuation's): starts the job, or resumes it
   * from its checkpoint, until it is committed or the invocation's time is short.
   *
   * @param hop - how many continuations came before (0 for an S3 event)
   */
  async runObject(object: ObjectVersionRef, clock: InvocationClock, hop = 0): Promise<JobOutcome> {
    const prepared = await this.#prepare(object);
    if ('status' in prepared) return prepared;
    const { names, outputBucket } = prepared;
    const ref = { bucket: outputBucket, key: checkpointKey(names.work, WHOLE_INPUT) };
    let checkpoint: Checkpoint | undefined;
    try {
      checkpoint = await this.#loadCheckpoint(ref, prepared.etag);
    } catch (error) {
      // An unreadable checkpoint holds no job to fail: the failure is recorded as before a start.
      if (isTerminalJobError(error)) return this.#failBeforeStart(prepared, error);
      throw error;
    }
    if (checkpoint === undefined) {
      let job: JobSpec;
      try {
        job = await this.#startJob(prepared);
      } catch (error) {
        if (isTerminalJobError(error)) return this.#failBeforeStart(prepared, error);
        throw error;
      }
      checkpoint = initialCheckpoint(job, WHOLE_INPUT);
    }
    if (hop > this.#config.maxContinuations) {
      const error = new TooManyContinuationsError(
        `the job needed more than ${this.#config.maxContinuations} continuations (ONNX_SERVE_BATCH_MAX_CONTINUATIONS)`,
      );
      return this.#fail(checkpoint.job, WHOLE_INPUT, error);
    }
    let run: ShardRun;
    try {
      run = await this.#runShard(checkpoint, clock, true);
    } catch (error) {
      if (isTerminalJobError(error)) return this.#fail(checkpoint.job, WHOLE_INPUT, error);
      throw error;
    }
    const job = run.checkpoint.job;
    if (!run.done || (run.worked && !this.#commitFits([run.checkpoint], clock))) {
      await this.#continuation.schedule({
        onnxServerlessBatch: {
          action: 'run',
          object: {
            bucket: job.input.bucket,
            key: job.input.key,
            etag: job.input.etag,
            ...(job.input.versionId === undefined ? {} : { versionId: job.input.versionId }),
            size: job.input.size,
          },
          hop: hop + 1,
        },
      });
      this.#log.info('batch job continues in a fresh invocation', {
        key: job.input.key,
        parts: run.checkpoint.parts.length,
        next: run.checkpoint.next,
        hop: hop + 1,
      });
      return { status: 'continued', hop: hop + 1, parts: run.checkpoint.parts.length };
    }
    return this.#commit(job, [run.checkpoint], [], run.counted ? 0 : 1);
  }

  /**
   * Step Functions, first state: pins the job (model version, settings) and cuts the input into byte-range
   * shards, counting the newlines before each so lines keep their numbers. Writes the plan and the JSON
   * array of shard items the Distributed Map reads.
   */
  async plan(object: ObjectVersionRef): Promise<PlanOutcome> {
    const prepared = await this.#prepare(object);
    if ('status' in prepared) return prepared;
    let job: JobSpec;
    try {
      job = await this.#startJob(prepared);
    } catch (error) {
      if (isTerminalJobError(error)) return this.#failBeforeStart(prepared, error);
      throw error;
    }
    let shards: ShardSpec[];
    try {
      shards = await this.#shards(job);
    } catch (error) {
      if (isTerminalJobError(error)) return this.#fail(job, WHOLE_INPUT, error);
      throw error;
    }
    const keys = planKeys(job.output.work);
    const items: ShardItem[] = shards.map((s) => ({
      bucket: job.input.bucket,
      key: job.input.key,
      range: [s.start, s.end],
      ...(s.newlinesBefore === undefined ? {} : { newlinesBefore: s.newlinesBefore }),
    }));
    const bucket = job.output.bucket;
    await this.#store.putText(
      { bucket, key: keys.plan },
      JSON.stringify({ format: PLAN_FORMAT, job, shards }),
    );
    await this.#store.putText({ bucket, key: keys.items }, JSON.stringify(items));
    this.#log.info('batch job planned', { key: job.input.key, shards: shards.length });
    return { status: 'ready', job, items: { bucket, key: keys.items }, shards: shards.length };
  }

  /**
   * The shards of a planned job: byte ranges with the newlines before each (text), or ranges of row
   * groups of about `shardBytes` compressed bytes (Parquet: read from the footer, no pass over the data).
   */
  async #shards(job: JobSpec): Promise<ShardSpec[]> {
    if (job.parquet !== undefined) {
      const file = await this.#openParquet(this.#parquetCodec(), job);
      return rowGroupShards(
        file.info.rowGroups.map((g) => g.bytes),
        this.#config.shardBytes,
      );
    }
    const ranges = shardRanges(job.input.size, this.#config.shardBytes, job.input.gzip);
    const newlines = await this.#countNewlines(
      job,
      ranges.map((r) => r.start),
    );
    return ranges.map((r, i) => ({ ...r, newlinesBefore: newlines[i] as number }));
  }

  /**
   * Step Functions, inside the Distributed Map: scores a batch of shards, each resuming from its own
   * checkpoint. Returns `done: false` when time ran short; the state machine invokes it again.
   */
  async scoreShards(
    job: JobSpec,
    items: readonly ShardItem[],
    clock: InvocationClock,
  ): Promise<ShardsOutcome> {
    let worked = false;
    let finished = 0;
    for (const item of items) {
      const shard: ShardSpec = {
        start: item.range[0],
        end: item.range[1],
        ...(item.newlinesBefore === undefined ? {} : { newlinesBefore: item.newlinesBefore }),
      };
      const ref = { bucket: job.output.bucket, key: checkpointKey(job.output.work, shard) };
      let run: ShardRun;
      try {
        const checkpoint = (await this.#loadCheckpoint(ref, job.input.etag)) ?? initialCheckpoint(job, shard);
        run = await this.#runShard(checkpoint, clock, !worked);
      } catch (error) {
        if (!isTerminalJobError(error)) throw error;
        // The failed manifest ends the job: the commit state finds it and does nothing.
        await this.#fail(job, shard, error);
        return { done: true, shards: items.length, finished: items.length };
      }
      worked ||= run.worked;
      if (!run.done) return { done: false, shards: items.length, finished };
      finished += 1;
    }
    return { done: true, shards: items.length, finished };
  }

  /** Step Functions, last state: every shard must be done; then the same commit as a single run. */
  async commitShards(job: JobSpec): Promise<FinalOutcome> {
    const bucket = job.output.bucket;
    const existing = await this.#readManifest({ bucket, key: job.output.manifest });
    if (existing?.input.etag === job.input.etag) {
      return { status: 'skipped', reason: `already committed (${existing.status})` };
    }
    const keys = planKeys(job.output.work);
    const text = await this.#store.getText({ bucket, key: keys.plan });
    if (text === undefined) throw new BatchStateError(`the job for '${job.input.key}' has no plan`);
    let reading: ShardSpec = WHOLE_INPUT;
    let plan: Plan;
    const checkpoints: Checkpoint[] = [];
    try {
      plan = parsePlan(text);
      for (const shard of plan.shards) {
        reading = shard;
        const checkpoint = await this.#loadCheckpoint(
          { bucket, key: checkpointKey(job.output.work, shard) },
          job.input.etag,
        );
        if (checkpoint?.done !== true) {
          throw new BatchStateError(
            `shard [${shard.start}, ${shard.end ?? 'end'}) of '${job.input.key}' is not done`,
          );
        }
        checkpoints.push(checkpoint);
      }
    } catch (error) {
      // A plan or checkpoint that does not parse never will: the job fails instead of retrying forever.
      if (isTerminalJobError(error)) return this.#fail(job, reading, error);
      throw error;
    }
    return this.#commit(plan.job, checkpoints, [keys.plan, keys.items], 1);
  }

  /** Where the object's job lives, and whether there is anything to do. */
  async #prepare(object: ObjectVersionRef): Promise<Prepared | FinalOutcome> {
    const { input: inputLocation, output } = this.#config;
    if (inputLocation.bucket !== undefined && object.bucket !== inputLocation.bucket) {
      return this.#ignore(object, `the bucket is not the input bucket '${inputLocation.bucket}'`);
    }
    const parsed = parseInputKey(object.key, inputLocation.prefix);
    if (!parsed.ok) return this.#ignore(object, parsed.reason);
    const info = await this.#store.head(object, object.versionId);
    if (info === undefined) return this.#skip(object, 'the object no longer exists');
    const etag = normalizeEtag(info.etag);
    if (object.etag !== undefined && normalizeEtag(object.etag) !== etag) {
      // Unversioned, a newer object may have replaced it (that one has an event of its own), or HEAD is
      // wrong: a GET for the event's ETag tells. A version never changes: HEAD is wrong.
      if (object.versionId === undefined && (await this.#replaced(object))) {
        return this.#skip(object, 'the object was replaced since the event');
      }
      throw new InputMismatchError(
        `the ETags of the input '${object.key}' disagree: the event says ${normalizeEtag(object.etag)}, HEAD says ${etag}`,
      );
    }
    if (object.size !== undefined && object.size !== info.size) {
      throw new InputMismatchError(
        `the sizes of the input '${object.key}' disagree: the event says ${object.size} bytes, HEAD says ${info.size}`,
      );
    }
    const input = parsed.input;
    const gzipOutput = this.#config.gzipOutput;
    const names = outputNames(
      output.prefix,
      input.model,
      input.name,
      etag,
      gzipOutput,
      outputFormatOf(input.format, this.#config),
    );
    const outputBucket = output.bucket ?? object.bucket;
    const manifest = await this.#readManifest({ bucket: outputBucket, key: names.manifest });
    if (manifest?.input.etag === etag) {
      return this.#skip(object, `already committed (${manifest.status}): ${names.manifest}`);
    }
    return { object, input, info, etag, names, outputBucket };
  }

  /** Whether a GET for the event's ETag finds another object (or none) in its place. */
  async #replaced(object: ObjectVersionRef): Promise<boolean> {
    try {
      await this.#store.verify(object, {
        ...(object.etag === undefined ? {} : { etag: normalizeEtag(object.etag) }),
      });
      return false;
    } catch (error) {
      if (error instanceof InputChangedError) return true;
      throw error;
    }
  }

  /**
   * Checks the input with a GET (HEAD and the event agreed already), resolves the model version and pins
   * everything the job's invocations and shards must agree on.
   */
  async #startJob(prepared: Prepared): Promise<JobSpec> {
    const { object, input, info, etag, names, outputBucket } = prepared;
    const outFormat = outputFormatOf(input.format, this.#config);
    if (input.format === 'parquet') {
      this.#parquetCodec();
      if (input.gzipSuffix) {
        throw new UnsupportedInputError(
          `'${object.key}' is gzip-compressed Parquet: upload the .parquet file itself (its pages are compressed already)`,
        );
      }
    }
    // A size pinned from one lying answer would be "read whole" at any length: GET must say it too.
    await this.#store.verify(object, {
      size: info.size,
      etag,
      ...(object.versionId === undefined ? {} : { versionId: object.versionId }),
    });
    const { resolved, signature } = await this.#model(input.model, input.version);
    const gzip = input.gzipSuffix || /\bgzip\b/i.test(info.contentEncoding ?? '');
    let job: JobSpec = {
      input: { ...inputOf(prepared), gzip },
      model: {
        name: input.model,
        version: resolved.version,
        sha256: resolved.sha256,
        maxBatchSize: resolved.config.maxBatchSize,
      },
      output: {
        bucket: outputBucket,
        out: names.out,
        errors: names.errors,
        manifest: names.manifest,
        work: names.work,
        gzip: outFormat === 'jsonl' && this.#config.gzipOutput,
        format: outFormat,
      },
      settings: {
        partRecords: this.#config.partRecords,
        partBytes: this.#config.partBytes,
        maxBatchBytes: this.#config.maxBatchBytes,
        maxLineBytes: this.#limits.maxLineBytes,
        joinInput: this.#config.joinInput,
        csvIdColumn: this.#config.csvIdColumn,
      },
      startedAt: new Date(this.#now()).toISOString(),
    };
    if (input.format === 'parquet') {
      job = {
        ...job,
        input: { ...job.input, gzip: false },
        parquet: await this.#pinParquet(job, resolved.config.batch, signature),
      };
    }
    if (input.format === 'csv') {
      const header = await this.#firstLine(job);
      if (header !== undefined) {
        job = { ...job, csvHeader: header };
        // Fails the job now (not every record) when no line of this input could be scored.
        this.#parser(job, signature, resolved.config);
      }
    }
    this.#log.info('batch job started', {
      key: object.key,
      model: input.model,
      version: resolved.version,
      format: input.format,
      gzip,
      size: info.size,
    });
    return job;
  }

  /**
   * Reads a Parquet input's footer and pins what every invocation must agree on: its rows and row groups,
   * the model's column mapping, and the results' schema. A file that is not Parquet, a footer that lies, or
   * columns that cannot fill the model's inputs fail the job now (`unsupported_input`), not row by row.
   */
  async #pinParquet(
    job: JobSpec,
    configured: ParquetJob['mapping'] | undefined,
    signature: ModelSignature,
  ): Promise<ParquetJob> {
    const file = await this.#openParquet(this.#parquetCodec(), job);
    const mapping = configured ?? DEFAULT_PARQUET_MAPPING;
    const plan = planParquetColumns(
      signature,
      hasBatchAxis(signature, job.model.maxBatchSize),
      file.info.columns,
      mapping,
    );
    const idColumn = file.info.columns.find((c) => c.name === plan.idColumn);
    const idType = plan.idColumn === undefined ? 'INT64' : (idColumn?.idType ?? 'STRING');
    const schema = outputSchemaFor(signature.outputs, mapping.idColumn, idType);
    const clash = schema.outputs.find((o) => o.name === mapping.idColumn);
    if (clash !== undefined) {
      throw new UnsupportedInputError(
        `model output '${clash.name}' has the id column's name: set another 'batch.idColumn' in config.json`,
      );
    }
    return { mapping, rows: file.info.rows, rowGroups: file.info.rowGroups.length, schema };
  }

  /**
   * The model's resolved version and signature (loading it). A model not found is read again, past the
   * registry's caches, `modelRechecks` times with a pause doubling from `modelRecheckMs`: a 404 may be a
   * moment's, or the model still being uploaded. Only then is it a {@link ModelNotFoundError}, which ends
   * the job; any other failure (5xx, a load that fails) is thrown for a retry of the invocation.
   */
  async #model(
    name: string,
    version: string | undefined,
  ): Promise<{ resolved: ResolvedModel; signature: ModelSignature }> {
    for (let recheck = 0; ; recheck++) {
      try {
        const resolved = await this.#registry.resolve(name, version, { fresh: recheck > 0 });
        const signature = await this.#service.signature(name, resolved.version);
        return { resolved, signature };
      } catch (error) {
        if (!(error instanceof ModelNotFoundError) || recheck >= this.#config.modelRechecks) throw error;
        const ms = this.#config.modelRecheckMs * 2 ** recheck;
        this.#log.info('batch model not found: reading it again', {
          model: name,
          version,
          recheck: recheck + 1,
          inMs: ms,
        });
        await this.#sleep(ms);
      }
    }
  }

  /**
   * The job's record parser. `config` is the model's config.json as read now: its `emptyDims` is the one
   * the service checks each run against (the doors' rule), so a record is never refused for a dim 0 the
   * model takes.
   */
  #parser(
    job: JobSpec,
    signature: ModelSignature,
    config: Pick<ModelConfig, 'emptyDims'>,
  ): (line: Line) => RecordResult {
    return createRecordParser({
      format: job.input.format,
      signature,
      maxBatchSize: job.model.maxBatchSize,
      emptyDims: config.emptyDims,
      limits: { maxTensorElements: this.#limits.maxTensorElements },
      maxLineBytes: job.settings.maxLineBytes,
      joinInput: job.settings.joinInput,
      ...(job.csvHeader === undefined
        ? {}
        : { csv: { header: job.csvHeader, idColumn: job.settings.csvIdColumn } }),
    });
  }

  /**
   * Scores the shard's parts from its checkpoint on, until the shard is done or (unless `mustProgress` and
   * nothing is done yet) the time left is short of the margin plus the slowest part so far. The format
   * lives in the record source; this loop is the lifecycle: part, part objects, checkpoint.
   */
  async #runShard(start: Checkpoint, clock: InvocationClock, mustProgress: boolean): Promise<ShardRun> {
    if (start.done) return { checkpoint: start, done: true, worked: false, counted: false };
    const { job, shard } = start;
    let checkpoint: Checkpoint = { ...start, invocations: start.invocations + 1 };
    let done = false;
    let worked = false;
    const source = await this.#source(start);
    try {
      let slowest = 0;
      for (;;) {
        if (!(await source.more())) {
          done = true;
          break;
        }
        if ((worked || !mustProgress) && clock.remainingMs() - this.#config.timeMarginMs <= slowest) break;
        const began = this.#now();
        const scored = await source.next();
        const part = await this.#writePart(job, shard, checkpoint.parts.length, scored);
        const ms = this.#now() - began;
        checkpoint = {
          ...checkpoint,
          parts: [
            ...checkpoint.parts,
            {
              ...part,
              start: scored.start,
              end: scored.end,
              firstLine: scored.firstLine,
              lastLine: scored.lastLine,
              ms,
            },
          ],
          next: scored.next,
        };
        await this.#saveCheckpoint(checkpoint);
        worked = true;
        slowest = Math.max(slowest, ms);
      }
    } finally {
      // Stops the read when the shard ended early or time ran short: the socket is freed.
      await source.close();
    }
    if (done) {
      checkpoint = { ...checkpoint, done: true };
      await this.#saveCheckpoint(checkpoint);
    }
    return { checkpoint, done, worked, counted: true };
  }

  /** The shard's records from its checkpoint on, in the input's format. */
  async #source(start: Checkpoint): Promise<RecordSource> {
    const { job } = start;
    if (job.parquet !== undefined) return this.#parquetSource(start, { ...job, parquet: job.parquet });
    const { shard } = start;
    const shardEnd = shard.end ?? Number.POSITIVE_INFINITY;
    let from: SplitStart;
    let readFrom: number;
    if (start.next !== null) {
      from = { kind: 'line-start', offset: start.next.offset, line: start.next.line };
      readFrom = start.next.offset;
    } else if (shard.start === 0) {
      from = { kind: 'line-start', offset: 0, line: 1 };
      readFrom = 0;
    } else {
      const newlinesBefore = shard.newlinesBefore ?? (await this.#countNewlines(job, [shard.start]))[0] ?? 0;
      // One byte early: it tells whether the range starts at a line start or mid-line.
      from = { kind: 'align', offset: shard.start - 1, newlinesBefore };
      readFrom = shard.start - 1;
    }
    if (!job.input.gzip && readFrom >= job.input.size) return EMPTY_SOURCE;
    // A fresh invocation loads the pinned version again: a 404 then is re-read as at the start.
    const { resolved, signature } = await this.#model(job.model.name, job.model.version);
    return new LineSource({
      job,
      lines: splitLines(this.#input(job, readFrom), from, job.settings.maxLineBytes),
      shardEnd,
      parse: this.#parser(job, signature, resolved.config),
      score: {
        scorer: this.#service,
        model: job.model.name,
        version: job.model.version,
        batched: hasBatchAxis(signature, job.model.maxBatchSize),
        maxBatchRecords: job.model.maxBatchSize,
        maxBatchBytes: job.settings.maxBatchBytes,
      },
    });
  }

  /**
   * A Parquet shard's row groups from its checkpoint on: the footer is read again (one ranged read of the
   * tail) and must still say what the job pinned; the columns are planned again with the pinned mapping.
   */
  async #parquetSource(
    start: Checkpoint,
    job: JobSpec & { readonly parquet: ParquetJob },
  ): Promise<RecordSource> {
    const from = start.next?.offset ?? start.shard.start;
    const end = Math.min(start.shard.end ?? job.parquet.rowGroups, job.parquet.rowGroups);
    if (from >= end) return EMPTY_SOURCE;
    const { signature } = await this.#model(job.model.name, job.model.version);
    const codec = this.#parquetCodec();
    const file = await this.#openParquet(codec, job);
    if (file.info.rowGroups.length !== job.parquet.rowGroups || file.info.rows !== job.parquet.rows) {
      throw new InputMismatchError(
        `the Parquet footer of '${job.input.key}' now says ${file.info.rows} rows in ${file.info.rowGroups.length} row groups, the job pinned ${job.parquet.rows} in ${job.parquet.rowGroups}`,
      );
    }
    const plan = planParquetColumns(
      signature,
      hasBatchAxis(signature, job.model.maxBatchSize),
      file.info.columns,
      job.parquet.mapping,
    );
    return new ParquetSource({
      job,
      file,
      plan,
      codec,
      from,
      end,
      scorer: this.#service,
      maxTensorElements: this.#limits.maxTensorElements,
    });
  }

  #parquetCodec(): ParquetCodec {
    if (this.#parquet === undefined) {
      throw new UnsupportedInputError('this batch runtime has no Parquet reader: upload JSON Lines or CSV');
    }
    return this.#parquet;
  }

  /** Opens the job's Parquet input by its footer, at the pinned version and size. */
  #openParquet(codec: ParquetCodec, job: JobSpec): Promise<ParquetFile> {
    return codec.open(
      { bucket: job.input.bucket, key: job.input.key },
      {
        size: job.input.size,
        etag: job.input.etag,
        ...(job.input.versionId === undefined ? {} : { versionId: job.input.versionId }),
      },
    );
  }

  /**
   * The input from `start` (decoded bytes) to its end, read whole or not at all: the store resumes a broken
   * body and checks what S3 says of the size; a plain input is also held to its size here.
   */
  #input(job: JobSpec, start: number, end?: number): AsyncIterable<Uint8Array> {
    const source = this.#store.read(
      { bucket: job.input.bucket, key: job.input.key },
      {
        start,
        ...(end === undefined ? {} : { end }),
        gunzip: job.input.gzip,
        etag: job.input.etag,
        ...(job.input.versionId === undefined ? {} : { versionId: job.input.versionId }),
        size: job.input.size,
      },
    );
    // Gzip: the store counts the compressed bytes; the decompressed size is known to no one.
    if (job.input.gzip) return source;
    return exactBytes(source, start, end ?? job.input.size, `the input '${job.input.key}'`);
  }

  /** Writes a scored part's result and error bytes as immutable objects. */
  async #writePart(
    job: JobSpec,
    shard: ShardSpec,
    no: number,
    part: ScoredPart,
  ): Promise<Omit<PartRecord, 'start' | 'end' | 'firstLine' | 'lastLine' | 'ms'>> {
    const keys = partKeys(job, shard, no);
    const bucket = job.output.bucket;
    const parquetOut = job.output.format === 'parquet';
    const outBytes =
      part.scored === 0
        ? undefined
        : await this.#store.write({ bucket, key: keys.out }, part.out.chunks(), {
            contentType: parquetOut ? PARQUET : NDJSON,
            gzip: !parquetOut && job.output.gzip,
          });
    const errorBytes =
      part.failed === 0
        ? undefined
        : await this.#store.write({ bucket, key: keys.errors }, part.errors.chunks(), {
            contentType: NDJSON,
            gzip: false,
          });
    return {
      no,
      read: part.read,
      scored: part.scored,
      failed: part.failed,
      ...(outBytes === undefined ? {} : { out: { key: keys.out, bytes: outBytes } }),
      ...(errorBytes === undefined ? {} : { errors: { key: keys.errors, bytes: errorBytes } }),
      ...(outBytes === undefined || part.rowGroups === undefined ? {} : { rowGroups: part.rowGroups }),
    };
  }

  /**
   * The results object: the parts' bytes concatenated (JSON Lines), or for Parquet `PAR1`, the parts and a
   * footer built from the row-group metadata their checkpoints kept. Returns its size and the work objects
   * written for it (to delete after the commit).
   */
  async #writeResults(
    job: JobSpec,
    parts: readonly PartRecord[],
  ): Promise<{ bytes: number; work: string[] }> {
    const bucket = job.output.bucket;
    const outRef = { bucket, key: job.output.out };
    const sources = parts.flatMap((part) => (part.out === undefined ? [] : [part.out]));
    if (job.output.format !== 'parquet' || job.parquet === undefined) {
      const bytes =
        sources.length === 0
          ? await this.#store.write(outRef, [], { contentType: NDJSON, gzip: job.output.gzip })
          : await this.#store.concat(outRef, sources, NDJSON);
      return { bytes, work: [] };
    }
    const layouts = parts.flatMap((part) => {
      if (part.out === undefined) return [];
      if (part.rowGroups === undefined) {
        throw new BatchStateError(`part ${part.no} of '${job.input.key}' lost its row-group metadata`);
      }
      return [{ bytes: part.out.bytes, rowGroups: part.rowGroups }];
    });
    const { head, footer } = this.#parquetCodec().fileEnds(job.parquet.schema, layouts);
    if (sources.length === 0) {
      return {
        bytes: await this.#store.write(outRef, [head, footer], { contentType: PARQUET, gzip: false }),
        work: [],
      };
    }
    // The ends are small objects of their own, so the whole file streams through one `concat`.
    const keys = parquetEndKeys(job.output.work);
    const raw = { contentType: 'application/octet-stream', gzip: false };
    const headBytes = await this.#store.write({ bucket, key: keys.head }, [head], raw);
    const footerBytes = await this.#store.write({ bucket, key: keys.footer }, [footer], raw);
    const bytes = await this.#store.concat(
      outRef,
      [{ key: keys.head, bytes: headBytes }, ...sources, { key: keys.footer, bytes: footerBytes }],
      PARQUET,
    );
    return { bytes, work: [keys.head, keys.footer] };
  }

  /** Streams the parts into the final objects, then writes the manifest (the commit point) and tidies up. */
  async #commit(
    job: JobSpec,
    checkpoints: readonly Checkpoint[],
    extraKeys: readonly string[],
    /** Invocations not counted in a checkpoint: one that only commits. */
    extraInvocations: number,
  ): Promise<FinalOutcome> {
    assertPartsCoverInput(job, checkpoints);
    const bucket = job.output.bucket;
    const parts = checkpoints.flatMap((c) => c.parts.map((part) => ({ part, shard: c.shard })));
    const errorSources = parts.flatMap(({ part }) => (part.errors === undefined ? [] : [part.errors]));
    const errorsRef = { bucket, key: job.output.errors };
    const results = await this.#writeResults(
      job,
      parts.map(({ part }) => part),
    );
    const outBytes = results.bytes;
    const errorBytes =
      errorSources.length === 0
        ? await this.#store.write(errorsRef, [], { contentType: NDJSON, gzip: false })
        : await this.#store.concat(errorsRef, errorSources, NDJSON);
    const counts = { read: 0, scored: 0, failed: 0 };
    let scoringMs = 0;
    for (const { part } of parts) {
      counts.read += part.read;
      counts.scored += part.scored;
      counts.failed += part.failed;
      scoringMs += part.ms;
    }
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      status: 'succeeded',
      input: job.input,
      model: { name: job.model.name, version: job.model.version, sha256: job.model.sha256 },
      counts,
      outputs: {
        out: { key: job.output.out, bytes: outBytes },
        errors: { key: job.output.errors, bytes: errorBytes },
      },
      parts: parts.map(({ part, shard }) => {
        // Part objects are deleted after the commit: the manifest keeps their ranges and counts only.
        const { out: _out, errors: _errors, rowGroups: _rowGroups, ...kept } = part;
        return { shard: [shard.start, shard.end] as const, ...kept };
      }),
      timings: {
        startedAt: job.startedAt,
        finishedAt: new Date(this.#now()).toISOString(),
        scoringMs,
        invocations: checkpoints.reduce((n, c) => n + c.invocations, extraInvocations),
      },
    };
    const manifestRef = { bucket, key: job.output.manifest };
    await this.#store.putText(manifestRef, `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
    this.#log.info('batch job committed', { key: job.input.key, manifest: manifestRef.key, ...counts });
    await this.#tidy(bucket, [
      ...checkpoints.flatMap((c) => [...workKeys(c), checkpointKey(job.output.work, c.shard)]),
      ...results.work,
      ...extraKeys,
    ]);
    return { status: 'succeeded', manifest: manifestRef.key, counts };
  }

  /** Writes a `failed` manifest, and no output object, for a job that could not start. */
  async #failBeforeStart(prepared: Prepared, error: ServingError): Promise<FinalOutcome> {
    const { object, input, names, outputBucket } = prepared;
    return this.#writeFailed(
      {
        input: inputOf(prepared),
        model: { name: input.model, ...(input.version === undefined ? {} : { version: input.version }) },
        manifest: { bucket: outputBucket, key: names.manifest },
        startedAt: new Date(this.#now()).toISOString(),
        invocations: 1,
        work: unreadableKeys(error),
      },
      error,
      object.key,
    );
  }

  /**
   * Writes a `failed` manifest, and no output object, for a started job that cannot go on (a terminal
   * error while scoring `shard`); the parts and checkpoint written so far are deleted.
   */
  async #fail(job: JobSpec, shard: ShardSpec, error: ServingError): Promise<FinalOutcome> {
    const ref = { bucket: job.output.bucket, key: checkpointKey(job.output.work, shard) };
    // The stored checkpoint lists every part written so far, this invocation's included.
    const stored = await this.#loadCheckpoint(ref, job.input.etag).catch(() => undefined);
    const work = stored === undefined ? unreadableKeys(error) : [...workKeys(stored), ref.key];
    return this.#writeFailed(
      {
        input: job.input,
        model: { name: job.model.name, version: job.model.version, sha256: job.model.sha256 },
        manifest: { bucket: job.output.bucket, key: job.output.manifest },
        startedAt: job.startedAt,
        invocations: Math.max(1, stored?.invocations ?? 1),
        work,
      },
      error,
      job.input.key,
    );
  }

  async #writeFailed(
    failed: {
      readonly input: Manifest['input'];
      readonly model: Manifest['model'];
      readonly manifest: ObjectRef;
      readonly startedAt: string;
      readonly invocations: number;
      /** Work objects to delete once the manifest is written. */
      readonly work: readonly string[];
    },
    error: ServingError,
    key: string,
  ): Promise<FinalOutcome> {
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      status: 'failed',
      input: failed.input,
      model: failed.model,
      counts: { read: 0, scored: 0, failed: 0 },
      parts: [],
      timings: {
        startedAt: failed.startedAt,
        finishedAt: new Date(this.#now()).toISOString(),
        scoringMs: 0,
        invocations: failed.invocations,
      },
      error: { code: error.code, message: error.message },
    };
    await this.#store.putText(failed.manifest, `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
    this.#log.warn('batch job failed', { key, code: error.code, message: error.message });
    await this.#tidy(failed.manifest.bucket, failed.work);
    return {
      status: 'failed',
      manifest: failed.manifest.key,
      counts: manifest.counts,
      error: { code: error.code, message: error.message },
    };
  }

  /** Deletes work objects after the commit point, where a failed delete costs storage, not correctness. */
  async #tidy(bucket: string, keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    try {
      await this.#store.remove(bucket, keys);
    } catch (error) {
      this.#log.warn('batch job work objects could not be deleted', { keys: keys.length, error });
    }
  }

  #commitFits(checkpoints: readonly Checkpoint[], clock: InvocationClock): boolean {
    let bytes = 0;
    for (const c of checkpoints)
      for (const p of c.parts) bytes += (p.out?.bytes ?? 0) + (p.errors?.bytes ?? 0);
    return clock.remainingMs() - this.#config.timeMarginMs >= bytes / COMMIT_BYTES_PER_MS;
  }

  async #readManifest(ref: ObjectRef): Promise<Manifest | undefined> {
    const text = await this.#store.getText(ref);
    if (text === undefined) return undefined;
    try {
      return parseManifest(text);
    } catch (error) {
      this.#log.warn('unreadable batch manifest: the job runs again', { key: ref.key, error });
      return undefined;
    }
  }

  async #loadCheckpoint(ref: ObjectRef, etag: string): Promise<Checkpoint | undefined> {
    const text = await this.#store.getText(ref);
    if (text === undefined) return undefined;
    let checkpoint: Checkpoint;
    try {
      checkpoint = parseCheckpoint(text);
    } catch (error) {
      if (!(error instanceof UnreadableBatchStateError)) throw error;
      throw new UnreadableBatchStateError(`${error.message}: ${ref.key}`, { cause: error, key: ref.key });
    }
    if (checkpoint.job.input.etag !== etag) {
      throw new BatchStateError(`the checkpoint ${ref.key} belongs to another version of the input`);
    }
    return checkpoint;
  }

  async #saveCheckpoint(checkpoint: Checkpoint): Promise<void> {
    const { job, shard } = checkpoint;
    await this.#store.putText(
      { bucket: job.output.bucket, key: checkpointKey(job.output.work, shard) },
      JSON.stringify(checkpoint),
      'application/json',
    );
  }

  /** The input's first line (a CSV header), or `undefined` for an empty input. */
  async #firstLine(job: JobSpec): Promise<string | undefined> {
    const lines = splitLines(
      this.#input(job, 0),
      { kind: 'line-start', offset: 0, line: 1 },
      job.settings.maxLineBytes,
    );
    try {
      const first = await lines.next();
      if (first.done) return undefined;
      if (first.value.bytes === undefined) throw new UnsupportedInputError('the CSV header line is too long');
      return new TextDecoder().decode(first.value.bytes);
    } finally {
      await lines.return(undefined);
    }
  }

  /** `\n` bytes before each offset of `offsets` (ascending), in one read of the input up to the last. */
  async #countNewlines(job: JobSpec, offsets: readonly number[]): Promise<number[]> {
    const counts = offsets.map(() => 0);
    const end = offsets.at(-1) ?? 0;
    if (end === 0) return counts;
    const source = this.#input(job, 0, end);
    let base = 0;
    let seen = 0;
    let target = 0;
    for await (const chunk of source) {
      let pos = 0;
      while (pos < chunk.byteLength) {
        while (target < offsets.length && (offsets[target] as number) <= base + pos) counts[target++] = seen;
        const limit = Math.min(chunk.byteLength, (offsets[target] ?? end) - base);
        const newline = chunk.indexOf(10, pos);
        if (newline !== -1 && newline < limit) {
          seen += 1;
          pos = newline + 1;
        } else {
          pos = limit;
        }
      }
      base += chunk.byteLength;
    }
    while (target < offsets.length) counts[target++] = seen;
    return counts;
  }

  #ignore(object: ObjectVersionRef, reason: string): FinalOutcome {
    this.#log.info('batch event ignored', { bucket: object.bucket, key: object.key, reason });
    return { status: 'ignored', reason };
  }

  #skip(object: ObjectVersionRef, reason: string): FinalOutcome {
    this.#log.info('batch job skipped', { bucket: object.bucket, key: object.key, reason });
    return { status: 'skipped', reason };
  }
}

/** What the results of an input in `format` are written as. */
function outputFormatOf(format: InputKey['format'], config: BatchConfig): OutputFormat {
  return format === 'parquet' ? config.parquetOutput : 'jsonl';
}

/** The input object as the job and its manifest record it. */
function inputOf({ object, etag, info, input }: Prepared) {
  return {
    bucket: object.bucket,
    key: object.key,
    etag,
    ...(object.versionId === undefined ? {} : { versionId: object.versionId }),
    size: info.size,
    format: input.format,
  };
}

function initialCheckpoint(job: JobSpec, shard: ShardSpec): Checkpoint {
  return {
    format: CHECKPOINT_FORMAT,
    job,
    shard,
    // Parquet: row group 0, row 0; text: byte 0, line 1.
    next: shard.start === 0 ? { offset: 0, line: job.parquet === undefined ? 1 : 0 } : null,
    parts: [],
    done: false,
    invocations: 0,
  };
}

/** The part objects a checkpoint lists. */
function workKeys(checkpoint: Checkpoint): string[] {
  return checkpoint.parts.flatMap((p) => [p.out?.key, p.errors?.key].filter((k) => k !== undefined));
}

/** The unreadable state object `error` names, to delete with the failed manifest (a re-run starts afresh). */
function unreadableKeys(error: ServingError): string[] {
  return error instanceof UnreadableBatchStateError && error.key !== undefined ? [error.key] : [];
}
