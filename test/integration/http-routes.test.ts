/**
 * The node:http door on the embedded default: models from a local folder (the sample repository that
 * `npm start` serves), the real onnxruntime-node, real HTTP on loopback.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunningServer, startHttpServer } from '../../functions/server/http-server';
import { parseConfig } from '../../shared/core/config';
import { decodeInferResponse, encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime';
import { LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { writeSampleRepository } from '../../tools/sample-models';
import { expectClose } from '../support/golden';

let dir: string;
let runtime: Runtime;
let server: RunningServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'http-routes-'));
  await writeSampleRepository(join(dir, 'models'));
  const config = parseConfig(
    {
      ONNX_SERVE_MODEL_REPOSITORY: join(dir, 'models'),
      ONNX_SERVE_DISK_CACHE_MB: '0',
      ONNX_SERVE_MAX_BODY_MB: '1',
    },
    { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: dir },
  );
  runtime = createRuntime(config);
  server = await startHttpServer({
    app: runtime.app,
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: config.limits.maxBodyBytes,
    requestTimeoutMs: 10_000,
    shutdownGraceMs: 1000,
  });
});

afterAll(async () => {
  await server.close();
  await runtime.cache.clear();
  await rm(dir, { recursive: true, force: true });
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: body instanceof Uint8Array || typeof body === 'string' ? body : JSON.stringify(body),
  });
const linear = (x: number[]) =>
  LINEAR_WEIGHTS.weight.map((row, o) =>
    row.reduce((sum, w, i) => sum + w * (x[i] ?? 0), LINEAR_WEIGHTS.bias[o] ?? 0),
  );

describe('HTTP server', () => {
  it('answers health, server and model metadata', async () => {
    expect(await (await fetch(`${server.url}/v2/health/live`)).json()).toEqual({ live: true });
    expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200);
    expect(await (await fetch(`${server.url}/v2`)).json()).toMatchObject({ name: 'onnx-serverless' });
    const meta = await (await fetch(`${server.url}/v2/models/text-direction`)).json();
    expect(meta).toMatchObject({
      name: 'text-direction',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, -1, -1] }],
    });
  });

  it.each([
    ['GET', '/v2/health/live', 200, { live: true }],
    ['GET', '/v2/health/ready', 200, { ready: true }],
    ['GET', '/v2', 200, { name: 'onnx-serverless', extensions: ['binary_tensor_data', 'predict'] }],
    ['GET', '/v2/models/linear', 200, { name: 'linear', versions: ['1'], platform: 'onnx_onnxv1' }],
    [
      'GET',
      '/v2/models/linear/versions/1',
      200,
      { name: 'linear', inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 10] }] },
    ],
    ['GET', '/v2/models/linear/ready', 200, { name: 'linear', ready: true }],
    ['GET', '/v2/models/linear/versions/1/ready', 200, { ready: true }],
    ['POST', '/v2/models/linear/versions/1/infer', 200, { model_name: 'linear', model_version: '1' }],
    ['POST', '/v2/models/linear/versions/1/predict', 200, { outputs: { y: [[-2.5, 1.625]] } }],
    ['POST', '/predict', 404, { error: '/predict needs a function pinned to one model' }],
    ['GET', '/v2/models/linear/versions/7', 404, { error: "model 'linear' has no version '7'" }],
  ])('%s %s answers %d', async (method, path, status, expected) => {
    const x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const body = path.endsWith('/infer')
      ? JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: x }] })
      : path.endsWith('predict')
        ? JSON.stringify([x])
        : undefined;
    const response = await fetch(`${server.url}${path}`, { method, ...(body === undefined ? {} : { body }) });
    expect(response.status).toBe(status);
    expect(await response.json()).toMatchObject(expected);
  });

  it('serves the real text-direction classifier: one probability pair per image', async () => {
    const pixels = Array.from({ length: 2 * 3 * 48 * 64 }, (_, i) => Math.sin(i) * 0.5);
    const response = await post('/v2/models/text-direction/infer', {
      inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3, 48, 64], data: pixels }],
    });
    expect(response.status).toBe(200);
    const { outputs } = (await response.json()) as { outputs: { shape: number[]; data: number[] }[] };
    expect(outputs[0]?.shape).toEqual([2, 2]);
    const [a = 0, b = 0, c = 0, d = 0] = outputs[0]?.data ?? [];
    expectClose([a + b, c + d], [1, 1], { atol: 1e-4 });
  });

  it('answers every output for an empty outputs list, as for an absent one (OIP)', async () => {
    const inputs = [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }];
    const all = await post('/v2/models/linear/infer', { inputs });
    const empty = await post('/v2/models/linear/infer', { inputs, outputs: [] });
    expect(empty.status).toBe(200);
    const body = (await empty.json()) as { outputs: { name: string; data: number[] }[] };
    expect(body.outputs).toEqual(((await all.json()) as { outputs: unknown[] }).outputs);
    expect(body.outputs.map((o) => o.name)).toEqual(['y']);
  });

  it('takes a raw binary request (Inference-Header-Content-Length: 0) for a one-input model, answering binary', async () => {
    const x = Float32Array.from({ length: 10 }, (_, i) => i + 1);
    const raw = await post('/v2/models/linear/infer', new Uint8Array(x.buffer), {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': '0',
    });
    expect(raw.status).toBe(200);
    const decoded = decodeInferResponse(
      new Uint8Array(await raw.arrayBuffer()),
      raw.headers.get('inference-header-content-length') ?? undefined,
    );
    expect(decoded.outputs[0]?.shape).toEqual([1, 2]);
    expectClose(Array.from(decoded.outputs[0]?.data as Float32Array), linear(Array.from(x)), { atol: 1e-5 });
    const torn = await post('/v2/models/linear/infer', new Uint8Array(12), {
      'inference-header-content-length': '0',
    });
    expect(torn.status).toBe(400);
    expect(((await torn.json()) as { error: string }).error).toMatch(
      /^input 'x': binary_data_size is 12 but shape \[1,10\]/,
    );
  });

  it('gives identical results for binary and JSON payloads', async () => {
    const rows = [Array.from({ length: 10 }, (_, i) => i / 7), Array.from({ length: 10 }, (_, i) => -i)];
    const data = Float32Array.from(rows.flat());
    const encoded = encodeInferRequest(
      { inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 10], data }], binaryOutputDefault: true },
      { binaryInputs: true },
    );
    const binary = await post('/v2/models/linear/infer', encoded.body, encoded.headers);
    expect(binary.headers.get('content-type')).toBe('application/octet-stream');
    const decoded = decodeInferResponse(
      new Uint8Array(await binary.arrayBuffer()),
      binary.headers.get('inference-header-content-length') ?? undefined,
    );
    const json = (await (
      await post('/v2/models/linear/infer', {
        inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 10], data: rows }],
      })
    ).json()) as {
      outputs: { data: number[] }[];
    };
    expect(Array.from(decoded.outputs[0]?.data as Float32Array)).toEqual(json.outputs[0]?.data);
    expectClose(json.outputs[0]?.data ?? [], rows.flatMap(linear), { atol: 1e-5 });
  });

  it('serves 40 concurrent requests, each with its own answer', async () => {
    const inputs = Array.from({ length: 40 }, (_, k) => Array.from({ length: 10 }, (_, i) => k * 0.25 - i));
    const answers = await Promise.all(
      inputs.map((x) => post('/v2/models/linear/predict', [x]).then((r) => r.json())),
    );
    answers.forEach((answer, k) => {
      expectClose((answer as { outputs: { y: number[][] } }).outputs.y.flat(), linear(inputs[k] ?? []), {
        atol: 1e-5,
      });
    });
  });

  it('refuses a body over the cap from its Content-Length, then keeps serving', async () => {
    const response = await post('/v2/models/linear/infer', 'x'.repeat(1024 * 1024 + 10));
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: string }).error).toMatch(/over the limit of 1048576/);
    expect((await post('/v2/models/linear/predict', [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])).status).toBe(200);
  });

  it('answers a bad request with a 400 naming the input, then keeps serving', async () => {
    const response = await post('/v2/models/linear/predict', [[1, 2, 3]]);
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: string }).error).toMatch(/input 'x'/);
    expect((await post('/v2/models/linear/predict', [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])).status).toBe(200);
  });
});
