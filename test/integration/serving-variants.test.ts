/**
 * A deployment chooses the precision variant it serves (`ONNX_SERVE_VARIANT`), end to end through the
 * Lambda door: the real onnxruntime-node, a real S3-compatible server (s3rver on loopback) and real int8
 * and fp16 variants made by the model tool from an MLP. Only the file that serves is downloaded, counted
 * with an SDK middleware: a variant for a provider this host lacks (CUDA here) is never fetched.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseConfig } from '../../shared/core/config';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime';
import { buildMlpModel } from '../../tools/onnx/model-builder';
import { convertToOrtFormat } from '../../tools/onnx/ort-format';
import { buildPrecisionVariant } from '../../tools/onnx/precision-variant';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { ENGINE_OPTIONS } from '../support/engine-fixtures';
import { RecordingTelemetry } from '../support/fakes';
import { expectClose } from '../support/golden';
import { sha256 } from '../support/model-repository';
import { countRequests, type RequestLog, type S3Server, startS3Server } from '../support/s3-server';

const PREFIX = 'variants';
const MLP = buildMlpModel({ inputSize: 16, hidden: [64, 64], outputSize: 4, seed: 11 });
const INT8 = buildPrecisionVariant(MLP, 'int8').bytes;
const FP16 = buildPrecisionVariant(MLP, 'fp16').bytes;
const X = Array.from({ length: 2 * 16 }, (_, i) => Math.sin(i + 1));
const BODY = { inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 16], data: X }] };

let s3: S3Server;
let work: string;
let int8Ort: Uint8Array;
/** What the float32 model and the int8 variant answer to {@link BODY} on the CPU. */
let float32Answer: Float32Array;
let int8Answer: Float32Array;

beforeAll(async () => {
  s3 = await startS3Server();
  work = await mkdtemp(join(tmpdir(), 'serving-variants-'));
  int8Ort = await convertToOrtFormat(INT8, join(work, 'int8.ort'));
  float32Answer = await cpuAnswer(MLP);
  int8Answer = await cpuAnswer(INT8);
  // The variant must answer measurably otherwise, or a test could not tell which file served.
  const gap = Math.max(...float32Answer.map((v, i) => Math.abs(v - (int8Answer[i] ?? 0))));
  expect(gap).toBeGreaterThan(1e-5);
});

afterAll(async () => {
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

async function cpuAnswer(bytes: Uint8Array): Promise<Float32Array> {
  const model = await new OrtEngine({ defaultIntraOpThreads: 1 }).load(
    { bytes, format: 'onnx' },
    ENGINE_OPTIONS,
  );
  try {
    const x = { datatype: 'FP32' as const, shape: [2, 16], data: Float32Array.from(X) };
    return (await model.run({ x })).y?.data as Float32Array;
  } finally {
    await model.release();
  }
}

interface Files {
  readonly int8?: boolean;
  readonly int8Bytes?: Uint8Array;
  readonly fp16?: boolean;
  readonly int8RunsOn?: readonly string[];
}

/** Publishes model `name`, version 1, with the variants asked for, and config.json recording them. */
async function publish(name: string, files: Files, session: Record<string, unknown>): Promise<void> {
  const base = `${PREFIX}/${name}/1`;
  await s3.putObject(s3.bucket, `${base}/model.onnx`, MLP);
  const variants: Record<string, unknown> = {};
  if (files.int8 === true) {
    const bytes = files.int8Bytes ?? INT8;
    await s3.putObject(s3.bucket, `${base}/model.int8.onnx`, bytes);
    await s3.putObject(s3.bucket, `${base}/model.int8.ort`, int8Ort);
    variants.int8 = {
      sha256: sha256(bytes),
      size: bytes.byteLength,
      precision: 'int8',
      runsOn: files.int8RunsOn ?? ['cpu'],
      ort: { sha256: sha256(int8Ort), size: int8Ort.byteLength },
    };
  }
  if (files.fp16 === true) {
    await s3.putObject(s3.bucket, `${base}/model.fp16.onnx`, FP16);
    variants.fp16 = { sha256: sha256(FP16), size: FP16.byteLength, precision: 'fp16', providers: ['cuda'] };
  }
  const version = {
    sha256: sha256(MLP),
    size: MLP.byteLength,
    ...(Object.keys(variants).length === 0 ? {} : { variants }),
  };
  const config = { name, maxBatchSize: 8, session, versions: { '1': version } };
  await s3.putObject(s3.bucket, `${PREFIX}/${name}/config.json`, JSON.stringify(config));
}

interface Harness {
  readonly runtime: Runtime;
  readonly telemetry: RecordingTelemetry;
  readonly requests: RequestLog;
  invoke(path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }>;
}

/** A fresh Lambda instance of the infer door with `env` (e.g. `ONNX_SERVE_VARIANT`). */
function harness(env: Record<string, string> = {}): Harness {
  const config = parseConfig(
    { ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${PREFIX}`, ONNX_SERVE_DISK_CACHE_MB: '0', ...env },
    { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: work },
  );
  const requests = countRequests(s3.client);
  const telemetry = new RecordingTelemetry();
  const store = new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: PREFIX });
  const runtime = createRuntime(config, { store, telemetry });
  const handler = createInferHandler(runtime);
  return {
    runtime,
    telemetry,
    requests,
    invoke: async (path, body) => {
      const event = apiEvent(
        'http-v2',
        body === undefined ? 'GET' : 'POST',
        path,
        body === undefined ? {} : { body: JSON.stringify(body) },
      );
      const result = (await handler(event, lambdaContext())) as APIGatewayProxyResult;
      return { status: result.statusCode, json: JSON.parse(result.body) as Record<string, unknown> };
    },
  };
}

/** The objects the instance fetched, by key below the model's folder. */
function fetched(requests: RequestLog, model: string): string[] {
  const keys = requests.entries
    .filter((e) => e.command === 'GetObject' && e.key?.startsWith(`${PREFIX}/${model}/`))
    .map((e) => e.key?.slice(`${PREFIX}/${model}/`.length) ?? '');
  return [...new Set(keys)].sort();
}

function answerOf(reply: { json: Record<string, unknown> }): number[] {
  const outputs = reply.json.outputs as { data: number[] }[];
  return outputs[0]?.data ?? [];
}

describe('ONNX_SERVE_VARIANT', () => {
  it('serves the chosen int8 variant from its ORT copy, downloading nothing else, and says so in the metadata', async () => {
    await publish('mlp-int8', { int8: true, fp16: true }, { executionProviders: ['cuda', 'cpu'] });
    const h = harness({ ONNX_SERVE_VARIANT: 'int8' });
    const reply = await h.invoke('/v2/models/mlp-int8/infer', BODY);
    expect(reply.status).toBe(200);
    expectClose(answerOf(reply), int8Answer, { atol: 1e-5 });
    expect(fetched(h.requests, 'mlp-int8')).toEqual(['1/model.int8.ort', 'config.json']);

    const metadata = await h.invoke('/v2/models/mlp-int8');
    expect(metadata.json).toMatchObject({ name: 'mlp-int8', variant: 'int8', provider: 'cpu' });
    expect(h.telemetry.ofType('model-loaded')).toMatchObject([
      { variant: 'int8', format: 'ort', provider: 'cpu', bytes: int8Ort.byteLength },
    ]);
    expect(h.telemetry.ofType('variant-fallback')).toEqual([]);
  });

  it('serves float32 with a variant-fallback warning when the version has no such variant', async () => {
    await publish('mlp-plain', {}, { executionProviders: ['cpu'] });
    const h = harness({ ONNX_SERVE_VARIANT: 'int8' });
    const reply = await h.invoke('/v2/models/mlp-plain/infer', BODY);
    expect(reply.status).toBe(200);
    expectClose(answerOf(reply), float32Answer, { atol: 1e-5 });
    expect(h.telemetry.ofType('variant-fallback')).toMatchObject([
      { model: 'mlp-plain', version: '1', variant: 'int8', reason: "version 1 has no 'int8' variant" },
    ]);
    expect((await h.invoke('/v2/models/mlp-plain')).json).toMatchObject({ variant: 'default' });
  });

  it('serves float32 when the variant cannot load, naming why; the variant file was tried once', async () => {
    // Right hash, wrong content for onnxruntime: the file is no model at all.
    const broken = new TextEncoder().encode('not an onnx model');
    await publish(
      'mlp-broken',
      { int8: true, int8Bytes: broken },
      { executionProviders: ['cpu'], preferOrtFormat: false },
    );
    const h = harness({ ONNX_SERVE_VARIANT: 'int8' });
    const reply = await h.invoke('/v2/models/mlp-broken/infer', BODY);
    expect(reply.status).toBe(200);
    expectClose(answerOf(reply), float32Answer, { atol: 1e-5 });
    const [fallback] = h.telemetry.ofType('variant-fallback');
    expect(fallback).toMatchObject({ variant: 'int8', reason: 'it could not be loaded' });
    expect(fallback?.error?.message).toMatch(/onnxruntime could not create the session/);
    expect(fetched(h.requests, 'mlp-broken')).toEqual(['1/model.int8.onnx', '1/model.onnx', 'config.json']);
  });

  it('never downloads a chosen variant whose providers are missing here or not in the model list', async () => {
    await publish('mlp-gpu8', { int8: true, int8RunsOn: ['cuda'] }, { executionProviders: ['cuda', 'cpu'] });
    const h = harness({ ONNX_SERVE_VARIANT: 'int8' });
    expect((await h.invoke('/v2/models/mlp-gpu8/infer', BODY)).status).toBe(200);
    expect(fetched(h.requests, 'mlp-gpu8')).toEqual(['1/model.onnx', 'config.json']);
    expect(h.telemetry.ofType('variant-fallback')).toMatchObject([
      { variant: 'int8', reason: 'none of its providers (cuda) is available on this host' },
    ]);

    await publish('mlp-listed', { int8: true, int8RunsOn: ['cpu'] }, { executionProviders: ['cuda'] });
    const other = harness({ ONNX_SERVE_VARIANT: 'int8' });
    expect((await other.invoke('/v2/models/mlp-listed/infer', BODY)).status).toBe(503);
    expect(other.telemetry.ofType('variant-fallback')).toMatchObject([
      { reason: "it runs on cpu, none of which is in the model's executionProviders (cuda)" },
    ]);
    expect(fetched(other.requests, 'mlp-listed')).toEqual(['config.json']);
  });
});

describe('providers this host lacks', () => {
  it('are skipped before any download: a CPU host never fetches the fp16 variant made for CUDA', async () => {
    await publish('mlp-fp16', { fp16: true }, { executionProviders: ['cuda', 'cpu'] });
    const h = harness();
    const reply = await h.invoke('/v2/models/mlp-fp16/infer', BODY);
    expect(reply.status).toBe(200);
    expectClose(answerOf(reply), float32Answer, { atol: 1e-5 });
    expect(fetched(h.requests, 'mlp-fp16')).toEqual(['1/model.onnx', 'config.json']);
    // Still a warning naming the provider, as when it was tried.
    const [skipped] = h.telemetry.ofType('provider-fallback');
    expect(skipped).toMatchObject({ model: 'mlp-fp16', provider: 'cuda', variant: 'fp16' });
    expect(skipped?.error.message).toMatch(/'cuda' is not available on this host/);
    expect((await h.invoke('/v2/models/mlp-fp16')).json).toMatchObject({
      variant: 'default',
      provider: 'cpu',
    });
  });
});

describe('configuration', () => {
  it('refuses a variant name that cannot be one, naming the key', () => {
    const facts = { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: '/tmp' };
    expect(() => parseConfig({ ONNX_SERVE_VARIANT: '../int8' }, facts)).toThrow(/ONNX_SERVE_VARIANT/);
    expect(parseConfig({ ONNX_SERVE_VARIANT: 'INT8' }, facts).variant).toBe('int8');
    expect(parseConfig({}, facts).variant).toBeUndefined();
  });
});
