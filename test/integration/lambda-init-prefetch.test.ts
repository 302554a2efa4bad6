/**
 * A Lambda function pinned to one model starts fetching its config.json and model in the init phase (at
 * import of the infer door), before the first event: the real door module, loaded as Lambda loads it (with
 * `AWS_LAMBDA_FUNCTION_NAME` and the function's environment), a real S3-compatible server behind the
 * fault proxy (whose log says what was fetched, and when) and the real onnxruntime-node.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import type { InferEvent } from '../../functions/infer/api-gateway-event';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { publishModel } from '../support/model-repository';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../support/s3-server';

const PREFIX = 'repo';

interface DoorModule {
  readonly prefetched: Promise<void> | undefined;
  readonly handler: (event: InferEvent, context: Context) => Promise<APIGatewayProxyResult>;
}

let s3: S3Server;
let proxy: FaultProxy;
let work: string;
const saved = { ...process.env };

beforeAll(async () => {
  s3 = await startS3Server();
  proxy = await startFaultProxy(s3.endpoint);
  work = await mkdtemp(join(tmpdir(), 'lambda-init-'));
  await publishModel(s3.putObject, s3.bucket, PREFIX, 'linear', { '1': { onnx: buildLinearModel() } });
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

function restoreEnv(): void {
  for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
  Object.assign(process.env, saved);
}

afterEach(restoreEnv);

/** Loads the infer door afresh, as Lambda's init phase does, with `env` added to the environment. */
function loadDoor(env: Record<string, string>): DoorModule {
  restoreEnv();
  Object.assign(process.env, {
    ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/${PREFIX}`,
    ONNX_SERVE_S3_ENDPOINT: proxy.endpoint,
    ONNX_SERVE_DISK_CACHE_MB: '0',
    ONNX_SERVE_DISK_CACHE_DIR: work,
    ONNX_SERVE_LOG_LEVEL: 'SILENT',
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    POWERTOOLS_METRICS_DISABLED: 'true',
    ...env,
  });
  let door: DoorModule | undefined;
  jest.isolateModules(() => {
    door = require('../../functions/infer/handler') as DoorModule;
  });
  if (door === undefined) throw new Error('the door did not load');
  return door;
}

/** Keys of the GETs the proxy saw after the `since`-th request. */
const fetchedKeys = (since: number) =>
  proxy.log
    .slice(since)
    .filter((r) => r.method === 'GET')
    .map((r) => r.key);

describe('the infer door in the Lambda init phase', () => {
  it('fetches the pinned model before the first event; the first request downloads nothing', async () => {
    const start = proxy.log.length;
    const door = loadDoor({ AWS_LAMBDA_FUNCTION_NAME: 'infer-linear', ONNX_SERVE_MODEL: 'linear' });
    expect(door.prefetched).toBeDefined();
    await door.prefetched;
    expect(fetchedKeys(start)).toEqual([`${PREFIX}/linear/config.json`, `${PREFIX}/linear/1/model.onnx`]);

    const loaded = proxy.log.length;
    const body = JSON.stringify({
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }],
    });
    const result = await door.handler(
      apiEvent('http-v2', 'POST', '/v2/models/linear/infer', { body }),
      lambdaContext(),
    );
    expect(result.statusCode).toBe(200);
    expect(fetchedKeys(loaded)).toEqual([]);
  });

  it('starts nothing outside Lambda, nor for a function that serves every model', async () => {
    const start = proxy.log.length;
    expect(loadDoor({ ONNX_SERVE_MODEL: 'linear' }).prefetched).toBeUndefined();
    const multi = loadDoor({ AWS_LAMBDA_FUNCTION_NAME: 'infer' });
    await multi.prefetched;
    expect(fetchedKeys(start)).toEqual([]);
  });

  it('leaves a bad configuration to the first invocation, which names the key', async () => {
    const door = loadDoor({ AWS_LAMBDA_FUNCTION_NAME: 'infer-linear', ONNX_SERVE_MAX_BODY_MB: 'lots' });
    expect(door.prefetched).toBeUndefined();
    const failure = await door
      .handler(apiEvent('http-v2', 'GET', '/v2/health/live'), lambdaContext())
      .catch((error: unknown) => error);
    expect(String(failure)).toMatch(/ONNX_SERVE_MAX_BODY_MB/);
  });
});
