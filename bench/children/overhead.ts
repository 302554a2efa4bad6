/**
 * The request-overhead loops, warm and in one process (spawned by bench/parts/request-overhead.ts):
 *
 *   node dist/bench/children/overhead.js <spec.json>
 *
 * For each case: the bundled infer handler invoked with a real API Gateway v2 event (JSON, or the OIP binary
 * extension base64-encoded as API Gateway delivers it), against `session.run` on a prebuilt tensor of the
 * same input, on a session created from the same file with the options the engine uses. Blocks of the
 * two loops alternate so both see the same machine. Prints one line of {@link OverheadCaseReport}s.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import * as ort from 'onnxruntime-node';
import { decodeInferResponse, encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { apiEvent, lambdaContext } from '../../test/support/api-gateway';
import { reportResult } from '../lib/child';
import { benchInput, elements } from '../lib/input';
import type { OverheadCase, OverheadCaseReport, OverheadSpec, RoundFigures } from '../lib/overhead-protocol';

type Handler = (event: unknown, context: Context) => Promise<APIGatewayProxyResult>;

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (specFile === undefined) throw new Error('usage: overhead.js <spec.json>');
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as OverheadSpec;
  const { handler } = require(spec.handler) as { handler: Handler };
  const reports: OverheadCaseReport[] = [];
  for (const c of spec.cases) reports.push(await measureCase(spec, c, handler));
  reportResult(reports);
}

async function measureCase(
  spec: OverheadSpec,
  c: OverheadCase,
  handler: Handler,
): Promise<OverheadCaseReport> {
  const data = benchInput(elements(c.input.shape));
  const event = requestEvent(c, data);
  const invoke = async () => {
    const context = lambdaContext(30_000);
    return handler(event, context);
  };
  const first = await invoke();
  const answer = outputOf(first);

  const session = await rawSession(join(spec.repository, c.model, '1', 'model.ort'));
  const feeds = { [c.input.name]: new ort.Tensor('float32', data, [...c.input.shape]) };
  const outputName = session.outputNames[0] as string;
  const expected = (await session.run(feeds))[outputName]?.data as Float32Array;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i] as number;
    if (!(Math.abs((answer[i] ?? Number.NaN) - e) <= 1e-5 + 1e-4 * Math.abs(e))) {
      throw new Error(
        `${c.model} (${c.payload}): the handler answered ${answer[i]} at [${i}], session.run ${e}`,
      );
    }
  }
  const raw = () => session.run(feeds);

  for (let i = 0; i < spec.warmup; i++) {
    await invoke();
    await raw();
  }
  const handlerRounds: RoundFigures[] = [];
  const rawRounds: RoundFigures[] = [];
  for (let round = 0; round < spec.rounds; round++) {
    const [h, r] = await timeInterleaved(invoke, raw, c.iterations);
    handlerRounds.push(h);
    rawRounds.push(r);
  }
  await session.release();
  return {
    model: c.model,
    payload: c.payload,
    requestBytes: event.body?.length ?? 0,
    responseBytes: first.body.length,
    handler: handlerRounds,
    raw: rawRounds,
  };
}

function requestEvent(c: OverheadCase, data: Float32Array) {
  const path = `/v2/models/${c.model}/infer`;
  const input = { name: c.input.name, datatype: 'FP32' as const, shape: c.input.shape, data };
  if (c.payload === 'json') {
    const body = JSON.stringify({ inputs: [{ ...input, data: Array.from(data) }] });
    return apiEvent('http-v2', 'POST', path, { body });
  }
  const encoded = encodeInferRequest({ inputs: [input], binaryOutputDefault: true }, { binaryInputs: true });
  return apiEvent('http-v2', 'POST', path, { body: encoded.body, headers: encoded.headers });
}

function outputOf(result: APIGatewayProxyResult): ArrayLike<number> {
  if (result.statusCode !== 200) throw new Error(`the handler answered ${result.statusCode}: ${result.body}`);
  if (!result.isBase64Encoded) {
    return (JSON.parse(result.body) as { outputs: { data: number[] }[] }).outputs[0]?.data ?? [];
  }
  const header = result.headers?.['inference-header-content-length'];
  const response = decodeInferResponse(
    Buffer.from(result.body, 'base64'),
    header === undefined ? undefined : String(header),
  );
  return (response.outputs[0]?.data ?? []) as Float32Array;
}

/** The session the engine would create for an ORT file used in place (ort-engine.ts, model defaults). */
function rawSession(file: string): Promise<ort.InferenceSession> {
  const bytes = readFileSync(file);
  return ort.InferenceSession.create(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    intraOpNumThreads: availableParallelism(),
    interOpNumThreads: 1,
    extra: {
      session: {
        use_ort_model_bytes_directly: '1',
        use_ort_model_bytes_for_initializers: '1',
        disable_prepacking: '1',
      },
    },
  });
}

/** Blocks of the two loops alternate, so a burst of load elsewhere on the machine hits both alike. */
const BLOCK = 10;

async function timeInterleaved(
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  iterations: number,
): Promise<[RoundFigures, RoundFigures]> {
  const timesA: number[] = [];
  const timesB: number[] = [];
  while (timesA.length < iterations) {
    const block = Math.min(BLOCK, iterations - timesA.length);
    await timeBlock(a, block, timesA);
    await timeBlock(b, block, timesB);
  }
  return [figures(timesA), figures(timesB)];
}

async function timeBlock(call: () => Promise<unknown>, count: number, into: number[]): Promise<void> {
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await call();
    into.push(performance.now() - start);
  }
}

function figures(times: number[]): RoundFigures {
  const sorted = [...times].sort((x, y) => x - y);
  const at = (p: number) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] as number;
  return { p50: at(0.5), p99: at(0.99) };
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
