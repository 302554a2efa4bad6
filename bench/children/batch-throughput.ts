/**
 * One batch-throughput sample in a fresh process (spawned by bench/parts/batch-throughput.ts):
 *
 *   node dist/bench/children/batch-throughput.js <spec.json>
 *
 * Requires the bundled batch handler as Lambda would, scores a small input to load the model, then times
 * the handler on the measured input's S3 event (read from and written to s3rver), reads the peak resident
 * memory, and last times a loop of `session.run` over the same records as tensors of the
 * runner's micro-batch size (after one untimed pass). Prints one {@link BatchReport} line.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Context } from 'aws-lambda';
import * as ort from 'onnxruntime-node';
import { lambdaContext } from '../../test/support/api-gateway';
import type { BatchReport, BatchSpec } from '../lib/batch-protocol';
import { reportResult } from '../lib/child';
import { benchInput } from '../lib/input';
import { peakRssKiB } from '../lib/peak-rss';
import { servedOrtSessionOptions } from '../lib/serving-session';

type Handler = (event: unknown, context: Context) => Promise<unknown>;
type Outcome = BatchReport['outcome'];

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (specFile === undefined) throw new Error('usage: batch-throughput.js <spec.json>');
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as BatchSpec;
  const { handler } = require(spec.handler) as { handler: Handler };
  const invoke = async (key: string, etag: string): Promise<Outcome> => {
    const result = (await handler(s3Event(spec.bucket, key, etag), lambdaContext(900_000))) as {
      outcomes?: Outcome[];
    };
    const outcome = result.outcomes?.[0];
    if (outcome?.status !== 'succeeded')
      throw new Error(`the batch job of ${key} ended ${JSON.stringify(result)}`);
    return outcome;
  };
  await invoke(spec.warmupKey, spec.warmupEtag);
  // BENCH_RSS_TRACE: memory every 100 ms during the job (resident, V8 heap, external, array buffers), MiB.
  const trace: string[] = [];
  const t0 = performance.now();
  const timer = process.env.BENCH_RSS_TRACE
    ? setInterval(() => {
        const m = process.memoryUsage();
        trace.push(
          `${(performance.now() - t0).toFixed(0)} rss ${(m.rss / 2 ** 20).toFixed(0)} heap ${(m.heapUsed / 2 ** 20).toFixed(0)}/${(m.heapTotal / 2 ** 20).toFixed(0)} ext ${(m.external / 2 ** 20).toFixed(0)} ab ${(m.arrayBuffers / 2 ** 20).toFixed(0)}`,
        );
      }, 100)
    : undefined;
  const started = performance.now();
  const outcome = await invoke(spec.inputKey, spec.inputEtag);
  const jobMs = performance.now() - started;
  const peak = peakRssKiB();
  if (timer !== undefined) {
    clearInterval(timer);
    const file = `rss-${spec.inputKey.replace(/\//g, '_')}.txt`;
    writeFileSync(join(process.env.BENCH_RSS_TRACE as string, file), `${trace.join('\n')}\n`);
  }
  const raw = await rawLoop(spec);
  const report: BatchReport = { jobMs, outcome, peakRssKiB: peak, rawMs: raw.ms, rawBatches: raw.batches };
  reportResult(report);
}

/** An S3 `ObjectCreated:Put` event for one object, shaped as AWS sends it (key URL-encoded). */
function s3Event(bucket: string, key: string, etag: string) {
  return {
    Records: [
      {
        eventVersion: '2.1',
        eventSource: 'aws:s3',
        awsRegion: 'us-east-1',
        eventTime: new Date().toISOString(),
        eventName: 'ObjectCreated:Put',
        s3: {
          s3SchemaVersion: '1.0',
          bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
          object: { key: encodeURIComponent(key).replace(/%2F/g, '/'), eTag: etag },
        },
      },
    ],
  };
}

/**
 * `session.run` over the records as `[batchSize, features]` tensors, built untimed from the values the
 * input was written from (`benchInput`: record i holds values [i * features, (i + 1) * features)).
 */
async function rawLoop(spec: BatchSpec): Promise<{ ms: number; batches: number }> {
  const values = benchInput(spec.records * spec.features);
  const tensors: ort.Tensor[] = [];
  for (let start = 0; start < spec.records; start += spec.batchSize) {
    const n = Math.min(spec.batchSize, spec.records - start);
    const data = values.slice(start * spec.features, (start + n) * spec.features);
    tensors.push(new ort.Tensor('float32', data, [n, spec.features]));
  }
  // The session the engine creates for an ORT file used in place (ort-engine.ts, model defaults).
  const bytes = readFileSync(spec.ortFile);
  const session = await ort.InferenceSession.create(
    new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    servedOrtSessionOptions(),
  );
  const feeds = (tensor: ort.Tensor) => ({ [spec.inputName]: tensor });
  // One untimed pass: the first runs of a batch shape pay for allocations the later ones reuse.
  for (const tensor of tensors) await session.run(feeds(tensor));
  const started = performance.now();
  for (const tensor of tensors) await session.run(feeds(tensor));
  const ms = performance.now() - started;
  await session.release();
  // onnxruntime read the weights from these bytes until the release: they had to stay referenced.
  bytes.fill(0, 0, 0);
  return { ms, batches: tensors.length };
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
