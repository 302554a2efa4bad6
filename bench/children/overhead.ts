/**
 * The request-overhead loops, warm and in one process (spawned by bench/parts/request-overhead.ts):
 *
 *   node dist/bench/children/overhead.js <spec.json>
 *
 * For each case: the bundled infer handler invoked with a real API Gateway v2 event (JSON, or the OIP binary
 * extension base64-encoded as API Gateway delivers it), against `session.run` on a prebuilt tensor of the
 * same input, on a session created from the same file with the options the engine uses (and a second
 * such session as a control). Blocks of the loops alternate so all see the same machine. Prints one line of {@link OverheadCaseReport}s.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import * as ort from 'onnxruntime-node';
import { decodeInferResponse, encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { apiEvent, lambdaContext } from '../../test/support/api-gateway';
import { reportResult } from '../lib/child';
import { benchInput, elements } from '../lib/input';
import type { OverheadCase, OverheadCaseReport, OverheadSpec, RoundFigures } from '../lib/overhead-protocol';
import { servedOrtSessionOptions } from '../lib/serving-session';

type Handler = (event: unknown, context: Context) => Promise<APIGatewayProxyResult>;

/**
 * The engine time of the last invocation, as the handler reports it: its `InferenceTime` metric (CloudWatch
 * EMF, written to stdout per invocation). Handler time minus this is what the door and the core add around
 * the very same session's run, free of the session-to-session spread.
 */
let lastInferenceMs = Number.NaN;
const INFERENCE_TIME = /"InferenceTime":([0-9.e+-]+)/;
const write = process.stdout.write.bind(process.stdout) as (chunk: unknown, ...rest: unknown[]) => boolean;
process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
  const match = typeof chunk === 'string' ? INFERENCE_TIME.exec(chunk) : null;
  if (match?.[1] !== undefined) lastInferenceMs = Number(match[1]);
  return write(chunk, ...rest);
}) as typeof process.stdout.write;

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (specFile === undefined) throw new Error('usage: overhead.js <spec.json>');
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as OverheadSpec;
  const { handler } = require(spec.handler) as { handler: Handler };
  const sessions = new Map<string, RawSessions>();
  const reports: OverheadCaseReport[] = [];
  for (const c of spec.cases) reports.push(await measureCase(spec, c, handler, sessions));
  reportResult(reports);
}

/** A session on bytes it reads its weights from: the bytes must stay referenced while it lives. */
interface RawSession {
  readonly session: ort.InferenceSession;
  readonly bytes: Uint8Array;
}

/**
 * Per model: `raw`, created before the handler loads the model, and `control`, created after it. Two
 * sessions of one file in one process run at different speeds (the first created tends to be the
 * fastest, by up to about 10% here), so the baseline takes the favoured place and the control shows the
 * size of that effect.
 */
interface RawSessions {
  readonly raw: RawSession;
  readonly control: RawSession;
}

async function measureCase(
  spec: OverheadSpec,
  c: OverheadCase,
  handler: Handler,
  sessions: Map<string, RawSessions>,
): Promise<OverheadCaseReport> {
  const data = benchInput(elements(c.input.shape));
  const event = requestEvent(c, data);
  const invoke = async () => {
    const context = lambdaContext(30_000);
    lastInferenceMs = Number.NaN;
    return handler(event, context);
  };
  let pair = sessions.get(c.model);
  let first: APIGatewayProxyResult;
  if (pair === undefined) {
    const file = join(spec.repository, c.model, '1', 'model.ort');
    const raw = await rawSession(file);
    first = await invoke();
    pair = { raw, control: await rawSession(file) };
    sessions.set(c.model, pair);
  } else {
    first = await invoke();
  }
  const answer = outputOf(first);
  const feeds = { [c.input.name]: new ort.Tensor('float32', data, [...c.input.shape]) };
  const { raw, control } = pair;
  const outputName = raw.session.outputNames[0] as string;
  const expected = (await raw.session.run(feeds))[outputName]?.data as Float32Array;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i] as number;
    if (!(Math.abs((answer[i] ?? Number.NaN) - e) <= 1e-5 + 1e-4 * Math.abs(e))) {
      throw new Error(
        `${c.model} (${c.payload}): the handler answered ${answer[i]} at [${i}], session.run ${e}`,
      );
    }
  }
  const loops = [invoke, () => raw.session.run(feeds), () => control.session.run(feeds)];
  for (let i = 0; i < spec.warmup; i++) {
    for (const loop of loops) await loop();
  }
  const rounds: RoundFigures[][] = loops.map(() => []);
  const engineRounds: RoundFigures[] = [];
  for (let round = 0; round < spec.rounds; round++) {
    const engineTimes: number[] = [];
    const afterInvoke = () => {
      if (!Number.isFinite(lastInferenceMs)) throw new Error('the handler reported no InferenceTime metric');
      engineTimes.push(lastInferenceMs);
    };
    const figures = await timeInterleaved(loops, c.iterations, afterInvoke);
    for (const [i, f] of figures.entries()) rounds[i]?.push(f);
    engineRounds.push(figuresOf(engineTimes));
  }
  return {
    model: c.model,
    payload: c.payload,
    requestBytes: event.body?.length ?? 0,
    responseBytes: first.body.length,
    handler: rounds[0] ?? [],
    handlerEngine: engineRounds,
    raw: rounds[1] ?? [],
    control: rounds[2] ?? [],
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
async function rawSession(file: string): Promise<RawSession> {
  const buffer = readFileSync(file);
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const session = await ort.InferenceSession.create(bytes, servedOrtSessionOptions());
  return { session, bytes };
}

/**
 * Blocks of the loops alternate, so a burst of load elsewhere on the machine hits them alike. Blocks are
 * long because each loop runs its own session: onnxruntime's intra-op threads spin for a while after a
 * run, and on two cores the first runs of a session after another one's block are slowed by them (blocks
 * of 10 here made an identical second session look 35-60% slower at p50; blocks of 50, about 2%).
 */
const BLOCK = 50;

/** Times `loops` in alternating blocks; `afterFirst` runs (untimed) after each call of the first loop. */
async function timeInterleaved(
  loops: readonly (() => Promise<unknown>)[],
  iterations: number,
  afterFirst: () => void,
): Promise<RoundFigures[]> {
  const times: number[][] = loops.map(() => []);
  for (let done = 0; done < iterations; done += BLOCK) {
    const block = Math.min(BLOCK, iterations - done);
    for (const [i, loop] of loops.entries()) {
      await timeBlock(loop, block, times[i] as number[], i === 0 ? afterFirst : undefined);
    }
  }
  return times.map(figuresOf);
}

async function timeBlock(
  call: () => Promise<unknown>,
  count: number,
  into: number[],
  after: (() => void) | undefined,
): Promise<void> {
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await call();
    into.push(performance.now() - start);
    after?.();
  }
}

function figuresOf(times: number[]): RoundFigures {
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
