/**
 * The packaged `infer` and `batch` functions under AWS's own runtime: each zip unzipped as the task root and
 * its layer as `/opt` (sandbox folders named by `LAMBDA_TASK_ROOT` and `NODE_PATH`, as Lambda sets them),
 * run by `aws-lambda-ric` on Node 22 (runtime-client.ts), which takes its events from a Runtime API written
 * here (test/support/lambda-runtime-api.ts), with the packaged environment and S3 on a loopback server at
 * the packaged bucket and prefixes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { buildLinearModel, LINEAR_IN, LINEAR_OUT, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { writeModelVersion } from '../../tools/sample-models';
import { apiEvent } from '../support/api-gateway';
import {
  type InvocationOutcome,
  type QueuedInvocation,
  type RuntimeApi,
  startRuntimeApi,
} from '../support/lambda-runtime-api';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  environmentOf,
  functionForRoute,
  functionNamed,
  type LambdaLayout,
  s3Location,
  unpackFunction,
} from './lambda-layout';
import { packagedService } from './packaged-service';
import { type RuntimeClientProcess, startRuntimeClient } from './runtime-client';

const MODEL = 'linear';
const ROUTE = `POST /v2/models/${MODEL}/infer`;
const S3_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

type Outcome = InvocationOutcome & { invocation: QueuedInvocation };

function linear(x: readonly number[]): number[] {
  return LINEAR_WEIGHTS.weight.map(
    (row, o) => row.reduce((sum, w, i) => sum + w * (x[i] ?? Number.NaN), 0) + (LINEAR_WEIGHTS.bias[o] ?? 0),
  );
}

const rows = Array.from({ length: 5 }, (_, r) =>
  Array.from({ length: LINEAR_IN }, (_, i) => ((r * 7 + i * 3) % 11) / 4 - 1),
);

let s3: S3Server;
let bucket: string;
const layouts: LambdaLayout[] = [];
const apis: RuntimeApi[] = [];
const clients: RuntimeClientProcess[] = [];

async function getText(key: string): Promise<string> {
  const output = await s3.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await output.Body?.transformToString('utf-8')) ?? '';
}

/** A Runtime API and the runtime client polling it, for one unpacked function. */
async function runtimeFor(
  layout: LambdaLayout,
  env: (api: RuntimeApi) => Record<string, string> = () => ({}),
  handler?: string,
) {
  const api = await startRuntimeApi();
  apis.push(api);
  const client = startRuntimeClient(layout, {
    runtimeApi: api.address,
    env: { ...S3_CREDENTIALS, ONNX_SERVE_S3_ENDPOINT: s3.endpoint, ...env(api) },
    ...(handler === undefined ? {} : { handler }),
  });
  clients.push(client);
  return { api, client };
}

/**
 * `api.invoke`, failing with the process's output when the runtime client exits first, or has not answered
 * after two minutes (a hang would otherwise only show as the hook's timeout).
 */
async function invokeOn(
  api: RuntimeApi,
  client: RuntimeClientProcess,
  event: unknown,
  timeoutMs: number,
): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer from the runtime client; its output:\n${client.output()}`)),
      120_000,
    );
  });
  const exited = client.exited.then((code) => {
    throw new Error(`the runtime client exited (${code}); its output:\n${client.output()}`);
  });
  try {
    return await Promise.race([api.invoke(event, { timeoutMs }), exited, stuck]);
  } finally {
    clearTimeout(timer);
  }
}

/** The S3 event the server emits for an upload of `body` under `key`. */
async function uploadWithEvent(key: string, body: string): Promise<unknown> {
  const emitted = new Promise<unknown>((resolve) => {
    s3.events.on('event', (event: { Records: { s3: { object: { key: string } } }[] }) => {
      if (event.Records[0]?.s3.object.key === key) resolve(event);
    });
  });
  await s3.putObject(bucket, key, body);
  return emitted;
}

let infer: { ok: Outcome; badInput: Outcome; unknownModel: Outcome; output: string };
let batch: {
  scored: Outcome;
  invalid: Outcome;
  shortDeadline: Outcome;
  asyncInvocations: RuntimeApi['asyncInvocations'];
  functionName: string;
  output: string;
  inputKey: string;
  outputPrefix: string;
};
let initError: { errorType: string | undefined; body: unknown; exit: number | null };

beforeAll(async () => {
  const pkg = await packagedService();
  const inferFn = functionForRoute(pkg, ROUTE);
  const batchFn = functionNamed(pkg, 'batch');
  const models = s3Location(environmentOf(inferFn).ONNX_SERVE_MODEL_REPOSITORY);
  bucket = models.bucket;
  s3 = await startS3Server({ bucket });
  const inferLayout = await unpackFunction(pkg, inferFn);
  const batchLayout = await unpackFunction(pkg, batchFn);
  layouts.push(inferLayout, batchLayout);
  const repo = join(inferLayout.sandbox, 'repo');
  await writeModelVersion(repo, MODEL, '1', buildLinearModel(), { configPatch: { maxBatchSize: 64 } });
  for (const file of ['config.json', '1/model.onnx']) {
    await s3.putObject(bucket, `${models.prefix}/${MODEL}/${file}`, await readFile(join(repo, MODEL, file)));
  }

  // infer: a correct inference, then two errors the door maps to their documented statuses.
  {
    const { api, client } = await runtimeFor(inferLayout);
    const body = (value: unknown) => ({ body: JSON.stringify(value) });
    const call = (path: string, route: string, value: unknown) =>
      invokeOn(api, client, { ...apiEvent('http-v2', 'POST', path, body(value)), routeKey: route }, 29_000);
    const ok = await call(`/v2/models/${MODEL}/infer`, ROUTE, {
      inputs: [{ name: 'x', shape: [2, LINEAR_IN], datatype: 'FP32', data: rows.slice(0, 2).flat() }],
    });
    const badInput = await call(`/v2/models/${MODEL}/infer`, ROUTE, {
      inputs: [{ name: 'x', shape: [1, LINEAR_IN], datatype: 'FP32', data: [1, 2, 3] }],
    });
    const unknownModel = await call('/v2/models/other/infer', '$default', { inputs: [] });
    infer = { ok, badInput, unknownModel, output: client.output() };
  }

  // batch: an uploaded input scored; an event it cannot read; a deadline too close to finish in.
  {
    const env = environmentOf(batchFn);
    const input = s3Location(env.ONNX_SERVE_BATCH_INPUT_PREFIX);
    const output = s3Location(env.ONNX_SERVE_BATCH_OUTPUT_PREFIX);
    const { api: runtime, client: batchClient } = await runtimeFor(batchLayout, (api) => ({
      // Two records a part, and stop a minute before the deadline: an invocation given 20 s has time for
      // its first part only (the runner always does one), then continues in a fresh invocation.
      ONNX_SERVE_BATCH_PART_RECORDS: '2',
      ONNX_SERVE_BATCH_TIME_MARGIN_MS: '60000',
      // The continuation (an asynchronous Invoke of this function) goes to the Runtime API's Invoke route.
      AWS_ENDPOINT_URL_LAMBDA: api.endpoint,
    }));
    const lines = rows.map((x, r) => JSON.stringify({ id: `r${r}`, x }));
    const inputKey = `${input.prefix}/${MODEL}/ric.jsonl`;
    const call = (event: unknown, timeoutMs: number) => invokeOn(runtime, batchClient, event, timeoutMs);
    const scored = await call(await uploadWithEvent(inputKey, `${lines.join('\n')}\n`), 900_000);
    const invalid = await call({ nothing: 'to score' }, 900_000);
    const shortDeadline = await call(
      await uploadWithEvent(`${input.prefix}/${MODEL}/ric-short.jsonl`, `${lines.join('\n')}\n`),
      20_000,
    );
    batch = {
      scored,
      invalid,
      shortDeadline,
      asyncInvocations: runtime.asyncInvocations,
      functionName: String(batchFn.Properties?.FunctionName),
      output: batchClient.output(),
      inputKey,
      outputPrefix: output.prefix,
    };
  }

  // A handler that is not there: the runtime client reports an init error and exits.
  {
    const { api, client } = await runtimeFor(inferLayout, undefined, 'functions/infer/handler.missing');
    const reported = await api.initError;
    initError = { ...reported, exit: await client.exited };
  }
}, 600_000);

afterAll(async () => {
  for (const client of clients) await client.stop();
  for (const api of apis) await api.close();
  await s3?.close();
  for (const layout of layouts) await layout.dispose();
});

function httpResult(outcome: Outcome): { status: number; body: Record<string, unknown> } {
  if (outcome.kind !== 'response') throw new Error(`the invocation failed: ${JSON.stringify(outcome.body)}`);
  const result = outcome.body as { statusCode: number; body: string; isBase64Encoded?: boolean };
  expect(result.isBase64Encoded).toBe(false);
  return { status: result.statusCode, body: JSON.parse(result.body) as Record<string, unknown> };
}

describe('the packaged functions under aws-lambda-ric on Node 22', () => {
  it('answers an inference with the model from S3', () => {
    const { status, body } = httpResult(infer.ok);
    expect(status).toBe(200);
    const [y] = body.outputs as { name: string; shape: number[]; data: number[] }[];
    expect(y?.name).toBe('y');
    expect(y?.shape).toEqual([2, LINEAR_OUT]);
    rows
      .slice(0, 2)
      .flatMap(linear)
      .forEach((value, i) => {
        expect(y?.data[i]).toBeCloseTo(value, 5);
      });
  });

  it('maps bad input to 400 and an unknown model to 404, naming what is wrong', () => {
    const bad = httpResult(infer.badInput);
    expect(bad.status).toBe(400);
    expect(String(bad.body.error)).toMatch(/input 'x'/);
    const unknown = httpResult(infer.unknownModel);
    expect(unknown.status).toBe(404);
    expect(String(unknown.body.error)).toContain(MODEL);
  });

  it('hands the request id and trace header to the function, and prints no AWS SDK Node version warning', () => {
    // Powertools' log lines carry the context's request id and the trace id the client put in
    // _X_AMZN_TRACE_ID, both from the headers of the Runtime API's answer.
    const loaded = infer.output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => line.message === 'model loaded');
    expect(loaded).toMatchObject({
      function_request_id: infer.ok.invocation.requestId,
      function_arn: infer.ok.invocation.functionArn,
      xray_trace_id: /Root=([^;]+)/.exec(infer.ok.invocation.traceId)?.[1],
    });
    expect(infer.output).not.toMatch(/NodeVersionSupportWarning/);
    expect(batch.output).not.toMatch(/NodeVersionSupportWarning/);
  });

  it('scores an uploaded batch input into the output prefix', async () => {
    expect(batch.scored).toMatchObject({ kind: 'response', body: { outcomes: [{ status: 'succeeded' }] } });
    const name = batch.inputKey.split('/').pop()?.replace('.jsonl', '');
    const results = (await getText(`${batch.outputPrefix}/${MODEL}/${name}.out.jsonl`))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { id: string; outputs: { y: number[] | number[][] } });
    expect(results.map((r) => r.id)).toEqual(rows.map((_, r) => `r${r}`));
    results.forEach((result, r) => {
      linear(rows[r] ?? []).forEach((value, c) => {
        expect(result.outputs.y.flat()[c]).toBeCloseTo(value, 5);
      });
    });
  });

  it('reports an event the batch door cannot read as an invocation error of that type', () => {
    // The documented error document; the Lambda-Runtime-Function-Error-Type header is optional, and the
    // native client of aws-lambda-ric 4.0.2 does not send it for invocation errors.
    expect(batch.invalid).toMatchObject({
      kind: 'error',
      body: {
        errorType: 'InvalidBatchEventError',
        errorMessage: expect.stringMatching(/neither an S3 event/),
        trace: expect.any(Array),
      },
    });
  });

  it('reads the deadline header: with 20 s left and a 60 s margin it continues after one part', () => {
    expect(batch.shortDeadline).toMatchObject({
      kind: 'response',
      body: { outcomes: [{ status: 'continued', hop: 1, parts: 1 }] },
    });
    expect(batch.asyncInvocations).toEqual([
      {
        functionName: batch.functionName,
        payload: {
          onnxServerlessBatch: {
            action: 'run',
            object: expect.objectContaining({ key: expect.stringMatching(/ric-short\.jsonl$/) }),
            hop: 1,
          },
        },
      },
    ]);
  });

  it('reports a missing handler as an init error and exits', () => {
    expect(initError.errorType).toBe('Runtime.HandlerNotFound');
    expect(initError.exit).not.toBe(0);
  });
});
