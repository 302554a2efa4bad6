/**
 * The batch door against a real S3-compatible server on loopback and the real onnxruntime-node: inputs are
 * uploaded, s3rver's own event records (keys URL-encoded as AWS encodes them) drive the handler, and the
 * continuation is an in-process queue that calls the handler again, as Lambda would.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Context } from 'aws-lambda';
import { onnx } from 'onnx-proto';
import { createBatchHandler } from '../../functions/batch/handler';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { S3ObjectIo } from '../../shared/adapters/s3-object-io';
import { zstdCompressor } from '../../shared/adapters/zstd-compressor';
import type { BatchResult } from '../../shared/core/batch/batch-job';
import type { Continuation, ContinuationPayload } from '../../shared/core/batch/ports';
import { parseConfig } from '../../shared/core/config';
import {
  type BatchRuntime,
  type BatchRuntimeParts,
  createBatchRuntime,
} from '../../shared/runtime/batch-runtime';
import { buildLinearModel, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { mulberry32 } from '../../tools/onnx/prng';
import { lambdaContext } from '../support/api-gateway';
import { publishModel } from '../support/model-repository';
import type { S3Server } from '../support/s3-server';

export const MODEL_PREFIX = 'repo';
export const INPUT_PREFIX = 'batch/in';
export const OUTPUT_PREFIX = 'batch/out';

/** y = x·Wᵀ + b from the linear model's fixed weights, independently of onnxruntime. */
export function linear(x: readonly number[]): number[] {
  return LINEAR_WEIGHTS.weight.map((row, o) =>
    row.reduce((sum, w, i) => sum + w * (x[i] ?? 0), LINEAR_WEIGHTS.bias[o] ?? 0),
  );
}

/** Publishes `linear` (max batch 64) to the server's model repository. */
export async function publishLinear(s3: S3Server, maxBatchSize = 64): Promise<void> {
  await publishModel(
    s3.putObject,
    s3.bucket,
    MODEL_PREFIX,
    'linear',
    { '1': { onnx: buildLinearModel() } },
    {
      maxBatchSize,
    },
  );
}

/** An S3 event record as s3rver emits it. */
interface S3EventRecord {
  eventName: string;
  s3: { bucket: { name: string }; object: { key: string; eTag?: string; size?: number } };
}
export interface S3Event {
  Records: S3EventRecord[];
}

/** How AWS writes a key into an event record: URL-encoded, `/` kept, a space as `+`. */
export function awsEncodeKey(key: string): string {
  return encodeURIComponent(key).replace(/%2F/g, '/').replace(/%20/g, '+');
}

/**
 * Collects s3rver's event records. s3rver writes keys as they are; AWS URL-encodes them, so the records
 * handed to the door are re-encoded the AWS way.
 */
export class EventLog {
  readonly events: S3Event[] = [];
  constructor(s3: S3Server) {
    s3.events.on('event', (event: S3Event) => {
      this.events.push(structuredClone(event));
    });
  }

  /** The last event s3rver emitted for `key`, with its key encoded as AWS does. */
  lastFor(key: string): S3Event {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const event = this.events[i] as S3Event;
      const record = event.Records[0];
      if (record?.s3.object.key === key) {
        const encoded = structuredClone(event);
        for (const r of encoded.Records) r.s3.object.key = awsEncodeKey(r.s3.object.key);
        return encoded;
      }
    }
    throw new Error(`s3rver emitted no event for ${key}`);
  }
}

/** A Lambda context whose remaining time comes from `remaining` (called once per check). */
export function budgetContext(remaining: () => number): Context {
  return { ...lambdaContext(900_000), functionName: 'batch', getRemainingTimeInMillis: remaining };
}

export interface BatchHarness {
  readonly batch: BatchRuntime;
  readonly handler: ReturnType<typeof createBatchHandler>;
  /** Continuations scheduled and not yet run. */
  readonly queue: ContinuationPayload[];
  /** Every continuation ever scheduled. */
  readonly scheduled: ContinuationPayload[];
  invoke(event: unknown, context?: Context): Promise<BatchResult>;
  /** Runs queued continuations (each in a fresh context from `context`) until none is left. */
  drain(context?: () => Context): Promise<BatchResult[]>;
}

/**
 * Replaceable parts of a {@link batchHarness}: the S3 client, and runtime parts (e.g. the client of a local
 * Step Functions endpoint).
 */
export interface BatchHarnessOptions extends Pick<BatchRuntimeParts, 'stepFunctionsClient'> {
  /**
   * The client for the model repository and the batch objects, e.g. a fault proxy's
   * (test/support/fault-proxy.ts); default the server's own.
   */
  readonly client?: S3Client;
}

/** A batch runtime on the server with `env` on top of the defaults of these tests. */
export async function batchHarness(
  s3: S3Server,
  env: Record<string, string> = {},
  options: BatchHarnessOptions = {},
): Promise<BatchHarness> {
  const { client = s3.client, ...parts } = options;
  const work = await mkdtemp(join(tmpdir(), 'batch-'));
  const config = parseConfig(
    {
      ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${MODEL_PREFIX}`,
      ONNX_SERVE_DISK_CACHE_DIR: join(work, 'disk'),
      ONNX_SERVE_BATCH_INPUT_PREFIX: INPUT_PREFIX,
      ONNX_SERVE_BATCH_OUTPUT_PREFIX: OUTPUT_PREFIX,
      ONNX_SERVE_LOG_LEVEL: 'SILENT',
      // A missing model is read again without the product's pauses (2 s, doubling).
      ONNX_SERVE_BATCH_MODEL_RECHECK_MS: '1',
      ...env,
    },
    {
      memoryBytes: 2 ** 30,
      availableParallelism: 1,
      tmpDir: work,
      zstdCompression: zstdCompressor() !== undefined,
    },
  );
  const queue: ContinuationPayload[] = [];
  const scheduled: ContinuationPayload[] = [];
  const continuation: Continuation = {
    schedule: async (payload) => {
      // Through JSON, as Lambda delivers it.
      const delivered = JSON.parse(JSON.stringify(payload)) as ContinuationPayload;
      queue.push(delivered);
      scheduled.push(delivered);
    },
  };
  const batch = createBatchRuntime(config, {
    store: new S3ModelStore({ client, bucket: s3.bucket, prefix: MODEL_PREFIX }),
    // Resumes of a broken input read wait 1 ms, not the product's 250 ms doubling.
    objects: new S3ObjectIo({ client, readRetryDelayMs: 1 }),
    continuation,
    ...parts,
  });
  const handler = createBatchHandler(batch);
  const invoke = async (event: unknown, context: Context = budgetContext(() => 900_000)) =>
    (await handler(JSON.parse(JSON.stringify(event)), context)) as BatchResult;
  return {
    batch,
    handler,
    queue,
    scheduled,
    invoke,
    async drain(context = () => budgetContext(() => 900_000)) {
      const results: BatchResult[] = [];
      for (let payload = queue.shift(); payload !== undefined; payload = queue.shift()) {
        results.push(await invoke(payload, context()));
        if (results.length > 10_000) throw new Error('the continuation chain does not end');
      }
      return results;
    },
  };
}

/** Uploads `body` under `key` (optionally with a Content-Encoding); s3rver emits the event. */
export async function upload(
  s3: S3Server,
  key: string,
  body: string | Uint8Array,
  contentEncoding?: string,
): Promise<void> {
  await s3.client.send(
    new PutObjectCommand({
      Bucket: s3.bucket,
      Key: key,
      Body: body,
      ...(contentEncoding === undefined ? {} : { ContentEncoding: contentEncoding }),
    }),
  );
}

/** An object's bytes, or `undefined` when it does not exist. */
export async function getBytes(s3: S3Server, key: string): Promise<Uint8Array | undefined> {
  try {
    const output = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    return await output.Body?.transformToByteArray();
  } catch (error) {
    if ((error as { name?: string }).name === 'NoSuchKey') return undefined;
    throw error;
  }
}

export async function getText(s3: S3Server, key: string): Promise<string | undefined> {
  const bytes = await getBytes(s3, key);
  return bytes === undefined ? undefined : Buffer.from(bytes).toString('utf8');
}

/** Keys under `prefix` (one page: s3rver's pagination beyond page 1 is broken). */
export async function listKeys(s3: S3Server, prefix: string): Promise<string[]> {
  const page = await s3.client.send(
    new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, MaxKeys: 1000 }),
  );
  return (page.Contents ?? []).map((c) => c.Key ?? '').sort();
}

/** Parsed JSON lines of a text. */
export function jsonLines(text: string | undefined): Record<string, unknown>[] {
  if (text === undefined || text === '') return [];
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Malformed lines of the data sets, and what the errors file must say of each. */
export const MALFORMED: readonly [string, RegExp][] = [
  ['{"x": [1, 2, 3', /^line \d+ is not valid JSON/],
  ['{"x": [1, 2, 3]}', /^input 'x': dim 1 is 3 but the model takes 10/],
  [
    '{"x": [1, 2, 3, 4, 5, 6, 7, "eight", 9, 10]}',
    /^input 'x': element 7 \("eight"\) is not a finite number/,
  ],
  ['{"z": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}', /^the model has no input 'z'/],
  ['{"id": true, "x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}', /^the record's 'id' must be a string or a number/],
  ['"just a string"', /^a record must be a nested array or an object/],
  ['{"x": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1]]}', /not rectangular/],
];

/** A JSON Lines input of `count` records for `linear`, in every record form, with every 100th line malformed. */
export function dataset(count: number, seed = 1) {
  const random = mulberry32(seed);
  const good = new Map<number, { id: string | number; x: number[] }>();
  const bad = new Set<number>();
  const lines: string[] = [];
  for (let n = 1; n <= count; n++) {
    if (n % 100 === 37) {
      bad.add(n);
      lines.push((MALFORMED[n % MALFORMED.length] as [string, RegExp])[0]);
      continue;
    }
    const x = Array.from({ length: 10 }, () => Math.round((random() * 4 - 2) * 1000) / 1000);
    const xs = JSON.stringify(x);
    switch (n % 5) {
      case 0:
        good.set(n, { id: `rec-${n}`, x });
        lines.push(`{"id": "rec-${n}", "x": ${xs}}`);
        break;
      case 1:
        good.set(n, { id: n, x });
        lines.push(xs);
        break;
      case 2:
        good.set(n, { id: n * 10, x });
        lines.push(`{"inputs": {"x": [${xs}]}, "id": ${n * 10}}`);
        break;
      case 3:
        good.set(n, { id: `oip-${n}`, x });
        lines.push(
          `{"id": "oip-${n}", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 10], "data": ${xs}}]}`,
        );
        break;
      default:
        good.set(n, { id: n, x });
        lines.push(`{"inputs": ${xs}}`);
    }
  }
  return { text: `${lines.join('\n')}\n`, good, bad };
}

/**
 * A model that fails in the engine for some records only: `idx` INT64 [batch, 1] picks rows of a 4 x 2
 * table (`y` FP32 [batch, 1, 2]); an index outside 0..3 makes onnxruntime's Gather fail the whole run.
 */
export function buildLookupModel(): Uint8Array {
  const T = onnx.TensorProto.DataType;
  const table = Float32Array.from([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
  const info = (name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto => ({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
  const bytes = onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'batch tests',
    graph: {
      name: 'lookup',
      node: [{ opType: 'Gather', input: ['table', 'idx'], output: ['y'], name: 'gather', attribute: [] }],
      initializer: [
        { name: 'table', dims: [4, 2], dataType: T.FLOAT, rawData: new Uint8Array(table.buffer) },
      ],
      input: [info('idx', T.INT64, ['batch', 1])],
      output: [info('y', T.FLOAT, ['batch', 1, 2])],
    },
  }).finish();
  return bytes.slice();
}
