/**
 * The Lambda door's deadline promise with the real onnxruntime-node and a real CNN (PaddleOCR's
 * text-direction classifier) fed a large image: onnxruntime runs on the calling thread, so a run that
 * starts holds the thread past any timer. The door must decide before the run. Assertions are about
 * causality (no run was started for a refused request), never about wall-clock durations.
 *
 * Nothing here depends on the machine's speed: the handler's clock and the invocation's remaining time
 * move only by the runs' own durations and by what a store wrapper adds, every budget is derived from the
 * run times the service itself recorded (or is far beyond anything the test could take), and the door's
 * wall-clock timer (which answers while a request waits on I/O) is a fake that never fires, so a slow
 * config read or body decode on a busy machine cannot turn a run the estimate admits into a 504.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { parseConfig } from '../../shared/core/config';
import type { InferenceEngine, LoadedModel, ModelStore } from '../../shared/core/ports';
import { encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { createRuntime } from '../../shared/runtime/runtime';
import { textDirectionModelPath } from '../../tools/sample-models';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { RecordingTelemetry } from '../support/fakes';
import { sha256 } from '../support/model-repository';

const MARGIN_MS = 250;
/**
 * "Time enough for any run": far beyond what any run of this test could take (it times out long before),
 * so no estimate, even one scaled up from a slow first warm-up run, can refuse the request.
 */
const AMPLE_MS = 1e9;

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'lambda-deadline-'));
  const onnx = await readFile(textDirectionModelPath());
  await mkdir(join(root, 'cls', '1'), { recursive: true });
  await writeFile(join(root, 'cls', '1', 'model.onnx'), onnx);
  const versions = { '1': { sha256: sha256(onnx), size: onnx.byteLength } };
  await writeFile(
    join(root, 'cls', 'config.json'),
    JSON.stringify({ name: 'cls', maxBatchSize: 4, versions }),
  );
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

// The door's timer (setTimeout, real time) is not what these tests are about, and with real time it fires
// on a busy machine whenever reading and decoding a request takes longer than a small budget on the
// handler's clock. Only setTimeout is faked: onnxruntime's setImmediate and file I/O stay real.
beforeEach(() => {
  jest.useFakeTimers({
    doNotFake: [
      'Date',
      'hrtime',
      'nextTick',
      'performance',
      'queueMicrotask',
      'setImmediate',
      'clearImmediate',
      'setInterval',
      'clearInterval',
    ],
  });
});

afterEach(() => {
  jest.useRealTimers();
});

/**
 * The real engine, counting the runs it is asked for (warm-up runs included) and moving the handler's
 * clock by each run's real duration.
 */
class CountingEngine implements InferenceEngine {
  runs = 0;
  readonly #inner = new OrtEngine({ defaultIntraOpThreads: 1 });
  constructor(private readonly advance: (ms: number) => void) {}

  async load(...args: Parameters<InferenceEngine['load']>): Promise<LoadedModel> {
    const model = await this.#inner.load(...args);
    return {
      signature: model.signature,
      provider: model.provider,
      run: async (feeds, outputs) => {
        this.runs += 1;
        const started = performance.now();
        try {
          return await model.run(feeds, outputs);
        } finally {
          this.advance(performance.now() - started);
        }
      },
      release: () => model.release(),
    };
  }
}

/**
 * The infer door over the real file store and engine. The handler's clock is the test's: it moves only by
 * the real duration of each onnxruntime run and by what a store wrapper adds (`skew`, standing for a slow
 * download or read), so the time left at each decision is known exactly and the test never sleeps.
 */
function harness(
  wrapStore: (store: ModelStore, skew: (ms: number) => void) => ModelStore = (s) => s,
  env: Record<string, string> = {},
) {
  let now = 0;
  const clock = () => now;
  const advance = (ms: number) => {
    now += ms;
  };
  const config = parseConfig(
    {
      ONNX_SERVE_MODEL_REPOSITORY: root,
      ONNX_SERVE_DISK_CACHE_MB: '0',
      ONNX_SERVE_TIMEOUT_MARGIN_MS: String(MARGIN_MS),
      ONNX_SERVE_LOG_LEVEL: 'SILENT',
      ...env,
    },
    { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: root },
  );
  const engine = new CountingEngine(advance);
  const telemetry = new RecordingTelemetry();
  const store = wrapStore(new FileModelStore(root), advance);
  const handler = createInferHandler(createRuntime(config, { store, engine, telemetry, clock }));
  const invoke = async (side: number, remainingMs: number) => {
    const encoded = encodeInferRequest(
      {
        inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, side, side], data: image(side) }],
        binaryOutputDefault: false,
      },
      { binaryInputs: true },
    );
    const event = apiEvent('http-v2', 'POST', '/v2/models/cls/infer', {
      body: encoded.body,
      headers: encoded.headers,
    });
    // The invocation's remaining time is on the handler's clock too.
    const deadline = now + remainingMs;
    const context = { ...lambdaContext(remainingMs), getRemainingTimeInMillis: () => deadline - now };
    return (await handler(event, context)) as APIGatewayProxyResult;
  };
  /** The service's own measure of the last request run (its `inference` event). */
  const lastRunMs = () => telemetry.ofType('inference').at(-1)?.ms ?? Number.NaN;
  return { engine, telemetry, invoke, lastRunMs };
}

/** A deterministic RGB image, values in [0, 1). */
function image(side: number): Float32Array {
  const data = new Float32Array(3 * side * side);
  for (let i = 0; i < data.length; i++) data[i] = (i % 251) / 251;
  return data;
}

const errorOf = (result: APIGatewayProxyResult) => (JSON.parse(result.body) as { error: string }).error;

describe('infer handler deadline (real onnxruntime, a real CNN, a large image)', () => {
  it('answers 504 without starting a run that its observed run time says cannot end before the deadline', async () => {
    const h = harness();
    // A 512x512 image: 3 MB of binary tensor data, 4.2 MB of base64 in the event, within Lambda's 6 MB.
    expect((await h.invoke(512, AMPLE_MS)).statusCode).toBe(200);
    const observed = h.lastRunMs();
    expect(observed).toBeGreaterThan(0);
    const runs = h.engine.runs;

    // Less time left than the run took: the run would end after the deadline.
    const late = await h.invoke(512, MARGIN_MS + observed / 2);
    expect(late.statusCode).toBe(504);
    expect(errorOf(late)).toMatch(
      /^a run of model 'cls' version 1 on x\[1,3,512,512\] is expected to take about \d+ ms \(the longest of its recent runs on x\[1,3,512,512\]\), more than the \d+ ms left before the deadline; nothing was run/,
    );
    // Decided before the run: the engine was not asked to run.
    expect(h.engine.runs).toBe(runs);

    // With time enough (just over what the run took) the same request runs, on the same instance.
    expect((await h.invoke(512, MARGIN_MS + observed + 1)).statusCode).toBe(200);
    expect(h.engine.runs).toBe(runs + 1);
  });

  it('bounds a smaller image by the larger one it has run, and runs it when the time covers that', async () => {
    const h = harness();
    expect((await h.invoke(512, AMPLE_MS)).statusCode).toBe(200);
    const observed = h.lastRunMs();
    const runs = h.engine.runs;
    const refused = await h.invoke(256, MARGIN_MS + observed / 2);
    expect(refused.statusCode).toBe(504);
    expect(errorOf(refused)).toMatch(/on x\[1,3,256,256\] is expected .*the larger x\[1,3,512,512\]/);
    expect(h.engine.runs).toBe(runs);
    expect((await h.invoke(256, MARGIN_MS + observed + 1)).statusCode).toBe(200);
    expect(h.engine.runs).toBe(runs + 1);
  });

  it('refuses a larger image on a time scaled from a smaller one when time went elsewhere, and runs it when only the whole budget could tell', async () => {
    let configReadMs = 0;
    const h = harness(
      (store, skew) => ({
        location: store.location,
        readConfig: async (model, etag) => {
          const read = await store.readConfig(model, etag);
          skew(configReadMs);
          return read;
        },
        listModels: () => store.listModels(),
        readArtifact: (...args) => store.readArtifact(...args),
      }),
      { ONNX_SERVE_CONFIG_TTL_SECONDS: '0' },
    );
    expect((await h.invoke(256, AMPLE_MS)).statusCode).toBe(200);
    const observed = h.lastRunMs();
    expect(observed).toBeGreaterThan(0);
    const runs = h.engine.runs;

    // A config.json re-read "takes" 4 times the 256 image's run time of an invocation that had that plus
    // twice the run time: 4 times the elements are expected to take about 4 times as long, more than is
    // left, though within the whole budget.
    configReadMs = 4 * observed;
    const refused = await h.invoke(512, MARGIN_MS + configReadMs + 2 * observed);
    expect(refused.statusCode).toBe(504);
    expect(errorOf(refused)).toMatch(
      /on x\[1,3,512,512\] is expected to take about \d+ ms \(scaled by element count from recent runs on x\[1,3,256,256\]\)/,
    );
    expect(h.engine.runs).toBe(runs);

    // An invocation whose whole time is below that guess: refusing would refuse this image on every
    // invocation, so it runs and its time becomes known.
    configReadMs = 0;
    expect((await h.invoke(512, MARGIN_MS + 3 * observed)).statusCode).toBe(200);
    expect(h.engine.runs).toBe(runs + 1);
  });

  it('reports its own 504 at the deadline once, as the 504 the client got, not the 200 the app made later', async () => {
    // The download is held until the test lets it go: the door's timer answers 504 first.
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const h = harness((store) => ({
      location: store.location,
      readConfig: (model, etag) => store.readConfig(model, etag),
      listModels: () => store.listModels(),
      readArtifact: async (...args) => {
        const bytes = await store.readArtifact(...args);
        await held;
        return bytes;
      },
    }));
    const pending = h.invoke(64, MARGIN_MS + 200);
    await jest.advanceTimersByTimeAsync(200);
    const result = await pending;
    expect(result.statusCode).toBe(504);
    expect(h.telemetry.ofType('request')).toHaveLength(0);
    // The app goes on (a load cannot be cancelled), runs the model (its clock still has the time) and
    // reports the request when it ends: as the 504 the client got.
    release();
    for (let i = 0; i < 100_000 && h.telemetry.ofType('request').length === 0; i++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(h.engine.runs).toBeGreaterThan(0);
    expect(h.telemetry.ofType('request').map((e) => [e.outcome, e.status])).toEqual([['timeout', 504]]);
  });

  it('answers 504 without a run when loading the model on a cold start used up the time', async () => {
    // The download "takes" 10 s on the handler's clock; the invocation had 5 s.
    const h = harness((store, skew) => ({
      location: store.location,
      readConfig: (model, etag) => store.readConfig(model, etag),
      listModels: () => store.listModels(),
      readArtifact: async (...args) => {
        const bytes = await store.readArtifact(...args);
        skew(10_000);
        return bytes;
      },
    }));
    const result = await h.invoke(512, MARGIN_MS + 5_000);
    expect(result.statusCode).toBe(504);
    expect(errorOf(result)).toMatch(
      /^no time is left before the deadline for a run of model 'cls' version 1 on x\[1,3,512,512\] .*; nothing was run$/,
    );
    // The warm-up run of the load, and no run for the request.
    expect(h.engine.runs).toBe(1);
    expect(h.telemetry.ofType('inference')).toHaveLength(0);
  });
});
