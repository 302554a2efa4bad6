/**
 * Runs what would be deployed: the packaged function zip unzipped as the task root and the packaged layer
 * unzipped as `/opt`, in a fresh Node process whose module resolution can reach nothing of this repository
 * (the folders live under the system temp dir, `NODE_PATH` names only the layer, as on Lambda), invoked by
 * lambda-local with the Lambda calling convention and API Gateway HTTP API events, against the model
 * uploaded to a loopback S3 server under the prefix the packaged environment names.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildLinearModel, LINEAR_IN, LINEAR_OUT, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { writeModelVersion } from '../../tools/sample-models';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type CfResource,
  type PackagedService,
  packagedService,
  ROOT,
  resourcesOfType,
} from './packaged-service';
import { extractZip } from './zip-reader';

const run = promisify(execFile);
const MODEL = 'linear';
const ROUTE = `POST /v2/models/${MODEL}/infer`;

interface InvocationResult {
  readonly statusCode: number;
  readonly headers?: Record<string, string>;
  readonly body: string;
  readonly isBase64Encoded?: boolean;
}

interface ChildReport {
  readonly results: InvocationResult[];
  /** Every module file the process loaded, as absolute paths. */
  readonly modules: string[];
}

// The child: resolve the handler the way Lambda does (`<file>.<export>` under the task root), load it
// once so that later events hit the warm instance, and run each event through lambda-local.
const RUNNER = `
const { join } = require('node:path');
const { writeFileSync, readFileSync } = require('node:fs');
const [lambdaLocalPath, handlerSpec, eventsFile, reportFile] = process.argv.slice(2);
const lambdaLocal = require(lambdaLocalPath);
lambdaLocal.setLogger({ log() {}, info() {}, warn() {}, error() {}, transports: [] });
const dot = handlerSpec.lastIndexOf('.');
const mod = require(join(process.env.LAMBDA_TASK_ROOT, handlerSpec.slice(0, dot)));
const handlerName = handlerSpec.slice(dot + 1);
(async () => {
  const results = [];
  for (const event of JSON.parse(readFileSync(eventsFile, 'utf8'))) {
    results.push(await lambdaLocal.execute({
      event, lambdaFunc: mod, lambdaHandler: handlerName, timeoutMs: 25000, verboseLevel: 0,
    }));
  }
  writeFileSync(reportFile, JSON.stringify({ results, modules: Object.keys(require.cache) }));
})().catch((error) => { console.error(error); process.exitCode = 1; });
`;

/** An HTTP API (payload 2.0) event on the `$default` stage; `routeKey` is the route that matched. */
function httpApiEvent(method: string, rawPath: string, routeKey: string, body?: string) {
  const now = new Date();
  return {
    version: '2.0',
    routeKey,
    rawPath,
    rawQueryString: '',
    headers: {
      'content-type': 'application/json',
      host: 'abcdef1234.execute-api.us-east-1.amazonaws.com',
      'user-agent': 'contract-test',
    },
    requestContext: {
      accountId: '123456789012',
      apiId: 'abcdef1234',
      domainName: 'abcdef1234.execute-api.us-east-1.amazonaws.com',
      domainPrefix: 'abcdef1234',
      http: {
        method,
        path: rawPath,
        protocol: 'HTTP/1.1',
        sourceIp: '192.0.2.1',
        userAgent: 'contract-test',
      },
      requestId: `contract-${now.getTime()}`,
      routeKey,
      stage: '$default',
      time: now.toUTCString(),
      timeMs: now.getTime(),
    },
    ...(body === undefined ? {} : { body, isBase64Encoded: false }),
  };
}

function linear(x: readonly number[]): number[] {
  return LINEAR_WEIGHTS.weight.map(
    (row, o) => row.reduce((sum, w, i) => sum + w * (x[i] ?? Number.NaN), 0) + (LINEAR_WEIGHTS.bias[o] ?? 0),
  );
}

/** The function the HTTP API route sends `routeKey` to. */
function functionForRoute(pkg: PackagedService, routeKey: string): CfResource {
  const route = resourcesOfType(pkg.template, 'AWS::ApiGatewayV2::Route').find(
    ([, r]) => r.Properties?.RouteKey === routeKey,
  );
  if (route === undefined) throw new Error(`no route ${routeKey}`);
  const integrationId = /"Ref":"(\w+)"/.exec(JSON.stringify(route[1].Properties?.Target))?.[1] ?? '';
  const uri = JSON.stringify(pkg.template.Resources[integrationId]?.Properties?.IntegrationUri);
  const fnId = /"Fn::GetAtt":\["(\w+)","Arn"\]/.exec(uri)?.[1] ?? '';
  const fn = pkg.template.Resources[fnId];
  if (fn?.Type !== 'AWS::Lambda::Function') throw new Error(`route ${routeKey} reaches no function`);
  return fn;
}

let pkg: PackagedService;
let s3: S3Server;
let sandbox: string;
let report: ChildReport;
let taskRoot: string;
let layerRoot: string;
const x = [
  Array.from({ length: LINEAR_IN }, (_, i) => i / 4 - 1),
  Array.from({ length: LINEAR_IN }, (_, i) => ((i * 3) % 5) / 2),
];

beforeAll(async () => {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `the packaged layer is for Linux x86_64; this host is ${process.platform} ${process.arch}`,
    );
  }
  pkg = await packagedService();
  const fn = functionForRoute(pkg, ROUTE);
  const props = fn.Properties ?? {};
  const env = { ...(props.Environment as { Variables: Record<string, string> }).Variables };
  const repository = /^s3:\/\/([^/]+)\/(.+)$/.exec(env.ONNX_SERVE_MODEL_REPOSITORY ?? '');
  if (repository === null) throw new Error(`unexpected repository ${env.ONNX_SERVE_MODEL_REPOSITORY}`);
  const [, bucket = '', prefix = ''] = repository;

  // The bucket and prefix are the packaged ones; only the endpoint points at the loopback server.
  s3 = await startS3Server({ bucket });
  sandbox = await mkdtemp(join(tmpdir(), 'lambda-contract-'));
  const repo = join(sandbox, 'repo');
  await writeModelVersion(repo, MODEL, '1', buildLinearModel());
  for (const file of ['config.json', '1/model.onnx']) {
    await s3.putObject(bucket, `${prefix}/${MODEL}/${file}`, await readFile(join(repo, MODEL, file)));
  }

  taskRoot = join(sandbox, 'var', 'task');
  layerRoot = join(sandbox, 'opt');
  await extractZip(pkg.artefactOf(fn), taskRoot);
  const layers = props.Layers as { Ref: string }[];
  expect(layers).toHaveLength(1);
  const layer = pkg.template.Resources[layers[0]?.Ref ?? ''];
  await extractZip(pkg.artefactOf(layer), layerRoot);
  await mkdir(join(sandbox, 'tmp'));

  const events = [
    httpApiEvent(
      'POST',
      `/v2/models/${MODEL}/infer`,
      ROUTE,
      JSON.stringify({ inputs: [{ name: 'x', shape: [2, LINEAR_IN], datatype: 'FP32', data: x.flat() }] }),
    ),
    httpApiEvent('POST', '/predict', 'POST /predict', JSON.stringify(x)),
    httpApiEvent('GET', `/v2/models/${MODEL}`, `GET /v2/models/${MODEL}`),
    // Not a route of this function: as a direct invocation or a catch-all route would send it.
    httpApiEvent('POST', '/v2/models/other/infer', '$default', '{"inputs":[]}'),
  ];
  const eventsFile = join(sandbox, 'events.json');
  const reportFile = join(sandbox, 'report.json');
  const runnerFile = join(sandbox, 'runner.cjs');
  await writeFile(eventsFile, JSON.stringify(events));
  await writeFile(runnerFile, RUNNER);

  const functionName = String(props.FunctionName);
  const lambdaEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    LANG: 'en_US.UTF-8',
    TZ: ':UTC',
    // lambda-local reads ~/.aws/*: an empty home keeps the developer's profiles out.
    HOME: sandbox,
    TMPDIR: join(sandbox, 'tmp'),
    LAMBDA_TASK_ROOT: taskRoot,
    LAMBDA_RUNTIME_DIR: join(sandbox, 'var', 'runtime'),
    NODE_PATH: join(layerRoot, 'nodejs', 'node_modules'),
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_LAMBDA_FUNCTION_NAME: functionName,
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(props.MemorySize),
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    ...env,
    ONNX_SERVE_S3_ENDPOINT: s3.endpoint,
  };
  const lambdaLocal = join(ROOT, 'node_modules', 'lambda-local');
  try {
    await run(process.execPath, [runnerFile, lambdaLocal, String(props.Handler), eventsFile, reportFile], {
      cwd: taskRoot,
      env: lambdaEnv,
      timeout: 60_000,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`the function process failed:\n${stdout ?? ''}\n${stderr ?? ''}`, { cause: error });
  }
  report = JSON.parse(await readFile(reportFile, 'utf8')) as ChildReport;
}, 300_000);

afterAll(async () => {
  await s3?.close();
  if (sandbox !== undefined) await rm(sandbox, { recursive: true, force: true });
});

function result(index: number): { status: number; body: Record<string, unknown> } {
  const invocation = report.results[index];
  if (invocation === undefined) throw new Error(`no result ${index}`);
  expect(invocation.isBase64Encoded).toBe(false);
  return { status: invocation.statusCode, body: JSON.parse(invocation.body) as Record<string, unknown> };
}

describe('serverless package', () => {
  describe('the packaged infer function, unzipped into a Lambda layout with its layer', () => {
    it('answers an Open Inference Protocol request with the model from S3', () => {
      const { status, body } = result(0);
      expect(status).toBe(200);
      expect(body.model_name).toBe(MODEL);
      const outputs = body.outputs as { name: string; datatype: string; shape: number[]; data: number[] }[];
      expect(outputs).toHaveLength(1);
      expect(outputs[0]?.name).toBe('y');
      expect(outputs[0]?.datatype).toBe('FP32');
      expect(outputs[0]?.shape).toEqual([2, LINEAR_OUT]);
      const expected = x.flatMap(linear);
      expect(outputs[0]?.data).toHaveLength(expected.length);
      expected.forEach((value, i) => {
        expect(outputs[0]?.data[i]).toBeCloseTo(value, 5);
      });
    });

    it('answers /predict for its pinned model on the warm instance', () => {
      const { status, body } = result(1);
      expect(status).toBe(200);
      const y = (body.outputs as Record<string, number[][]>).y;
      expect(y).toHaveLength(2);
      x.map(linear).forEach((row, r) => {
        row.forEach((value, c) => {
          expect(y?.[r]?.[c]).toBeCloseTo(value, 5);
        });
      });
    });

    it('serves model metadata and refuses a model it is not pinned to', () => {
      const metadata = result(2);
      expect(metadata.status).toBe(200);
      expect(metadata.body.name).toBe(MODEL);
      const other = result(3);
      expect(other.status).toBe(404);
      expect(String(other.body.error)).toContain(MODEL);
    });

    it('loads onnxruntime-node from the layer and everything else from the bundle', () => {
      const ort = report.modules.filter((file) => file.includes('onnxruntime'));
      expect(ort.some((file) => file.endsWith('/linux/x64/onnxruntime_binding.node'))).toBe(true);
      expect(ort.filter((file) => !file.startsWith(join(layerRoot, 'nodejs', 'node_modules')))).toEqual([]);
      expect(report.modules).toContain(join(taskRoot, 'functions', 'infer', 'handler.js'));
      // lambda-local, the harness, is the only thing loaded from this repository: the function's own
      // dependencies (AWS SDK, middy, Powertools) are inside its bundle.
      const fromRepository = report.modules.filter((file) => file.startsWith(`${ROOT}/`));
      expect(fromRepository.filter((file) => !file.includes('/node_modules/'))).toEqual([]);
      expect(fromRepository.filter((file) => /@aws-sdk|@middy|@aws-lambda-powertools/.test(file))).toEqual(
        [],
      );
    });
  });
});
