/**
 * Part `parquet`: the Parquet building blocks of batch scoring (ranged row-group reads, columns to tensors,
 * `session.run`, Parquet row-group encoding) over DuckDB-written files of 10,000 to 1,000,000 rows, each
 * sample in a fresh process (children/parquet-pipeline.ts), against a loop of `session.run` over tensors of
 * the same count and micro-batch size. The same models as the batch part. Local files, no S3, no job
 * lifecycle: the batch handler does not take Parquet yet.
 */
import { existsSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { runChild } from '../lib/child';
import { type BenchModel, type ModelSpec, prepareModel } from '../lib/models';
import type { ParquetReport, ParquetSpec } from '../lib/parquet-protocol';
import { type PartOptions, type PartResult, type Target, target, verdict } from '../lib/part';
import { type Summary, summarize } from '../lib/stats';
import { formatSummary, type Table } from '../lib/table';

const MAX_BATCH_SIZE = 256;
const RATIO_LIMIT = 0.8;
const LINEAR_ADDED_US_LIMIT = 1;
const RSS_GROWTH_LIMIT = 1.2;
const DEPLOYED_NODE_OPTIONS = ['--enable-source-maps', '--max-semi-space-size=2'];

const MODELS: readonly { spec: ModelSpec; sizes: readonly number[] }[] = [
  { spec: { kind: 'linear' }, sizes: [10_000, 100_000, 1_000_000] },
  {
    spec: { kind: 'mlp-layers', inputSize: 32, hidden: [1024, 1024], outputSize: 10 },
    sizes: [10_000, 100_000],
  },
];

interface Sample {
  readonly recordsPerSecond: number;
  readonly rawRecordsPerSecond: number;
  readonly peakRssMB: number;
}

export interface ParquetRow {
  readonly model: string;
  readonly records: number;
  readonly fileMB: number;
  readonly rowGroups: number;
  readonly recordsPerSecond: Summary;
  readonly rawRecordsPerSecond: Summary;
  readonly ratio: Summary;
  readonly addedUsPerRecord: Summary;
  readonly peakRssMB: Summary;
  readonly samples: readonly Sample[];
}

export async function runParquetPipeline(options: PartOptions): Promise<PartResult> {
  const { root, workDir, log, quick } = options;
  const child = join(root, 'dist/bench/children/parquet-pipeline.js');
  if (!existsSync(child)) throw new Error(`${child} is missing: run 'node bench/build.mjs'`);
  const duck = await (await DuckDBInstance.create(':memory:')).connect();
  const rows: ParquetRow[] = [];
  const models: BenchModel[] = [];
  try {
    for (const { spec, sizes } of quick ? MODELS.slice(0, 1) : MODELS) {
      const model = await prepareModel(workDir, spec);
      models.push(model);
      const features = model.input.shape[1] as number;
      for (const records of quick ? [1000, 10_000] : sizes) {
        const file = join(workDir, `${model.name}-${records}.parquet`);
        const columns = Array.from(
          { length: features },
          (_, j) => `(((i * 7 + ${j * 3}) % 17) / 4 - 2)::FLOAT AS f${j}`,
        );
        // DuckDB's defaults: snappy, row groups of 122,880 rows.
        await duck.run(
          `COPY (SELECT i AS id, ${columns.join(', ')} FROM range(${records}) t(i)) TO '${file}' (FORMAT parquet)`,
        );
        const size = statSync(file).size;
        const samples: Sample[] = [];
        let rowGroups = 0;
        for (let run = 0; run < options.runs; run++) {
          const specFile = join(workDir, 'parquet-spec.json');
          const childSpec: ParquetSpec = {
            file,
            records,
            ortFile: model.ort.file,
            inputName: model.input.name,
            features,
            batchSize: MAX_BATCH_SIZE,
          };
          await writeFile(specFile, JSON.stringify(childSpec));
          const { result } = await runChild<ParquetReport>({
            script: child,
            args: [specFile],
            nodeOptions: DEPLOYED_NODE_OPTIONS,
            env: { PATH: process.env.PATH ?? '' },
            timeoutMs: 900_000,
          });
          rowGroups = result.rowGroups;
          samples.push({
            recordsPerSecond: records / (result.pipelineMs / 1000),
            rawRecordsPerSecond: records / (result.rawMs / 1000),
            peakRssMB: result.peakRssKiB / 1024,
          });
        }
        rows.push({
          model: model.name,
          records,
          fileMB: size / 1e6,
          rowGroups,
          recordsPerSecond: summarize(samples.map((s) => s.recordsPerSecond)),
          rawRecordsPerSecond: summarize(samples.map((s) => s.rawRecordsPerSecond)),
          ratio: summarize(samples.map((s) => s.recordsPerSecond / s.rawRecordsPerSecond)),
          addedUsPerRecord: summarize(
            samples.map((s) => 1e6 / s.recordsPerSecond - 1e6 / s.rawRecordsPerSecond),
          ),
          peakRssMB: summarize(samples.map((s) => s.peakRssMB)),
          samples,
        });
        log(`parquet: ${model.name} ${records} rows done`);
      }
    }
  } finally {
    duck.closeSync();
  }
  return report(models, rows);
}

function report(models: readonly BenchModel[], rows: readonly ParquetRow[]): PartResult {
  const targets: Target[] = [];
  const [linear, mlp] = models;
  const of = (model: BenchModel | undefined, records: number) =>
    rows.find((r) => r.model === model?.name && r.records === records);
  for (const row of rows.filter((r) => r.model === mlp?.name)) {
    targets.push(
      target(
        `${row.model} ${row.records} rows: pipeline / raw loop`,
        row.ratio.median,
        '>=',
        RATIO_LIMIT,
        'ratio',
      ),
    );
  }
  for (const row of rows.filter((r) => r.model === linear?.name)) {
    targets.push(
      target(
        `${row.model} ${row.records} rows: added µs/record`,
        row.addedUsPerRecord.median,
        '<=',
        LINEAR_ADDED_US_LIMIT,
        'µs',
      ),
    );
  }
  const big = of(linear, 1_000_000);
  const small = of(linear, 100_000);
  if (big !== undefined && small !== undefined) {
    targets.push(
      target(
        `${big.model}: peak RSS 1000000 / 100000 rows`,
        big.peakRssMB.median / small.peakRssMB.median,
        '<=',
        RSS_GROWTH_LIMIT,
        'RSS',
      ),
    );
  }
  const table: Table = {
    title:
      'Parquet pipeline: ranged row-group reads, columns to tensors, session.run, Parquet row groups out (local file, no S3, no job lifecycle) vs session.run over ready tensors (median (min–max) over runs)',
    columns: [
      'model',
      'rows',
      'file MB',
      'row groups',
      'pipeline rows/s',
      'raw rows/s',
      'pipeline/raw',
      'added µs/row',
      'peak RSS MiB',
      'target',
    ],
    rows: rows.map((row) => [
      row.model,
      String(row.records),
      row.fileMB.toFixed(2),
      String(row.rowGroups),
      formatSummary(row.recordsPerSecond),
      formatSummary(row.rawRecordsPerSecond),
      formatSummary(row.ratio, 2),
      formatSummary(row.addedUsPerRecord, 2),
      formatSummary(row.peakRssMB),
      verdict(
        targets.filter(
          (t) =>
            t.name.startsWith(`${row.model} ${row.records} `) ||
            (row.records === 1_000_000 && t.name.startsWith(`${row.model}: peak RSS`)),
        ),
      ),
    ]),
    notes: [
      `Targets: MLP pipeline >= ${RATIO_LIMIT} x the raw loop; Linear adds <= ${LINEAR_ADDED_US_LIMIT} µs per row; peak RSS at 1,000,000 rows <= ${RSS_GROWTH_LIMIT} x at 100,000.`,
      `Files written by DuckDB with its defaults (snappy, 122,880-row row groups): an INT64 id and FLOAT columns f0..fN, gathered by the prefix mapping {"prefix": "f"}.`,
      `Raw loop: session.run on [${MAX_BATCH_SIZE}, features] tensors built untimed, same session (ORT file, the engine's options).`,
      ...models.map((m) => `${m.name}: ${m.description}`),
    ],
  };
  return { part: 'parquet', available: true, tables: [table], targets, data: { rows } };
}
