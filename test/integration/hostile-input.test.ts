/**
 * The hostile-input table (issue 10): requests a hostile client sends, through both doors, the node:http
 * server and the infer Lambda handler with API Gateway v2 events, over the same repository and the real
 * onnxruntime-node. Each row must answer its expected status with a message that names the field at
 * fault: never a 500, never a dead process (both doors still serve a valid request at the end).
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { type RunningServer, startHttpServer } from '../../functions/server/http-server';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime';
import { buildAddModel, buildLinearModel } from '../../tools/onnx/model-builder';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { serverConfig, writeRepository } from '../support/server-harness';

interface Row {
  readonly name: string;
  readonly method?: string;
  readonly path: string;
  readonly body?: string | Uint8Array;
  readonly headers?: Record<string, string>;
  readonly status: number;
  readonly error: RegExp;
}

const utf8 = new TextEncoder();
const X = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const LINEAR = '/v2/models/linear/infer';
const ADD = '/v2/models/add/infer';
const json = (value: unknown) => JSON.stringify(value);
const x = (fields: Record<string, unknown> = {}) => ({
  name: 'x',
  datatype: 'FP32',
  shape: [1, 10],
  data: X,
  ...fields,
});
const infer = (inputs: unknown[], extra: Record<string, unknown> = {}) => json({ inputs, ...extra });
/** A binary body: the JSON header, then `bytes`; the header length is `claimed` when given. */
function binary(
  header: unknown,
  bytes: number,
  claimed?: number,
): { body: Uint8Array; headers: Record<string, string> } {
  const head = utf8.encode(json(header));
  const body = new Uint8Array(head.byteLength + bytes);
  body.set(head);
  return {
    body,
    headers: {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(claimed ?? head.byteLength),
    },
  };
}
const binaryX = (size: number) => ({
  name: 'x',
  datatype: 'FP32',
  shape: [1, 10],
  parameters: { binary_data_size: size },
});
const addInput = (name: string, size: number) => ({
  name,
  datatype: 'FP32',
  shape: [1, 4],
  parameters: { binary_data_size: size },
});
const deep = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

const ROWS: readonly Row[] = [
  // Malformed bodies.
  {
    name: 'malformed JSON',
    path: LINEAR,
    body: '{"inputs": [',
    status: 400,
    error: /^the request's JSON is not valid JSON/,
  },
  {
    name: 'an empty body',
    path: LINEAR,
    body: '',
    status: 400,
    error: /^the request's JSON is not valid JSON/,
  },
  {
    name: 'non-UTF-8 bytes',
    path: LINEAR,
    body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
    status: 400,
    error: /^the request's JSON is not valid UTF-8$/,
  },
  {
    name: 'a JSON array as the request',
    path: LINEAR,
    body: '[]',
    status: 400,
    error: /^the request's JSON must be an object$/,
  },
  { name: 'no inputs', path: LINEAR, body: '{}', status: 400, error: /^the request has no 'inputs'$/ },
  // Wrong types at every field.
  {
    name: 'inputs a number',
    path: LINEAR,
    body: json({ inputs: 5 }),
    status: 400,
    error: /^'inputs' must be an array of tensors$/,
  },
  {
    name: 'an input a number',
    path: LINEAR,
    body: infer([5]),
    status: 400,
    error: /^inputs\[0\] must be an object$/,
  },
  {
    name: 'name a number',
    path: LINEAR,
    body: infer([x({ name: 7 })]),
    status: 400,
    error: /^inputs\[0\]: 'name' must be a non-empty string$/,
  },
  {
    name: 'an unknown datatype',
    path: LINEAR,
    body: infer([x({ datatype: 'FLOAT' })]),
    status: 400,
    error: /^input 'x': datatype 'FLOAT' is not one of BOOL/,
  },
  {
    name: 'datatype a number',
    path: LINEAR,
    body: infer([x({ datatype: 5 })]),
    status: 400,
    error: /^input 'x': datatype 5 is not one of/,
  },
  {
    name: 'no datatype',
    path: LINEAR,
    body: infer([x({ datatype: undefined })]),
    status: 400,
    error: /^input 'x': 'datatype' is missing/,
  },
  {
    name: 'shape a string',
    path: LINEAR,
    body: infer([x({ shape: '1,10' })]),
    status: 400,
    error: /^input 'x': 'shape' must be an array of dims, got "1,10"$/,
  },
  {
    name: 'data a number',
    path: LINEAR,
    body: infer([x({ data: 5 })]),
    status: 400,
    error: /^input 'x': 'data' must be an array$/,
  },
  {
    name: 'id a number',
    path: LINEAR,
    body: infer([x()], { id: 5 }),
    status: 400,
    error: /^'id' must be a string$/,
  },
  {
    name: 'parameters an array',
    path: LINEAR,
    body: infer([x()], { parameters: [] }),
    status: 400,
    error: /^request 'parameters' must be an object$/,
  },
  {
    name: 'binary_data_output a string',
    path: LINEAR,
    body: infer([x()], { parameters: { binary_data_output: 'yes' } }),
    status: 400,
    error: /binary_data_output must be true or false$/,
  },
  {
    name: 'outputs an object',
    path: LINEAR,
    body: infer([x()], { outputs: {} }),
    status: 400,
    error: /^'outputs' must be an array$/,
  },
  {
    name: 'an output without a name',
    path: LINEAR,
    body: infer([x()], { outputs: [{}] }),
    status: 400,
    error: /^outputs\[0\]: 'name' must be a non-empty string$/,
  },
  {
    name: 'a null element',
    path: LINEAR,
    body: infer([x({ data: [null, ...X.slice(1)] })]),
    status: 400,
    error: /^input 'x': element 0 \(null\) is not a finite number$/,
  },
  {
    name: 'a string element',
    path: LINEAR,
    body: infer([x({ data: ['1', ...X.slice(1)] })]),
    status: 400,
    error: /^input 'x': element 0 \("1"\) is not a finite number$/,
  },
  // Huge, negative, fractional and non-finite shapes; shape and data that disagree.
  {
    name: 'a negative dim',
    path: LINEAR,
    body: infer([x({ shape: [-1, 10] })]),
    status: 400,
    error: /^input 'x': dim 0 of shape is -1, not a non-negative integer$/,
  },
  {
    name: 'a fractional dim',
    path: LINEAR,
    body: infer([x({ shape: [1, 2.5] })]),
    status: 400,
    error: /^input 'x': dim 1 of shape is 2\.5, not a non-negative integer$/,
  },
  {
    name: 'a "NaN" dim',
    path: LINEAR,
    body: infer([x({ shape: ['NaN', 10] })]),
    status: 400,
    error: /^input 'x': dim 0 of shape is "NaN"/,
  },
  {
    name: 'an overflowing dim (1e999)',
    path: LINEAR,
    body: infer([x()]).replace('[1,10]', '[1e999,10]'),
    status: 400,
    error: /^input 'x': dim 0 of shape is Infinity/,
  },
  {
    name: 'a dim beyond 2^53',
    path: LINEAR,
    body: infer([x({ shape: [2 ** 60, 10] })]),
    status: 400,
    error: /^input 'x': dim 0 of shape is 1152921504606847000, not a non-negative integer$/,
  },
  {
    name: 'huge dims',
    path: LINEAR,
    body: infer([x({ shape: [1e15, 10], data: [] })]),
    status: 413,
    error: /^input 'x': shape \[1000000000000000,10\] holds 10000000000000000 elements, over the limit of/,
  },
  {
    name: 'a zero dim',
    path: LINEAR,
    body: infer([x({ shape: [0, 10], data: [] })]),
    status: 400,
    error: /^input 'x': dim 0 is 0 \(an empty tensor/,
  },
  {
    name: 'too few data',
    path: LINEAR,
    body: infer([x({ data: [1, 2, 3] })]),
    status: 400,
    error: /^input 'x': shape \[1,10\] holds 10 elements but data has 3$/,
  },
  {
    name: 'nesting unlike the shape',
    path: LINEAR,
    body: infer([
      x({
        data: [
          [1, 2],
          [3, 4],
        ],
      }),
    ]),
    status: 400,
    error: /^input 'x': nested data has shape \[2,2\] but 'shape' is \[1,10\]$/,
  },
  {
    name: 'a wrong fixed dim',
    path: LINEAR,
    body: infer([x({ shape: [1, 9], data: X.slice(1) })]),
    status: 400,
    error: /^input 'x': dim 1 is 9 but the model takes 10/,
  },
  // Prototype names wherever a client names something.
  ...['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'].flatMap((p): Row[] => [
    {
      name: `"${p}" as FP32 data`,
      path: LINEAR,
      body: infer([x({ data: [p, ...X.slice(1)] })]),
      status: 400,
      error: new RegExp(`^input 'x': element 0 \\("${p}"\\) is not a finite number$`),
    },
    {
      name: `"${p}" as an input name`,
      path: LINEAR,
      body: infer([x({ name: p })]),
      status: 400,
      error: new RegExp(`^the model has no input '${p}' \\(inputs: x\\)$`),
    },
    {
      name: `"${p}" as an output name`,
      path: LINEAR,
      body: infer([x()], { outputs: [{ name: p }] }),
      status: 400,
      error: new RegExp(`^the model has no output '${p}' \\(outputs: y\\)$`),
    },
    {
      name: `"${p}" as a /predict input`,
      path: '/v2/models/linear/predict',
      body: `{"${p}": [${json(X)}]}`,
      status: 400,
      error: new RegExp(`^the model has no input '${p}'`),
    },
    {
      name: `"${p}" as a model name`,
      path: `/v2/models/${p}/infer`,
      body: infer([x()]),
      status: 404,
      error: new RegExp(`^model '${p}' (not found|is not a valid model name)`),
    },
    {
      name: `"${p}" as a version`,
      path: `/v2/models/linear/versions/${p}/infer`,
      body: infer([x()]),
      status: 404,
      error: new RegExp(`^model 'linear' has no version '${p}' \\(versions are positive integers\\)$`),
    },
  ]),
  {
    name: 'a version that does not exist',
    path: '/v2/models/linear/versions/99/infer',
    body: infer([x()]),
    status: 404,
    error: /^model 'linear' has no version '99'$/,
  },
  // Path traversal and bad encodings in names.
  {
    name: 'traversal in the model name',
    path: '/v2/models/..%2F..%2Fetc%2Fpasswd/infer',
    body: infer([x()]),
    status: 404,
    error: /^model '\.\.\/\.\.\/etc\/passwd' is not a valid model name/,
  },
  {
    name: '".." as the model name',
    path: '/v2/models/%2E%2E/infer',
    body: infer([x()]),
    status: 404,
    error: /^model '\.\.' is not a valid model name/,
  },
  {
    name: 'traversal in the version',
    path: '/v2/models/linear/versions/..%2F1/infer',
    body: infer([x()]),
    status: 404,
    error: /^model 'linear' has no version '\.\.\/1'/,
  },
  {
    name: 'a non-UTF-8 percent-encoding',
    path: '/v2/models/%FF/infer',
    body: infer([x()]),
    status: 400,
    error: /^path segment '%FF' is not valid percent-encoding$/,
  },
  {
    name: 'an unknown route',
    path: '/v2/models/linear/explode',
    body: '{}',
    status: 404,
    error: /^no route for POST/,
  },
  { name: 'a wrong method', method: 'DELETE', path: LINEAR, status: 405, error: /^DELETE is not allowed on/ },
  // Deep nesting.
  {
    name: '/predict nested 100,000 deep',
    path: '/v2/models/linear/predict',
    body: deep(100_000),
    status: 400,
    error: /^input 'x': data is nested deeper than the model's rank 2/,
  },
  {
    name: 'a shape of 20,000 ones, nested to match',
    path: LINEAR,
    body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[${Array(20_000).fill(1).join(',')}],"data":${deep(20_000)}}]}`,
    status: 400,
    error: /^input 'x': shape has 20000 dims, more than the 32/,
  },
  {
    name: 'data nested 100,000 deep',
    path: LINEAR,
    body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,10],"data":${deep(100_000)}}]}`,
    status: 400,
    error: /^input 'x': nested data has shape \[1,1,1\] but 'shape' is \[1,10\]$/,
  },
  {
    name: 'parameters nested 100,000 deep',
    path: LINEAR,
    body: `{"parameters":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)},"inputs":[{"name":"x","datatype":"FP32","shape":[1,10],"data":[${X}]}]}`,
    status: 200,
    error: /./,
  },
  {
    name: '/predict null',
    path: '/v2/models/linear/predict',
    body: 'null',
    status: 400,
    error: /^the request body must be a nested array or an object/,
  },
  // Binary header lies.
  {
    name: 'a header length past the body',
    path: LINEAR,
    ...binary({ inputs: [binaryX(40)] }, 40, 5000),
    status: 400,
    error: /is shorter than its Inference-Header-Content-Length 5000$/,
  },
  {
    name: 'a header length that is not a number',
    path: LINEAR,
    body: infer([x()]),
    headers: { 'inference-header-content-length': 'abc' },
    status: 400,
    error: /^Inference-Header-Content-Length 'abc' is not a non-negative integer$/,
  },
  {
    name: 'a negative header length',
    path: LINEAR,
    body: infer([x()]),
    headers: { 'inference-header-content-length': '-5' },
    status: 400,
    error: /^Inference-Header-Content-Length '-5' is not a non-negative integer$/,
  },
  {
    name: 'a header length cutting the JSON',
    path: LINEAR,
    ...binary({ inputs: [binaryX(40)] }, 40, 10),
    status: 400,
    error: /^the request's JSON is not valid JSON/,
  },
  {
    name: 'binary_data_size past the body',
    path: LINEAR,
    ...binary({ inputs: [binaryX(400)] }, 40),
    status: 400,
    error: /^input 'x': binary_data_size 400 runs past the end of the body \(40 bytes left\)$/,
  },
  {
    name: 'binary_data_size unlike the shape',
    path: LINEAR,
    ...binary({ inputs: [binaryX(8)] }, 8),
    status: 400,
    error: /^input 'x': binary_data_size is 8 but shape \[1,10\] of FP32 takes 40 bytes$/,
  },
  {
    name: 'binary sizes that overlap the body',
    path: ADD,
    ...binary({ inputs: [addInput('a', 16), addInput('b', 16)] }, 16),
    status: 400,
    error: /^input 'b': binary_data_size 16 runs past the end of the body \(0 bytes left\)$/,
  },
  {
    name: 'binary sizes short of the body',
    path: ADD,
    ...binary({ inputs: [addInput('a', 16), addInput('b', 16)] }, 40),
    status: 400,
    error: /^8 bytes are left over after the JSON header and the binary inputs$/,
  },
  {
    name: 'a negative binary_data_size',
    path: LINEAR,
    ...binary({ inputs: [binaryX(-40)] }, 40),
    status: 400,
    error: /^input 'x': parameters.binary_data_size must be a non-negative integer$/,
  },
  {
    name: 'binary_data_size without the header',
    path: LINEAR,
    body: infer([binaryX(40)]),
    status: 400,
    error:
      /^input 'x' has parameters.binary_data_size but there is no Inference-Header-Content-Length header$/,
  },
  {
    name: 'data and binary_data_size both',
    path: LINEAR,
    ...binary({ inputs: [{ ...binaryX(40), data: X }] }, 40),
    status: 400,
    error: /^input 'x' has both 'data' and parameters.binary_data_size$/,
  },
  {
    name: 'a raw binary body for a two-input model',
    path: ADD,
    body: new Uint8Array(32),
    headers: { 'inference-header-content-length': '0' },
    status: 400,
    error:
      /^a raw binary request \(Inference-Header-Content-Length: 0\) needs a model with one input; this one has 2 \(a, b\)/,
  },
  {
    name: 'a raw binary body of torn rows',
    path: LINEAR,
    body: new Uint8Array(30),
    headers: { 'inference-header-content-length': '0' },
    status: 400,
    error: /^input 'x': binary_data_size is 30 but shape \[1,10\] of FP32 takes 40 bytes$/,
  },
  // Caps.
  {
    name: 'a body over the cap',
    path: LINEAR,
    body: ' '.repeat(1024 * 1024 + 1),
    status: 413,
    error: /over the limit of 1048576/,
  },
];

let dir: string;
let runtime: Runtime;
let server: RunningServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hostile-input-'));
  await writeRepository(join(dir, 'models'), [
    { name: 'linear', bytes: buildLinearModel(), config: { maxBatchSize: 4 } },
    { name: 'add', bytes: buildAddModel(), config: { maxBatchSize: 8 } },
  ]);
  const config = serverConfig(join(dir, 'models'), { ONNX_SERVE_MAX_BODY_MB: '1' });
  runtime = createRuntime(config);
  server = await startHttpServer({
    app: runtime.app,
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: config.limits.maxBodyBytes,
    requestTimeoutMs: 30_000,
    shutdownGraceMs: 1000,
  });
});

afterAll(async () => {
  await server?.close();
  await runtime?.cache.clear();
  await rm(dir, { recursive: true, force: true });
});

/** One request over its own connection, the path sent exactly as written (no URL normalisation). */
function overHttp(row: Row): Promise<{ status: number; text: string }> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path: row.path,
        method: row.method ?? 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', ...row.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(row.body === undefined ? undefined : Buffer.from(row.body));
  });
}

async function overLambda(row: Row): Promise<{ status: number; text: string }> {
  const handler = createInferHandler(runtime);
  const event = apiEvent('http-v2', row.method ?? 'POST', row.path, {
    ...(row.body === undefined ? {} : { body: row.body }),
    ...(row.headers === undefined ? {} : { headers: row.headers }),
  });
  const result = (await handler(event, lambdaContext())) as APIGatewayProxyResult;
  return { status: result.statusCode, text: result.isBase64Encoded ? '' : result.body };
}

describe.each([
  ['HTTP server', overHttp],
  ['Lambda handler (API Gateway v2)', overLambda],
] as const)('hostile input through the %s', (_door, send) => {
  it.each(ROWS.map((row) => [row.name, row] as const))('%s', async (_name, row) => {
    const { status, text } = await send(row);
    expect(status).toBeLessThan(500);
    expect(status).toBe(row.status);
    if (status >= 400) expect((JSON.parse(text) as { error: string }).error).toMatch(row.error);
  });

  it('still answers a valid request afterwards', async () => {
    const { status, text } = await send({
      name: 'valid',
      path: LINEAR,
      body: infer([x()]),
      status: 200,
      error: /./,
    });
    expect(status).toBe(200);
    expect((JSON.parse(text) as { outputs: { shape: number[] }[] }).outputs[0]?.shape).toEqual([1, 2]);
  });
});
