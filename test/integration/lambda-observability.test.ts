/**
 * What the infer door writes for CloudWatch: structured JSON logs and embedded-metric-format (EMF) lines
 * from Powertools, with the real onnxruntime and a model in s3rver.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInferHandler } from '../../functions/infer/handler';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseConfig } from '../../shared/core/config';
import { createRuntime } from '../../shared/runtime/runtime';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { publishModel } from '../support/model-repository';
import { type S3Server, startS3Server } from '../support/s3-server';

let s3: S3Server;
let dir: string;

beforeAll(async () => {
  s3 = await startS3Server();
  dir = await mkdtemp(join(tmpdir(), 'observability-'));
  await publishModel(s3.putObject, s3.bucket, 'repo', 'linear', { '1': { onnx: buildLinearModel() } });
});

afterAll(async () => {
  delete process.env.AWS_LAMBDA_INITIALIZATION_TYPE;
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

/** Every JSON line written to stdout while `work` runs. */
async function stdoutJson(work: () => Promise<unknown>): Promise<Record<string, unknown>[]> {
  const lines: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split('\n'));
    return true;
  });
  try {
    await work();
  } finally {
    spy.mockRestore();
  }
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

function metricNames(line: Record<string, unknown>): string[] {
  const aws = line._aws as { CloudWatchMetrics?: { Metrics: { Name: string }[] }[] } | undefined;
  return aws?.CloudWatchMetrics?.flatMap((m) => m.Metrics.map((metric) => metric.Name)) ?? [];
}

describe('infer handler observability', () => {
  it('writes EMF metrics for cold start, download, session creation, inference and cache, and JSON logs', async () => {
    const config = parseConfig(
      {
        ONNX_SERVE_MODEL_REPOSITORY: `s3://${s3.bucket}/repo`,
        ONNX_SERVE_DISK_CACHE_DIR: dir,
        ONNX_SERVE_LOG_LEVEL: 'INFO',
      },
      { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: dir },
    );
    // Lambda sets this for an on-demand instance; Powertools counts a cold start only then.
    process.env.AWS_LAMBDA_INITIALIZATION_TYPE = 'on-demand';
    const runtime = createRuntime(config, {
      store: new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: 'repo' }),
      withMetrics: true,
    });
    const handler = createInferHandler(runtime);
    const body = JSON.stringify({
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }],
    });
    const invoke = () =>
      handler(apiEvent('http-v2', 'POST', '/v2/models/linear/infer', { body }), lambdaContext());

    const first = await stdoutJson(invoke);
    const firstMetrics = first.flatMap(metricNames);
    expect(firstMetrics).toEqual(
      expect.arrayContaining([
        'ColdStart',
        'ModelDownloadTime',
        'SessionCreationTime',
        'InferenceTime',
        'CacheMisses',
      ]),
    );
    const loaded = first.find((l) => l.message === 'model loaded');
    expect(loaded).toMatchObject({
      level: 'INFO',
      model: 'linear',
      version: '1',
      source: 'store',
      function_name: 'infer',
    });

    const second = await stdoutJson(invoke);
    const secondMetrics = second.flatMap(metricNames);
    expect(secondMetrics).toEqual(expect.arrayContaining(['InferenceTime', 'CacheHits']));
    expect(secondMetrics).not.toContain('ColdStart');
    expect(secondMetrics).not.toContain('ModelDownloadTime');
  });
});
