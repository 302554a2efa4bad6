/**
 * Part 3, batch throughput: the bundled batch handler scoring JSONL and Parquet inputs (the same records;
 * Parquet written by DuckDB from the JSONL file) of 10,000 and 100,000 records from and to s3rver on loopback, each sample in a fresh process (children/batch-throughput.ts), against a
 * loop of `session.run` over the same records pre-parsed into tensors of the runner's micro-batch size.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
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
const RSS_GROWTH_LIMIT = 1.1;
/** The models' `maxBatchSize`, hence the runner's micro-batch size and the raw loop's batch size. */
const MAX_BATCH_SIZE = 256;
const WARMUP_RECORDS = 10;
/** The batch function's NODE_OPTIONS as deployed (deploy/stack.cjs): the handler runs as it would there. */
const DEPLOYED_NODE_OPTIONS = ['--enable-source-maps', '--max-semi-space-size=2'];
const EXTRA_RECORDS = 300_000;

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
  const sizes = quick ? [100, 1000] : [10_000, 100_000];
  // Beyond the targets' two sizes, for the first model only: whether peak memory levels off.
  const extraSizes = quick ? [] : [EXTRA_RECORDS];
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
      const warmupText = jsonl(WARMUP_RECORDS, features, model.input.name);
      for (const [records, format] of cases(models.length === 1 ? [...sizes, ...extraSizes] : sizes)) {
        const text = jsonl(records, features, model.input.name);
        const dataFile = join(workDir, `${model.name}-${records}.jsonl`);
        await writeFile(dataFile, text);
        const warmupFile = join(workDir, `${model.name}-warmup.jsonl`);
        await writeFile(warmupFile, warmupText);
        const body = format === 'jsonl' ? text : await toParquet(duck, dataFile, model.input.name);
        const warmup = format === 'jsonl' ? warmupText : await toParquet(duck, warmupFile, model.input.name);
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
            dataFile,
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
            nodeOptions: DEPLOYED_NODE_OPTIONS,
            env: {
              PATH: process.env.PATH ?? '',
              ...repo.clientEnv,
              AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '3008',
              ONNX_SERVE_MODEL_REPOSITORY: repo.url,
              ONNX_SERVE_S3_ENDPOINT: repo.endpoint,
              ONNX_SERVE_DISK_CACHE_MB: '0',
              ONNX_SERVE_LOG_LEVEL: 'WARN',
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
    return report(models, rows, sizes);
  } finally {
    duck.closeSync();
    await repo.close();
  }
}

/** Each size in JSONL, then the targets' sizes in Parquet too (the extra size: JSONL only). */
function cases(sizes: readonly number[]): [number, InputFormat][] {
  return FORMATS.flatMap((format) =>
    sizes
      .filter((n) => format === 'jsonl' || n !== EXTRA_RECORDS)
      .map((n): [number, InputFormat] => [n, format]),
  );
}

/**
 * The same records as Parquet, written by DuckDB with its defaults (snappy, 122,880-row row groups): an
 * INT64 `id` and a FLOAT list column named like the input, in record order.
 */
async function toParquet(duck: DuckDBConnection, jsonlFile: string, input: string): Promise<Uint8Array> {
  const file = `${jsonlFile}.parquet`;
  await duck.run(
    `COPY (SELECT id::BIGINT AS id, "${input}"::FLOAT[] AS "${input}" FROM read_json('${jsonlFile}', format = 'newline_delimited') ORDER BY id) TO '${file}' (FORMAT parquet)`,
  );
  return new Uint8Array(await readFile(file));
}

/** `count` records `{"id": i, "<input>": [features...]}`, one per line. */
function jsonl(count: number, features: number, input: string): string {
  const values = benchInput(count * features);
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    lines.push(
      JSON.stringify({ id: i, [input]: Array.from(values.subarray(i * features, (i + 1) * features)) }),
    );
  }
  return `${lines.join('\n')}\n`;
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
  sizes: readonly number[],
): PartResult {
  const targets: Target[] = [];
  const [small, large] = sizes as [number, number];
  for (const model of models) {
    for (const format of FORMATS) {
      const of = (records: number) =>
        rows.find((r) => r.model === model.name && r.format === format && r.records === records) as BatchRow;
      for (const records of sizes) {
        targets.push(
          target(
            `${model.name} ${format} ${records} records: handler / raw loop`,
            of(records).ratio.median,
            '>=',
            RATIO_LIMIT,
            'ratio',
          ),
        );
      }
      targets.push(
        target(
          `${model.name} ${format}: peak RSS ${large} / ${small} records`,
          of(large).peakRssMB.median / of(small).peakRssMB.median,
          '<=',
          RSS_GROWTH_LIMIT,
          'RSS',
        ),
      );
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
            (row.records === large && t.name.startsWith(`${row.model} ${row.format}: peak RSS`)),
        ),
      ),
    ]),
    notes: [
      `Targets: handler >= ${RATIO_LIMIT} x the raw loop; peak RSS at ${large} records <= ${RSS_GROWTH_LIMIT} x at ${small}.`,
      'Parquet: the same records written by DuckDB from the JSONL file (its defaults: snappy, 122,880-row row groups; an INT64 id and a FLOAT list column named like the input), results written as .out.parquet.',
      `Raw loop: session.run on [${MAX_BATCH_SIZE}, features] tensors (the runner's micro-batch: the model's maxBatchSize ${MAX_BATCH_SIZE}), created with the engine's options from the same ORT file; parsing untimed.`,
      `Handler: one invocation per input, model already loaded (a small input scored first), Node flags as deployed (${DEPLOYED_NODE_OPTIONS.join(' ')}); peak RSS read right after it.`,
      `${EXTRA_RECORDS} records (first model only, no target): whether peak memory keeps growing with the input or levels off.`,
      'added µs/record: handler time per record minus the raw loop’s, what reading, parsing, stacking, encoding and writing cost per record; the ratio target holds for a model whose run takes about 4x that per record.',
      ...models.map((m) => `${m.name}: ${m.description}`),
    ],
  };
  return { part: 'batch', available: true, tables: [table], targets, data: { rows } };
}
