/**
 * The infer door against Lambda's 6 MB response limit, with the real onnxruntime-node and a real model
 * whose output is wide (Linear(10, 65536)): a small request whose answer does not fit answers 413 with the
 * reason, where the Lambda runtime would fail the invocation with a bodiless gateway error.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { LAMBDA_RESPONSE_LIMIT_BYTES, responsePayloadBytes } from '../../functions/infer/api-gateway-event';
import { createInferHandler } from '../../functions/infer/handler';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { parseConfig } from '../../shared/core/config';
import { decodeInferResponse, encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { createRuntime } from '../../shared/runtime/runtime';
import { buildMlpModel } from '../../tools/onnx/model-builder';
import { apiEvent, type EventKind, lambdaContext } from '../support/api-gateway';
import { RecordingTelemetry } from '../support/fakes';
import { sha256 } from '../support/model-repository';

const WIDTH = 65_536;
let root: string;
let handler: ReturnType<typeof createInferHandler>;
let telemetry: RecordingTelemetry;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'lambda-response-limit-'));
  const onnx = buildMlpModel({ inputSize: 10, hidden: [], outputSize: WIDTH, seed: 7 });
  await mkdir(join(root, 'wide', '1'), { recursive: true });
  await writeFile(join(root, 'wide', '1', 'model.onnx'), onnx);
  const versions = { '1': { sha256: sha256(onnx), size: onnx.byteLength } };
  await writeFile(
    join(root, 'wide', 'config.json'),
    JSON.stringify({ name: 'wide', maxBatchSize: 64, versions }),
  );
  const config = parseConfig(
    { ONNX_SERVE_MODEL_REPOSITORY: root, ONNX_SERVE_DISK_CACHE_MB: '0', ONNX_SERVE_LOG_LEVEL: 'SILENT' },
    { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: root },
  );
  telemetry = new RecordingTelemetry();
  handler = createInferHandler(createRuntime(config, { store: new FileModelStore(root), telemetry }));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function infer(kind: EventKind, rows: number, binaryOutputs: boolean): Promise<APIGatewayProxyResult> {
  const data = Float32Array.from({ length: rows * 10 }, (_, i) => ((i % 13) - 6) / 8);
  const encoded = encodeInferRequest({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [rows, 10], data }],
    binaryOutputDefault: binaryOutputs,
  });
  const event = apiEvent(kind, 'POST', '/v2/models/wide/infer', {
    body: Buffer.from(encoded.body).toString('utf8'),
    headers: encoded.headers,
  });
  return (await handler(event, lambdaContext())) as APIGatewayProxyResult;
}

describe('infer handler: Lambda response limit (real onnxruntime)', () => {
  it.each<EventKind>(['http-v2', 'function-url', 'rest-v1'])(
    'answers 413 naming the size, the limit and the fixes when JSON outputs would be over 6 MB (%s)',
    async (kind) => {
      // 8 rows of 65,536 floats: about 10 MB of JSON text.
      const result = await infer(kind, 8, false);
      expect(result.statusCode).toBe(413);
      const { error } = JSON.parse(result.body) as { error: string };
      const size = Number(/^the response is (\d+) bytes/.exec(error)?.[1]);
      expect(size).toBeGreaterThan(LAMBDA_RESPONSE_LIMIT_BYTES);
      expect(error).toContain(`over Lambda's limit of ${LAMBDA_RESPONSE_LIMIT_BYTES} bytes`);
      expect(error).toContain('"binary_data_output": true');
      expect(error).toContain('smaller batch');
    },
  );

  it('serves the same request with binary outputs, which fit (base64 included)', async () => {
    const result = await infer('http-v2', 8, true);
    expect(result.statusCode).toBe(200);
    expect(result.isBase64Encoded).toBe(true);
    expect(responsePayloadBytes(result)).toBeLessThanOrEqual(LAMBDA_RESPONSE_LIMIT_BYTES);
    const decoded = decodeInferResponse(
      Buffer.from(result.body, 'base64'),
      result.headers?.['inference-header-content-length'] as string | undefined,
    );
    expect(decoded.outputs[0]?.shape).toEqual([8, WIDTH]);
  });

  it('answers 413 for binary outputs too once they are over the limit, and serves small answers as JSON', async () => {
    // 32 rows: 8 MB of float32, 11 MB once base64-encoded.
    const binary = await infer('http-v2', 32, true);
    expect(binary.statusCode).toBe(413);
    expect((JSON.parse(binary.body) as { error: string }).error).toMatch(/or send a smaller batch$/);
    expect((await infer('http-v2', 1, false)).statusCode).toBe(200);
  });

  it('counts a refused answer as the 413 it was in the request telemetry, not as the 200 the route made', async () => {
    const requests = () => telemetry.ofType('request');
    const before = requests().length;
    expect((await infer('http-v2', 8, false)).statusCode).toBe(413);
    expect((await infer('http-v2', 1, false)).statusCode).toBe(200);
    expect(requests().slice(before)).toEqual([
      expect.objectContaining({ model: 'wide', status: 413, outcome: 'response_too_large' }),
      expect.objectContaining({ model: 'wide', status: 200, outcome: 'success' }),
    ]);
  });
});
