/**
 * The infer door end to end: real API Gateway event shapes, the real onnxruntime-node, models in a real
 * S3-compatible server on loopback.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseConfig, type ServingConfig } from '../../shared/core/config';
import type { Clock, ModelStore } from '../../shared/core/ports';
import { decodeInferResponse, encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime';
import { buildAddModel, buildLinearModel, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { convertToOrtFormat } from '../../tools/onnx/ort-format';
import { apiEvent, type EventKind, lambdaContext } from '../support/api-gateway';
import { RecordingTelemetry } from '../support/fakes';
import { expectClose } from '../support/golden';
import { publishModel } from '../support/model-repository';
import { countRequests, type RequestLog, type S3Server, startS3Server } from '../support/s3-server';

const PREFIX = 'repo';
const X = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
/** y = x·Wᵀ + b, computed here from the model's fixed weights, independently of onnxruntime. */
const linear = (x: number[]) =>
  LINEAR_WEIGHTS.weight.map((row, o) =>
    row.reduce((sum, w, i) => sum + w * (x[i] ?? 0), LINEAR_WEIGHTS.bias[o] ?? 0),
  );

let s3: S3Server;
let log: RequestLog;
let work: string;
let onnx: Uint8Array;

beforeAll(async () => {
  s3 = await startS3Server();
  log = countRequests(s3.client);
  work = await mkdtemp(join(tmpdir(), 'infer-handler-'));
  onnx = buildLinearModel();
  const ort = await convertToOrtFormat(onnx, join(work, 'linear.ort'));
  await publishModel(
    s3.putObject,
    s3.bucket,
    PREFIX,
    'linear',
    { '1': { onnx }, '2': { onnx, ort } },
    { maxBatchSize: 4 },
  );
  await publishModel(
    s3.putObject,
    s3.bucket,
    PREFIX,
    'add',
    { '1': { onnx: buildAddModel() } },
    { maxBatchSize: 8 },
  );
});

afterAll(async () => {
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

interface Harness {
  runtime: Runtime;
  telemetry: RecordingTelemetry;
  invoke(
    kind: EventKind,
    method: string,
    path: string,
    body?: unknown,
    options?: { remainingMs?: number; headers?: Record<string, string> },
  ): Promise<APIGatewayProxyResult>;
}

async function harness(
  env: Record<string, string> = {},
  patch: Partial<ServingConfig> = {},
  store?: ModelStore,
  clock?: Clock,
): Promise<Harness> {
  const diskDir = await mkdtemp(join(work, 'disk-'));
  const config = {
    ...parseConfig(
      {
        ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${PREFIX}`,
        ONNX_SERVE_DISK_CACHE_DIR: diskDir,
        ...env,
      },
      { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: work },
    ),
    ...patch,
  };
  const telemetry = new RecordingTelemetry();
  const runtime = createRuntime(config, {
    store: store ?? new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: PREFIX }),
    telemetry,
    ...(clock === undefined ? {} : { clock }),
  });
  const handler = createInferHandler(runtime);
  return {
    runtime,
    telemetry,
    invoke: async (kind, method, path, body, options = {}) => {
      const payload =
        body === undefined || body instanceof Uint8Array || typeof body === 'string'
          ? body
          : JSON.stringify(body);
      const event = apiEvent(kind, method, path, {
        body: payload as string | Uint8Array | undefined,
        headers: options.headers ?? {},
      });
      return (await handler(event, lambdaContext(options.remainingMs))) as APIGatewayProxyResult;
    },
  };
}

const inferBody = (x: number[] = X, rows = 1) => ({
  id: 'req-42',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [rows, 10], data: Array.from({ length: rows }, () => x) }],
});
const bodyOf = (result: APIGatewayProxyResult) => JSON.parse(result.body) as Record<string, unknown>;

describe('infer handler', () => {
  describe.each<EventKind>(['rest-v1', 'http-v2', 'function-url'])(
    'every OIP route through a %s event',
    (kind) => {
      let h: Harness;
      beforeAll(async () => {
        h = await harness();
      });

      it('answers liveness, readiness and server metadata', async () => {
        expect(bodyOf(await h.invoke(kind, 'GET', '/v2/health/live'))).toEqual({ live: true });
        expect(bodyOf(await h.invoke(kind, 'GET', '/v2/health/ready'))).toEqual({ ready: true });
        expect(bodyOf(await h.invoke(kind, 'GET', '/v2'))).toMatchObject({
          name: 'onnx-serverless',
          extensions: expect.arrayContaining(['binary_tensor_data']),
        });
      });

      it('answers model metadata with -1 for the dynamic batch dim, for the model and a version', async () => {
        const expected = {
          name: 'linear',
          versions: ['1', '2'],
          platform: 'onnx_onnxv1',
          inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 10] }],
          outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
          variant: 'default',
          provider: 'cpu',
        };
        expect(bodyOf(await h.invoke(kind, 'GET', '/v2/models/linear'))).toEqual(expected);
        expect(bodyOf(await h.invoke(kind, 'GET', '/v2/models/linear/versions/1'))).toEqual(expected);
        const ready = await h.invoke(kind, 'GET', '/v2/models/linear/versions/1/ready');
        expect([ready.statusCode, bodyOf(ready)]).toEqual([200, { name: 'linear', ready: true }]);
      });

      it('infers with JSON, echoing the id, on the default (highest) version and a pinned one', async () => {
        for (const [path, version] of [
          ['/v2/models/linear/infer', '2'],
          ['/v2/models/linear/versions/1/infer', '1'],
        ] as const) {
          const result = await h.invoke(kind, 'POST', path, inferBody());
          expect(result.statusCode).toBe(200);
          const body = bodyOf(result) as {
            id: string;
            model_version: string;
            outputs: { name: string; shape: number[]; data: number[] }[];
          };
          expect(body).toMatchObject({ id: 'req-42', model_name: 'linear', model_version: version });
          expect(body.outputs[0]?.shape).toEqual([1, 2]);
          expectClose(body.outputs[0]?.data ?? [], linear(X), { atol: 1e-5 });
        }
      });

      it('gives identical results for binary and JSON payloads', async () => {
        const rows = [X, X.map((v) => -v / 3), X.map((v) => v * 1e-3)];
        const data = Float32Array.from(rows.flat());
        const request = {
          inputs: [{ name: 'x', datatype: 'FP32' as const, shape: [3, 10], data }],
          outputs: [{ name: 'y', binaryData: true }],
          binaryOutputDefault: true,
        };
        const encoded = encodeInferRequest(request, { binaryInputs: true });
        const binary = await h.invoke(kind, 'POST', '/v2/models/linear/infer', encoded.body, {
          headers: encoded.headers,
        });
        expect(binary.statusCode).toBe(200);
        expect(binary.isBase64Encoded).toBe(true);
        const headerLength = binary.headers?.['inference-header-content-length'];
        const decoded = decodeInferResponse(Buffer.from(binary.body, 'base64'), String(headerLength));
        const json = bodyOf(
          await h.invoke(kind, 'POST', '/v2/models/linear/infer', {
            inputs: [{ name: 'x', datatype: 'FP32', shape: [3, 10], data: rows }],
          }),
        ) as {
          outputs: { data: number[] }[];
        };
        expect(Array.from(decoded.outputs[0]?.data as Float32Array)).toEqual(json.outputs[0]?.data);
        expectClose(Array.from(decoded.outputs[0]?.data as Float32Array), rows.flatMap(linear), {
          atol: 1e-5,
        });
      });

      it('answers /v2/models/{m}/predict with nested arrays', async () => {
        const result = await h.invoke(kind, 'POST', '/v2/models/linear/predict', [X, X]);
        expect(result.statusCode).toBe(200);
        const y = (bodyOf(result) as { outputs: { y: number[][] } }).outputs.y;
        expect(y).toHaveLength(2);
        expectClose(y.flat(), [...linear(X), ...linear(X)], { atol: 1e-5 });
      });
    },
  );

  it('strips a named HTTP API stage from the path', async () => {
    const h = await harness();
    const handler = createInferHandler(h.runtime);
    const result = (await handler(
      apiEvent('http-v2', 'GET', '/v2/health/live', { stage: 'prod' }),
      lambdaContext(),
    )) as APIGatewayProxyResult;
    expect(result.statusCode).toBe(200);
  });

  it('serves /predict and only its model when pinned to one', async () => {
    const h = await harness({ ONNX_SERVE_MODEL: 'add' });
    const result = await h.invoke('http-v2', 'POST', '/predict', {
      a: [[1, 2, 3, 4]],
      b: [[10, 20, 30, 40]],
    });
    expect(bodyOf(result)).toEqual({ outputs: { sum: [[11, 22, 33, 44]] } });
    const other = await h.invoke('http-v2', 'GET', '/v2/models/linear');
    expect([other.statusCode, bodyOf(other).error]).toEqual([
      404,
      "model 'linear' is not served by this function (it serves 'add')",
    ]);
  });

  describe('warm cache', () => {
    it('downloads a model once and serves later requests without touching S3', async () => {
      const h = await harness();
      log.clear();
      await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody());
      const afterFirst = log.count('GetObject');
      expect(log.count('GetObject', `${PREFIX}/linear/1/model.onnx`)).toBe(1);
      for (let i = 0; i < 5; i += 1) {
        expect(
          (await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody())).statusCode,
        ).toBe(200);
      }
      expect(log.count('GetObject')).toBe(afterFirst);
      expect(h.telemetry.ofType('cache').filter((e) => e.hit)).toHaveLength(5);
    });

    it('makes one download and one session for 20 concurrent cold requests', async () => {
      const h = await harness();
      log.clear();
      const results = await Promise.all(
        Array.from({ length: 20 }, () =>
          h.invoke('http-v2', 'POST', '/v2/models/linear/versions/2/infer', inferBody()),
        ),
      );
      expect(results.map((r) => r.statusCode)).toEqual(Array(20).fill(200));
      expect(log.count('GetObject', `${PREFIX}/linear/2/model.ort`)).toBe(1);
      expect(log.count('GetObject', `${PREFIX}/linear/config.json`)).toBe(1);
      expect(h.telemetry.ofType('model-loaded')).toHaveLength(1);
      expect(h.telemetry.ofType('model-loaded')[0]).toMatchObject({ format: 'ort', source: 'store' });
    });

    it('brings an evicted model back from the /tmp tier without a download', async () => {
      // A budget below two sessions: loading 'add' evicts 'linear'.
      const h = await harness({}, { cacheMemoryBytes: 800 });
      await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody());
      await h.runtime.loader.flush();
      await h.invoke('http-v2', 'POST', '/v2/models/add/predict', { a: [[1, 2, 3, 4]], b: [[1, 1, 1, 1]] });
      expect(h.telemetry.ofType('model-evicted').map((e) => e.model)).toEqual(['linear']);
      log.clear();
      const again = await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody());
      expect(again.statusCode).toBe(200);
      expect(log.count('GetObject', `${PREFIX}/linear/1/model.onnx`)).toBe(0);
      expect(h.telemetry.ofType('model-loaded').at(-1)).toMatchObject({ model: 'linear', source: 'disk' });
      expect(h.runtime.cache.loadedKeys().map((k) => k.model)).toEqual(['linear']);
    });
  });

  describe('integrity', () => {
    it('refuses a corrupt object, caches nothing of it, remembers the failure, and recovers once the object is fixed', async () => {
      const good = buildLinearModel();
      await publishModel(s3.putObject, s3.bucket, PREFIX, 'corrupt', { '1': { onnx: good } });
      const bad = Uint8Array.from(good);
      bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 0xff;
      await s3.putObject(s3.bucket, `${PREFIX}/corrupt/1/model.onnx`, bad);
      // The clock of the config TTL and the load backoff: time passes only when the test says so.
      let now = 0;
      const h = await harness({}, {}, undefined, () => now);
      log.clear();
      const first = await h.invoke('http-v2', 'POST', '/v2/models/corrupt/infer', inferBody());
      expect(first.statusCode).toBe(503);
      expect(bodyOf(first).error).toMatch(/model 'corrupt' version 1: onnx file failed its integrity check/);
      // Within the backoff: the reason of the failure and when to come back, without a download.
      const second = await h.invoke('http-v2', 'POST', '/v2/models/corrupt/infer', inferBody());
      expect(second.statusCode).toBe(503);
      expect(bodyOf(second).error).toMatch(
        /model 'corrupt' version 1: onnx file failed its integrity check .*\(not tried again for 1 s\)$/,
      );
      expect(second.headers?.['retry-after']).toBe('1');
      await h.runtime.loader.flush();
      expect(log.count('GetObject', `${PREFIX}/corrupt/1/model.onnx`)).toBe(1);
      // config.json was read again (unconditionally) after the integrity failure: it may be the one at fault.
      expect(log.count('GetObject', `${PREFIX}/corrupt/config.json`)).toBe(2);
      expect(await readdir(h.runtime.config.diskCache.dir)).toEqual([]);
      expect(h.runtime.cache.loadedKeys()).toEqual([]);
      await s3.putObject(s3.bucket, `${PREFIX}/corrupt/1/model.onnx`, good);
      now += 1000;
      expect((await h.invoke('http-v2', 'POST', '/v2/models/corrupt/infer', inferBody())).statusCode).toBe(
        200,
      );
      expect(log.count('GetObject', `${PREFIX}/corrupt/1/model.onnx`)).toBe(2);
    });
  });

  describe('a config.json that does not fit its model', () => {
    it('answers 503 naming the key as for a config that does not parse, backs off, and serves once fixed', async () => {
      const onnx = buildLinearModel();
      await publishModel(
        s3.putObject,
        s3.bucket,
        PREFIX,
        'misfit',
        { '1': { onnx } },
        { emptyDims: { X: [0] } },
      );
      let now = 0;
      const h = await harness({}, {}, undefined, () => now);
      log.clear();
      const first = await h.invoke('http-v2', 'POST', '/v2/models/misfit/infer', inferBody());
      expect(first.statusCode).toBe(503);
      expect(bodyOf(first).error).toBe(
        "model 'misfit' version 1: config.json is invalid: 'emptyDims' names input 'X', which the model does not have (did you mean 'x'?)",
      );
      expect(h.telemetry.ofType('model-load-failed')[0]).toMatchObject({
        model: 'misfit',
        error: { code: 'model_config_invalid' },
      });
      const second = await h.invoke('http-v2', 'POST', '/v2/models/misfit/infer', inferBody());
      expect(second.statusCode).toBe(503);
      expect(second.headers?.['retry-after']).toBe('1');
      expect(log.count('GetObject', `${PREFIX}/misfit/1/model.onnx`)).toBe(1);

      await publishModel(
        s3.putObject,
        s3.bucket,
        PREFIX,
        'misfit',
        { '1': { onnx } },
        { emptyDims: { x: [0] } },
      );
      now += h.runtime.config.configTtlMs + 1000;
      const fixed = await h.invoke('http-v2', 'POST', '/v2/models/misfit/infer', inferBody());
      expect(fixed.statusCode).toBe(200);
    });
  });

  describe('bad input', () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness({ ONNX_SERVE_MAX_TENSOR_ELEMENTS: '1000', ONNX_SERVE_MAX_BODY_MB: '1' });
    });

    const x = (shape: number[], data: unknown, datatype = 'FP32') => ({
      inputs: [{ name: 'x', datatype, shape, data }],
    });
    it.each<[string, string, string, unknown, number, RegExp]>([
      ['malformed JSON', 'POST', '/v2/models/linear/infer', '{"inputs": [', 400, /not valid JSON/],
      ['no inputs', 'POST', '/v2/models/linear/infer', { id: 'a' }, 400, /inputs/],
      [
        'an unknown input',
        'POST',
        '/v2/models/linear/infer',
        { inputs: [{ name: 'z', datatype: 'FP32', shape: [1, 10], data: X }] },
        400,
        /'z'/,
      ],
      [
        'a missing input',
        'POST',
        '/v2/models/add/infer',
        { inputs: [{ name: 'a', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
        400,
        /'b'/,
      ],
      ['a wrong datatype', 'POST', '/v2/models/linear/infer', x([1, 10], X, 'INT32'), 400, /input 'x'.*FP32/],
      [
        'data that does not fill the shape',
        'POST',
        '/v2/models/linear/infer',
        x([2, 10], X),
        400,
        /input 'x'.*20.*10/,
      ],
      [
        'a fixed dim that differs',
        'POST',
        '/v2/models/linear/infer',
        x([1, 9], X.slice(1)),
        400,
        /input 'x': dim 1 is 9 but the model takes 10/,
      ],
      [
        'a batch over the max',
        'POST',
        '/v2/models/linear/infer',
        x([5, 10], Array(50).fill(0)),
        400,
        /batch size 5 is over the model's max batch size 4/,
      ],
      [
        'too many elements',
        'POST',
        '/v2/models/linear/infer',
        x([200, 10], Array(2000).fill(0)),
        413,
        /input 'x'.*1000/,
      ],
      [
        'a non-finite number',
        'POST',
        '/v2/models/linear/infer',
        '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,10],"data":[1e999,0,0,0,0,0,0,0,0,0]}]}',
        400,
        /input 'x'.*finite/,
      ],
      [
        'an unknown output',
        'POST',
        '/v2/models/linear/infer',
        { ...x([1, 10], X), outputs: [{ name: 'nope' }] },
        400,
        /'nope'/,
      ],
      [
        'an unknown model',
        'POST',
        '/v2/models/missing/infer',
        x([1, 10], X),
        404,
        /model 'missing' not found/,
      ],
      [
        'an unknown version',
        'GET',
        '/v2/models/linear/versions/9',
        undefined,
        404,
        /model 'linear' has no version '9'/,
      ],
      [
        'a traversal attempt',
        'GET',
        '/v2/models/..%2F..%2Fetc/ready',
        undefined,
        404,
        /not a valid model name/,
      ],
      ['an unknown route', 'GET', '/v3/anything', undefined, 404, /no route for GET \/v3\/anything/],
      ['a wrong method', 'GET', '/v2/models/linear/infer', undefined, 405, /GET is not allowed/],
      [
        'a body over the cap',
        'POST',
        '/v2/models/linear/infer',
        'x'.repeat(1024 * 1024 + 1),
        413,
        /over the limit/,
      ],
    ])(
      'answers %s with a %d naming the fault, and keeps serving',
      async (_case, method, path, body, status, message) => {
        const result = await h.invoke('http-v2', method, path, body);
        expect(result.statusCode).toBe(status);
        expect(bodyOf(result).error).toMatch(message);
        const next = await h.invoke('http-v2', 'POST', '/v2/models/linear/infer', inferBody());
        expect(next.statusCode).toBe(200);
      },
    );
  });

  describe('deadline', () => {
    it('answers 504 before the Lambda deadline when a load is too slow, and the next request succeeds', async () => {
      const inner = new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: PREFIX });
      // The model's read waits for the test, not for a timer: the 504 must come while it is still held.
      let release = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let reads = 0;
      let readsDone = 0;
      const slow: ModelStore = {
        location: inner.location,
        readConfig: (m, e) => inner.readConfig(m, e),
        listModels: () => inner.listModels(),
        readArtifact: async (...args) => {
          reads += 1;
          await held;
          try {
            return await inner.readArtifact(...args);
          } finally {
            readsDone += 1;
          }
        },
      };
      const h = await harness({ ONNX_SERVE_TIMEOUT_MARGIN_MS: '200' }, {}, slow);
      let result: APIGatewayProxyResult;
      try {
        result = await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody(), {
          remainingMs: 600,
        });
      } finally {
        release();
      }
      expect(result.statusCode).toBe(504);
      // The door's own timer answered, set to the time left less the margin, while the read was held.
      const within = /did not finish within (\d+) ms/.exec(String(bodyOf(result).error));
      expect(Number(within?.[1])).toBeLessThanOrEqual(600 - 200);
      expect(reads).toBe(1);
      expect(readsDone).toBe(0);
      expect(
        (await h.invoke('http-v2', 'POST', '/v2/models/linear/versions/1/infer', inferBody())).statusCode,
      ).toBe(200);
    });
  });
});
