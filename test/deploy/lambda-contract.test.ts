/**
 * Runs what would be deployed: the packaged infer function in a Lambda layout with its layer
 * (lambda-layout.ts), invoked by lambda-local with API Gateway HTTP API events, against the model uploaded
 * to a loopback S3 server at the bucket and prefix of the packaged environment.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLinearModel, LINEAR_IN, LINEAR_OUT, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { writeModelVersion } from '../../tools/sample-models';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  environmentOf,
  functionForRoute,
  type LambdaLayout,
  type LayoutReport,
  s3Location,
  unpackFunction,
} from './lambda-layout';
import { packagedService, ROOT } from './packaged-service';

const MODEL = 'linear';
const ROUTE = `POST /v2/models/${MODEL}/infer`;

interface InvocationResult {
  readonly statusCode: number;
  readonly headers?: Record<string, string>;
  readonly body: string;
  readonly isBase64Encoded?: boolean;
}

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

let s3: S3Server;
let layout: LambdaLayout;
let report: LayoutReport<InvocationResult>;
const x = [
  Array.from({ length: LINEAR_IN }, (_, i) => i / 4 - 1),
  Array.from({ length: LINEAR_IN }, (_, i) => ((i * 3) % 5) / 2),
];

beforeAll(async () => {
  const pkg = await packagedService();
  const fn = functionForRoute(pkg, ROUTE);
  // The bucket and prefix are the packaged ones; only the endpoint points at the loopback server.
  const { bucket, prefix } = s3Location(environmentOf(fn).ONNX_SERVE_MODEL_REPOSITORY);
  s3 = await startS3Server({ bucket });
  layout = await unpackFunction(pkg, fn);
  const repo = join(layout.sandbox, 'repo');
  await writeModelVersion(repo, MODEL, '1', buildLinearModel());
  for (const file of ['config.json', '1/model.onnx']) {
    await s3.putObject(bucket, `${prefix}/${MODEL}/${file}`, await readFile(join(repo, MODEL, file)));
  }
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
  report = await layout.invoke<InvocationResult>(events, {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    ONNX_SERVE_S3_ENDPOINT: s3.endpoint,
  });
}, 300_000);

afterAll(async () => {
  await s3?.close();
  await layout?.dispose();
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
      expect(
        ort.filter((file) => !file.startsWith(join(layout.layerRoot, 'nodejs', 'node_modules'))),
      ).toEqual([]);
      expect(report.modules).toContain(join(layout.taskRoot, 'functions', 'infer', 'handler.js'));
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
