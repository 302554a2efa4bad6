/**
 * Part 3, batch throughput: the bundled batch handler scoring JSONL and Parquet inputs (the same records;
 * Parquet written by DuckDB from the JSONL file) of 10,000 and 100,000 records from and to s3rver on loopback, each sample in a fresh process (children/batch-throughput.ts), against a
 * loop of `session.run` over the same records pre-parsed into tensors of the runner's micro-batch size.
 */
import { existsSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { BatchReport, BatchSpec } from '../lib/batch-protocol';
import { runChild } from '../lib/child';
import { benchInput } from '../lib/input';
import { type BenchModel, type ModelSpec, prepareModel } from '../lib/models';
import { type PartOptions, type PartResult, type Target, target, unavailable, verdict } from '../lib/part';
import { type BenchRepository, startRepository } from '../lib/repository';
import { type Summary, summarize } from '../lib/stats';
import { formatSummary, type Table } from '../lib/table';

const RATIO_LIMIT = 0.8;
/** Peak RSS growth limits: [smaller size, larger size, limit] (issue #7; 1,000,000 rows: issue #12). */
const RSS_TARGETS: readonly (readonly [number, number, number])[] = [
  [10_000, 100_000, 1.1],
  [100_000, 1_000_000, 1.2],
];
/** The models' `maxBatchSize`, hence the runner's micro-batch size and the raw loop's batch size. */
const MAX_BATCH_SIZE = 256;
const WARMUP_RECORDS = 10;
/** The batch function's NODE_OPTIONS as deployed (deploy/stack.cjs): the handler runs as it would there. */
const DEPLOYED_NODE_OPTIONS = ['--enable-source-maps', '--max-semi-space-size=2'];
const EXTRA_RECORDS = 300_000;
/** Parquet only: the memory target compares its peak RSS with that of 100,000 rows. */
const MILLION = 1_000_000;
/** Rows per row group of the Parquet inputs: DuckDB's default, named. */
const ROW_GROUP_SIZE = 122_880;

/** A tabular model whose run costs microseconds, and one whose matrix products dominate. */
const MODELS: readonly ModelSpec[] = [
  { kind: 'linear' },
  { kind: 'mlp-layers', inputSize: 32, hidden: [1024, 1024], outputSize: 10 },
];

interface Sample {
  readonly recordsPerSecond: number;
  readonly rawRecordsPerSecond: number;
  readonly peakRssMB: number;
}

/** The input formats measured, each through the same handler. */
type InputFormat = 'jsonl' | 'parquet';
const FORMATS: readonly InputFormat[] = ['jsonl', 'parquet'];

export interface BatchRow {
  readonly model: string;
  readonly format: InputFormat;
  readonly records: number;
  readonly recordsPerSecond: Summary;
  readonly rawRecordsPerSecond: Summary;
  /** Per run, the handler's records/s over the raw loop's. */
  readonly ratio: Summary;
  readonly peakRssMB: Summary;
  /** Per run, the handler's time per record minus the raw loop's (µs): what the pipeline adds. */
  readonly overheadUsPerRecord: Summary;
  readonly samples: readonly Sample[];
}

export async function runBatchThroughput(options: PartOptions): Promise<PartResult> {
  const { root, workDir, log, quick } = options;
  const handler = join(root, 'dist/batch/index.js');
  const child = join(root, 'dist/bench/children/batch-throughput.js');
  if (!existsSync(handler)) {
    return unavailable('batch', `${handler} is not built: run 'node tools/build.mjs'`);
  }
  if (!existsSync(child)) throw new Error(`${child} is missing: run 'node bench/build.mjs'`);
  const plan = casesOf(options);
  const specs = quick ? MODELS.slice(0, 1) : MODELS;
  const repo = await startRepository();
  const duck = await (await DuckDBInstance.create(':memory:')).connect();
  try {
    const rows: BatchRow[] = [];
    const models: BenchModel[] = [];
    for (const spec of specs) {
      const model = await prepareModel(workDir, spec);
      await repo.publish(model, { maxBatchSize: MAX_BATCH_SIZE });
      models.push(model);
      const features = model.input.shape[1] as number;
      const warmupFile = join(workDir, `${model.name}-warmup.jsonl`);
      await writeJsonl(warmupFile, WARMUP_RECORDS, features, model.input.name);
      for (const [records, format] of plan(models.length === 1)) {
        const dataFile = join(workDir, `${model.name}-${records}.jsonl`);
        if (!existsSync(dataFile)) await writeJsonl(dataFile, records, features, model.input.name);
        const body =
          format === 'jsonl' ? await readFile(dataFile) : await toParquet(duck, dataFile, model.input.name);
        const warmup =
          format === 'jsonl'
            ? await readFile(warmupFile)
            : await toParquet(duck, warmupFile, model.input.name);
        const samples: Sample[] = [];
        for (let run = 0; run < options.runs; run++) {
          // A committed job never runs again: every sample scores inputs under keys of its own.
          const base = `batch/in/${model.name}/run-${run}`;
          const spec: BatchSpec = {
            handler,
            bucket: repo.bucket,
            warmupKey: `${base}/warmup-${records}.${format}`,
            warmupEtag: await put(repo, `${base}/warmup-${records}.${format}`, warmup),
            inputKey: `${base}/records-${records}.${format}`,
            inputEtag: await put(repo, `${base}/records-${records}.${format}`, body),
            records,
            ortFile: model.ort.file,
            inputName: model.input.name,
            features,
            batchSize: MAX_BATCH_SIZE,
          };
          const specFile = join(workDir, 'batch-spec.json');
          await writeFile(specFile, JSON.stringify(spec));
          const { result } = await runChild<BatchReport>({
            script: child,
            args: [specFile],
            // BENCH_CPU_PROF_DIR: each sample's child writes a V8 CPU profile there (to find per-record work).
            nodeOptions: process.env.BENCH_CPU_PROF_DIR
              ? [...DEPLOYED_NODE_OPTIONS, '--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF_DIR}`]
              : DEPLOYED_NODE_OPTIONS,
            env: {
              PATH: process.env.PATH ?? '',
              ...repo.clientEnv,
              AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '3008',
              ONNX_SERVE_MODEL_REPOSITORY: repo.url,
              ONNX_SERVE_S3_ENDPOINT: repo.endpoint,
              ONNX_SERVE_DISK_CACHE_MB: '0',
              ONNX_SERVE_LOG_LEVEL: 'WARN',
              // BENCH_RSS_TRACE: a folder where each sample writes its memory every 100 ms during the job.
              BENCH_RSS_TRACE: process.env.BENCH_RSS_TRACE ?? '',
            },
            timeoutMs: 600_000,
          });
          if (result.outcome.counts?.scored !== records) {
            throw new Error(
              `the job scored ${JSON.stringify(result.outcome.counts)}, not ${records} records`,
            );
          }
          if (format === 'jsonl') {
            await checkOutput(
              repo,
              `batch/out/${model.name}/run-${run}/records-${records}.out.jsonl`,
              records,
            );
          }
          samples.push({
            recordsPerSecond: records / (result.jobMs / 1000),
            rawRecordsPerSecond: records / (result.rawMs / 1000),
            peakRssMB: result.peakRssKiB / 1024,
          });
        }
        rows.push({
          model: model.name,
          format,
          records,
          recordsPerSecond: summarize(samples.map((s) => s.recordsPerSecond)),
          rawRecordsPerSecond: summarize(samples.map((s) => s.rawRecordsPerSecond)),
          ratio: summarize(samples.map((s) => s.recordsPerSecond / s.rawRecordsPerSecond)),
          peakRssMB: summarize(samples.map((s) => s.peakRssMB)),
          overheadUsPerRecord: summarize(
            samples.map((s) => 1e6 / s.recordsPerSecond - 1e6 / s.rawRecordsPerSecond),
          ),
          samples,
        });
        log(`batch: ${model.name} ${format} ${records} records done`);
      }
    }
    return report(models, rows, options.formats ?? FORMATS);
  } finally {
    duck.closeSync();
    await repo.close();
  }
}

/**
 * What is measured, in order: each format's sizes (JSONL: the targets' two, plus {@link EXTRA_RECORDS} for
 * the first model; Parquet: the targets' two plus {@link MILLION}, the memory target's size), or what
 * `--sizes` and `--formats` ask for.
 */
function casesOf(options: PartOptions): (first: boolean) => [number, InputFormat][] {
  const formats = (options.formats ?? FORMATS) as readonly InputFormat[];
  return (first) =>
    formats.flatMap((format) => {
      const sizes =
        options.sizes ??
        (options.quick
          ? [100, 1000]
          : format === 'parquet'
            ? [10_000, 100_000, MILLION]
            : [10_000, 100_000, ...(first ? [EXTRA_RECORDS] : [])]);
      return sizes.map((n): [number, InputFormat] => [n, format]);
    });
}

/**
 * The same records as Parquet, written by DuckDB with its defaults, named here so the figures say what they
 * measured (snappy, {@link ROW_GROUP_SIZE}-row row groups): an INT64 `id` and a FLOAT list column named like
 * the input, in record order.
 */
async function toParquet(duck: DuckDBConnection, jsonlFile: string, input: string): Promise<Uint8Array> {
  const file = `${jsonlFile}.parquet`;
  await duck.run(
    `COPY (SELECT id::BIGINT AS id, "${input}"::FLOAT[] AS "${input}" FROM read_json('${jsonlFile}', format = 'newline_delimited') ORDER BY id) TO '${file}' (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${ROW_GROUP_SIZE})`,
  );
  return new Uint8Array(await readFile(file));
}

/** Writes `count` records `{"id": i, "<input>": [features...]}`, one per line, a block of lines at a time. */
async function writeJsonl(file: string, count: number, features: number, input: string): Promise<void> {
  const values = benchInput(count * features);
  const out = await open(file, 'w');
  try {
    for (let start = 0; start < count; start += 10_000) {
      const lines: string[] = [];
      for (let i = start; i < Math.min(count, start + 10_000); i++) {
        lines.push(
          JSON.stringify({ id: i, [input]: Array.from(values.subarray(i * features, (i + 1) * features)) }),
        );
      }
      await out.write(`${lines.join('\n')}\n`);
    }
  } finally {
    await out.close();
  }
}

/** Uploads and returns the ETag as an S3 event carries it (no quotes). */
async function put(repo: BenchRepository, key: string, body: string | Uint8Array): Promise<string> {
  return (await repo.server.putObject(repo.bucket, key, body)).replace(/"/g, '');
}

/** The results object holds one parseable line per record. */
async function checkOutput(repo: BenchRepository, key: string, records: number): Promise<void> {
  const object = await repo.server.client.send(new GetObjectCommand({ Bucket: repo.bucket, Key: key }));
  const lines = ((await object.Body?.transformToString('utf-8')) ?? '').split('\n').filter((l) => l !== '');
  if (lines.length !== records) throw new Error(`${key} holds ${lines.length} result lines, not ${records}`);
  JSON.parse(lines[0] as string);
  JSON.parse(lines[lines.length - 1] as string);
}

function report(
  models: readonly BenchModel[],
  rows: readonly BatchRow[],
  formats: readonly string[],
): PartResult {
  const targets: Target[] = [];
  for (const model of models) {
    for (const format of formats) {
      const of = (records: number) =>
        rows.find((r) => r.model === model.name && r.format === format && r.records === records);
      const measured = rows.filter((r) => r.model === model.name && r.format === format);
      for (const row of measured) {
        // The extra JSONL size only shows whether memory levels off.
        if (format === 'jsonl' && row.records === EXTRA_RECORDS) continue;
        targets.push(
          target(
            `${model.name} ${format} ${row.records} records: handler / raw loop`,
            row.ratio.median,
            '>=',
            RATIO_LIMIT,
            'ratio',
          ),
        );
      }
      for (const [small, large, limit] of RSS_TARGETS) {
        const [low, high] = [of(small), of(large)];
        if (low === undefined || high === undefined || (format === 'jsonl' && large === MILLION)) continue;
        targets.push(
          target(
            `${model.name} ${format}: peak RSS ${large} / ${small} records`,
            high.peakRssMB.median / low.peakRssMB.median,
            '<=',
            limit,
            `RSS ${large}/${small}`,
          ),
        );
      }
    }
  }
  const table: Table = {
    title: `Batch throughput: JSONL and Parquet from and to s3rver through the bundled batch handler vs session.run over pre-parsed tensors (median (min–max) over runs)`,
    columns: [
      'model',
      'input',
      'records',
      'handler records/s',
      'raw records/s',
      'handler/raw',
      'added µs/record',
      'peak RSS MiB',
      'target',
    ],
    rows: rows.map((row) => [
      row.model,
      row.format,
      String(row.records),
      formatSummary(row.recordsPerSecond),
      formatSummary(row.rawRecordsPerSecond),
      formatSummary(row.ratio, 2),
      formatSummary(row.overheadUsPerRecord, 1),
      formatSummary(row.peakRssMB),
      verdict(
        targets.filter(
          (t) =>
            t.name.startsWith(`${row.model} ${row.format} ${row.records} `) ||
            t.name.startsWith(`${row.model} ${row.format}: peak RSS ${row.records} /`),
        ),
      ),
    ]),
    notes: [
      `Targets: handler >= ${RATIO_LIMIT} x the raw loop; peak RSS ${RSS_TARGETS.map(([small, large, limit]) => `at ${large} records <= ${limit} x at ${small}`).join(', ')} (the last: Parquet only, issue #12).`,
      `Parquet: the same records written by DuckDB from the JSONL file (snappy, ${ROW_GROUP_SIZE}-row row groups: DuckDB's default; an INT64 id and a FLOAT list column named like the input), results written as .out.parquet.`,
      `Raw loop: session.run on [${MAX_BATCH_SIZE}, features] tensors (the runner's micro-batch: the model's maxBatchSize ${MAX_BATCH_SIZE}), created with the engine's options from the same ORT file; parsing untimed.`,
      `Handler: one invocation per input, model already loaded (a small input scored first), Node flags as deployed (${DEPLOYED_NODE_OPTIONS.join(' ')}); peak RSS read right after it.`,
      `${EXTRA_RECORDS} records (first model only, no target): whether peak memory keeps growing with the input or levels off.`,
      'added µs/record: handler time per record minus the raw loop’s, what reading, parsing, stacking, encoding and writing cost per record; the ratio target holds for a model whose run takes about 4x that per record.',
      ...models.map((m) => `${m.name}: ${m.description}`),
    ],
  };
  return { part: 'batch', available: true, tables: [table], targets, data: { rows } };
}
