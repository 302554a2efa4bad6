/**
 * One Parquet-pipeline sample in a fresh process (spawned by bench/parts/parquet-pipeline.ts):
 *
 *   node dist/bench/children/parquet-pipeline.js <spec.json>
 *
 * Times the Parquet building blocks of batch scoring over a DuckDB-written file on local disk: ranged reads
 * of row groups (footer first), columns to tensors (`mapRows`), `session.run` per micro-batch, results
 * encoded as Parquet row groups; then reads the peak resident memory, and last times a loop of
 * `session.run` over tensors of the same count and micro-batch size (built untimed). Prints one
 * {@link ParquetReport} line. No S3 and no job lifecycle (parts, checkpoints): the handler does not read
 * Parquet yet.
 */
import { createReadStream, readFileSync, statSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { ParquetObjectReader } from '../../shared/adapters/parquet-object-reader';
import {
  encodeRowGroups,
  outputSchemaFor,
  type ScoredBatch,
} from '../../shared/adapters/parquet-output-writer';
import { mapRows, planParquetColumns } from '../../shared/core/batch/parquet-mapping';
import type { BatchObjectStore } from '../../shared/core/batch/ports';
import type { Datatype, TensorData } from '../../shared/core/tensor';
import { reportResult } from '../lib/child';
import { benchInput } from '../lib/input';
import type { ParquetReport, ParquetSpec } from '../lib/parquet-protocol';
import { peakRssKiB } from '../lib/peak-rss';
import { servedOrtSessionOptions } from '../lib/serving-session';

/** Ranged reads of a local file: the only store method the reader uses. */
function fileStore(path: string): BatchObjectStore {
  const refuse = () => {
    throw new Error('read-only bench store');
  };
  return {
    read: (_ref, options = {}) =>
      createReadStream(path, { start: options.start ?? 0, end: (options.end ?? statSync(path).size) - 1 }),
    head: refuse,
    verify: refuse,
    getText: refuse,
    putText: refuse,
    write: refuse,
    concat: refuse,
    remove: refuse,
  };
}

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (specFile === undefined) throw new Error('usage: parquet-pipeline.js <spec.json>');
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as ParquetSpec;
  const bytes = readFileSync(spec.ortFile);
  const session = await ort.InferenceSession.create(
    new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    servedOrtSessionOptions(),
  );
  const signature = {
    inputs: [{ name: spec.inputName, datatype: 'FP32' as Datatype, shape: [-1, spec.features] }],
    outputs: session.outputNames.map((name) => ({ name, datatype: 'FP32' as Datatype, shape: [-1, -1] })),
  };
  const warm = new ort.Tensor('float32', benchInput(spec.batchSize * spec.features), [
    spec.batchSize,
    spec.features,
  ]);
  await session.run({ [spec.inputName]: warm });

  const started = performance.now();
  const reader = await ParquetObjectReader.open(
    fileStore(spec.file),
    { bucket: 'local', key: spec.file },
    {
      size: statSync(spec.file).size,
    },
  );
  const plan = planParquetColumns(signature, true, reader.info.columns, {
    idColumn: 'id',
    inputs: { [spec.inputName]: { prefix: 'f' } },
  });
  const schema = outputSchemaFor(signature.outputs, 'id', 'INT64');
  let scored = 0;
  let failed = 0;
  let outputBytes = 0;
  for (const group of reader.info.rowGroups) {
    const chunk = await reader.readRowGroup(group.index, plan.columns);
    const mapped = mapRows(plan, chunk, group.firstRow, group.firstRow + group.rows, {
      maxBatchRecords: spec.batchSize,
      maxBatchBytes: 4 * 1024 * 1024,
      maxTensorElements: 1 << 24,
    });
    failed += mapped.failures.length;
    const batches: ScoredBatch[] = [];
    for (const batch of mapped.batches) {
      const input = batch.inputs[0];
      if (input === undefined) throw new Error('no input');
      const results = await session.run({
        [spec.inputName]: new ort.Tensor('float32', input.data as Float32Array, [...input.shape]),
      });
      batches.push({
        ids: batch.ids,
        outputs: Object.entries(results).map(([name, t]) => ({
          name,
          datatype: 'FP32' as Datatype,
          shape: [...t.dims],
          data: t.data as TensorData,
        })),
      });
      scored += batch.rows.length;
    }
    outputBytes += encodeRowGroups(schema, batches).bytes.byteLength;
  }
  const pipelineMs = performance.now() - started;
  const peak = peakRssKiB();
  if (scored !== spec.records || failed !== 0)
    throw new Error(`scored ${scored}, failed ${failed} of ${spec.records}`);

  const values = benchInput(spec.records * spec.features);
  const tensors: ort.Tensor[] = [];
  for (let start = 0; start < spec.records; start += spec.batchSize) {
    const n = Math.min(spec.batchSize, spec.records - start);
    tensors.push(
      new ort.Tensor('float32', values.slice(start * spec.features, (start + n) * spec.features), [
        n,
        spec.features,
      ]),
    );
  }
  for (const tensor of tensors) await session.run({ [spec.inputName]: tensor });
  const rawStarted = performance.now();
  for (const tensor of tensors) await session.run({ [spec.inputName]: tensor });
  const rawMs = performance.now() - rawStarted;
  await session.release();
  bytes.fill(0, 0, 0);
  const report: ParquetReport = {
    pipelineMs,
    rawMs,
    peakRssKiB: peak,
    rowGroups: reader.info.rowGroups.length,
    bytesRead: reader.bytesRead,
    outputBytes,
  };
  reportResult(report);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
