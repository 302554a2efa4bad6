/**
 * The infer function's bundle, built by tools/build.mjs as it is deployed, leaves onnxruntime-node
 * unloaded when Lambda imports it (about 12 ms of a cold start here, issue 11): it loads on the way to the
 * first session, and the first answer is right. A fresh Node process requires the bundle with a Lambda
 * environment pinned to a real model in a repository on disk, and reports what `require.cache` holds.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { writeRepository } from '../support/server-harness';

const ROOT = resolve(__dirname, '../..');
const run = promisify(execFile);

let dir: string;

beforeAll(async () => {
  await mkdir(join(ROOT, 'dist'), { recursive: true });
  // Under dist/, so the bundle finds onnxruntime-node in the repository's node_modules.
  dir = await mkdtemp(join(ROOT, 'dist', 'infer-modules-test-'));
  await run(process.execPath, ['tools/build.mjs', 'infer', '--out', dir], { cwd: ROOT });
  await writeRepository(join(dir, 'models'), [{ name: 'linear', bytes: buildLinearModel() }]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Requires the bundle, then answers one request; prints whether onnxruntime-node was loaded at each step. */
const PROBE = `
const loaded = () => Object.keys(require.cache).some((file) => file.includes('/onnxruntime-node/'));
const door = require(process.argv[1]);
const atImport = loaded();
const event = {
  version: '2.0', rawPath: '/v2/models/linear/infer', headers: { 'content-type': 'application/json' },
  requestContext: { http: { method: 'POST', path: '/v2/models/linear/infer' } }, isBase64Encoded: false,
  body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: [1,2,3,4,5,6,7,8,9,10] }] }),
};
const context = { functionName: 'infer', awsRequestId: 'r1', getRemainingTimeInMillis: () => 30000 };
door.handler(event, context).then((result) => {
  console.log(JSON.stringify({ atImport, afterAnswer: loaded(), status: result.statusCode, body: result.body }));
  process.exit(0);
});
`;

describe('the infer bundle', () => {
  it("bundles the credential sources Lambda uses, not the SDK's profile, SSO and STS clients", async () => {
    const code = await readFile(join(dir, 'infer', 'index.js'), 'utf8');
    expect(code).toContain('node_modules/@aws-sdk/credential-provider-env/');
    expect(code).toContain('node_modules/@aws-sdk/credential-provider-http/');
    for (const left of [
      'credential-provider-node',
      'credential-provider-ini',
      'credential-provider-sso',
      'nested-clients',
    ]) {
      expect(code).not.toContain(`node_modules/@aws-sdk/${left}/`);
    }
  });

  it('leaves onnxruntime-node unloaded at import and loads it for the first answer', async () => {
    const { stdout } = await run(process.execPath, ['-e', PROBE, join(dir, 'infer', 'index.js')], {
      env: {
        PATH: process.env.PATH ?? '',
        AWS_LAMBDA_FUNCTION_NAME: 'infer-linear',
        ONNX_SERVE_MODEL_REPOSITORY: join(dir, 'models'),
        ONNX_SERVE_MODEL: 'linear',
        ONNX_SERVE_DISK_CACHE_MB: '0',
        ONNX_SERVE_LOG_LEVEL: 'SILENT',
      },
    });
    const report = JSON.parse(stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>;
    expect(report).toMatchObject({ atImport: false, afterAnswer: true, status: 200 });
    const outputs = (JSON.parse(report.body as string) as { outputs: { shape: number[] }[] }).outputs;
    expect(outputs[0]?.shape).toEqual([1, 2]);
  });
});
