import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { WorkerOrtEngine } from '../../shared/adapters/worker-ort-engine';
import { InputRejectedError, InvalidInputError, ModelLoadError } from '../../shared/core/errors';
import type { LoadedModel } from '../../shared/core/ports';
import { DATATYPES, type Tensor } from '../../shared/core/tensor';
import {
  buildAddModel,
  buildLinearModel,
  buildMlpModel,
  buildTypedIdentityModel,
  LINEAR_IN,
  TYPED_IDENTITY_WIDTH,
  typedIdentityNames,
} from '../../tools/onnx/model-builder';
import { convertToOrtFormat } from '../../tools/onnx/ort-format';
import { ENGINE_OPTIONS, fp32, SMALL_MLP, sampleData } from '../support/engine-fixtures';
import { buildOrtWorker } from '../support/ort-worker-bundle';

const MLP = SMALL_MLP;
/** Big enough that one run of BIG_BATCH rows takes many event-loop turns on any machine. */
const BIG_MLP = { inputSize: 1024, hidden: [2048, 2048], outputSize: 16, seed: 3 } as const;
const BIG_BATCH = 256;

/** Resolves when `worker` has exited, with its exit code. */
function exitOf(worker: Worker): Promise<number> {
  return new Promise((resolve) => worker.once('exit', resolve));
}

let workerFile: string;
let removeWorker: () => Promise<void>;
let scratch: string;
let mlpOnnx: Uint8Array;
let mlpOrt: Uint8Array;
let bigMlp: Uint8Array;
const workers: Worker[] = [];
const loaded: LoadedModel[] = [];
const mainEngine = new OrtEngine({ defaultIntraOpThreads: 1 });
let engine: WorkerOrtEngine;

async function load(
  engineToUse: OrtEngine | WorkerOrtEngine,
  bytes: Uint8Array,
  format: 'onnx' | 'ort' = 'onnx',
) {
  const model = await engineToUse.load(
    { bytes, format },
    { ...ENGINE_OPTIONS, ...(format === 'ort' ? { disablePrepacking: true } : {}) },
  );
  loaded.push(model);
  return model;
}

beforeAll(async () => {
  ({ file: workerFile, remove: removeWorker } = await buildOrtWorker());
  engine = new WorkerOrtEngine({
    defaultIntraOpThreads: 1,
    workerFile,
    createWorker: (file) => {
      const worker = new Worker(file);
      workers.push(worker);
      return worker;
    },
  });
  scratch = await mkdtemp(join(tmpdir(), 'worker-ort-engine-test-'));
  mlpOnnx = buildMlpModel(MLP);
  mlpOrt = await convertToOrtFormat(mlpOnnx, join(scratch, 'mlp.ort'));
  bigMlp = buildMlpModel(BIG_MLP);
});

afterAll(async () => {
  await Promise.all(loaded.map((m) => m.release().catch(() => undefined)));
  await Promise.all(workers.map((w) => w.terminate()));
  await removeWorker();
  await rm(scratch, { recursive: true, force: true });
});

describe('WorkerOrtEngine', () => {
  describe('load', () => {
    it('reads the same signature and provider as OrtEngine, and rebuilds provider fallbacks as Errors', async () => {
      const inWorker = await load(engine, buildLinearModel());
      const onMain = await load(mainEngine, buildLinearModel());
      expect(inWorker.signature).toEqual(onMain.signature);
      expect(inWorker.provider).toBe('cpu');
      expect(inWorker.fallbacks).toEqual([]);

      const fallback = await engine.load(
        { bytes: buildLinearModel(), format: 'onnx' },
        { ...ENGINE_OPTIONS, executionProviders: ['cuda', 'cpu'] },
      );
      loaded.push(fallback);
      expect(fallback.fallbacks?.map((f) => f.provider)).toEqual(['cuda']);
      expect(fallback.fallbacks?.[0]?.error).toBeInstanceOf(Error);
      expect(fallback.fallbacks?.[0]?.error.message).toMatch(/cuda/i);
    });

    it('fails with ModelLoadError on bytes that are not a model, and ends that worker', async () => {
      const before = workers.length;
      const attempt = engine.load(
        { bytes: new TextEncoder().encode('not a model'), format: 'onnx' },
        ENGINE_OPTIONS,
      );
      await expect(attempt).rejects.toThrow(ModelLoadError);
      const worker = workers[before] as Worker;
      expect(worker.threadId).toBe(-1);
    });

    it('fails with ModelLoadError when no provider is configured or loads', async () => {
      const bytes = buildLinearModel();
      await expect(
        engine.load({ bytes, format: 'onnx' }, { ...ENGINE_OPTIONS, executionProviders: [] }),
      ).rejects.toThrow(ModelLoadError);
      await expect(
        engine.load({ bytes, format: 'onnx' }, { ...ENGINE_OPTIONS, executionProviders: ['cuda'] }),
      ).rejects.toThrow(/cuda:/);
    });

    it('fails with ModelLoadError when the worker bundle is missing', async () => {
      const missing = new WorkerOrtEngine({ defaultIntraOpThreads: 1, workerFile: join(scratch, 'nope.js') });
      await expect(
        missing.load({ bytes: buildLinearModel(), format: 'onnx' }, ENGINE_OPTIONS),
      ).rejects.toThrow(ModelLoadError);
    });

    it('leaves the caller its bytes: a view into a larger buffer is copied, never taken', async () => {
      const bytes = buildLinearModel();
      const padded = new Uint8Array(bytes.byteLength + 13).fill(0xff);
      padded.set(bytes, 7);
      const view = padded.subarray(7, 7 + bytes.byteLength);
      const model = await load(engine, view);
      expect(model.signature.inputs[0]?.name).toBe('x');
      expect(view.byteLength).toBe(bytes.byteLength);
      expect(Array.from(view)).toEqual(Array.from(bytes));
      // A Buffer too, whose own slice() would be a view of the caller's memory.
      const buffer = Buffer.from(bytes);
      await load(engine, buffer);
      expect(buffer.equals(bytes)).toBe(true);
    });
  });

  describe('run', () => {
    it('gives the same outputs as OrtEngine for the linear model', async () => {
      const inWorker = await load(engine, buildLinearModel());
      const onMain = await load(mainEngine, buildLinearModel());
      const x = () => fp32([5, LINEAR_IN], (i) => Math.sin(i * 0.7) * 3);
      const expected = await onMain.run({ x: x() });
      const actual = await inWorker.run({ x: x() });
      expect(actual.y?.shape).toEqual([5, 2]);
      expect(actual).toEqual(expected);
    });

    it('round-trips every datatype exactly, as OrtEngine does', async () => {
      const inWorker = await load(engine, buildTypedIdentityModel());
      const onMain = await load(mainEngine, buildTypedIdentityModel());
      const feeds = (): Record<string, Tensor> => {
        const result: Record<string, Tensor> = {};
        for (const datatype of DATATYPES) {
          result[typedIdentityNames(datatype).input] = {
            datatype,
            shape: [2, TYPED_IDENTITY_WIDTH],
            data: sampleData(datatype),
          };
        }
        return result;
      };
      const expected = await onMain.run(feeds());
      const actual = await inWorker.run(feeds());
      for (const datatype of DATATYPES) {
        const out = actual[typedIdentityNames(datatype).output];
        expect(out?.datatype).toBe(datatype);
        expect(out?.shape).toEqual([2, TYPED_IDENTITY_WIDTH]);
        if (datatype === 'BYTES') expect(Array.isArray(out?.data)).toBe(true);
        else expect(out?.data.constructor).toBe(sampleData(datatype).constructor);
        expect(out?.data).toEqual(sampleData(datatype));
      }
      expect(actual).toEqual(expected);
    });

    it('returns only the outputs asked for', async () => {
      const model = await load(engine, buildTypedIdentityModel());
      const feeds: Record<string, Tensor> = {};
      for (const datatype of DATATYPES) {
        feeds[typedIdentityNames(datatype).input] = { datatype, shape: [2, 3], data: sampleData(datatype) };
      }
      const outputs = await model.run(feeds, ['out_fp32', 'out_bytes']);
      expect(Object.keys(outputs).sort()).toEqual(['out_bytes', 'out_fp32']);
    });

    it('gives the same outputs from a zero-copy ORT file as OrtEngine from the .onnx, run after run', async () => {
      const fromOrt = await load(engine, mlpOrt, 'ort');
      const fromOnnx = await load(mainEngine, mlpOnnx);
      const x = () => fp32([3, MLP.inputSize], (i) => Math.cos(i));
      const expected = await fromOnnx.run({ x: x() });
      // The worker's copy of the file backs the session's weights: later runs still read them intact.
      for (let run = 0; run < 3; run++) expect(await fromOrt.run({ x: x() })).toEqual(expected);
    });

    it('transfers a feed that owns its whole buffer and copies one that is a view into a shared body', async () => {
      const model = await load(engine, buildLinearModel());
      const body = new Float32Array(3 * LINEAR_IN).fill(1);
      const view: Tensor = {
        datatype: 'FP32',
        shape: [1, LINEAR_IN],
        data: body.subarray(LINEAR_IN, 2 * LINEAR_IN),
      };
      const owned = fp32([1, LINEAR_IN], () => 1);
      const [a, b] = await Promise.all([model.run({ x: view }), model.run({ x: owned })]);
      expect(a).toEqual(b);
      expect(body.byteLength).toBe(3 * LINEAR_IN * 4);
      expect(owned.data.length).toBe(0); // given up to the worker
    });

    it('answers concurrent runs each with its own result', async () => {
      const model = await load(engine, buildLinearModel());
      const onMain = await load(mainEngine, buildLinearModel());
      const runs = [1, 2, 3, 4].map(async (k) => {
        const actual = await model.run({ x: fp32([k, LINEAR_IN], (i) => i * k) });
        const expected = await onMain.run({ x: fp32([k, LINEAR_IN], (i) => i * k) });
        return { actual, expected };
      });
      for (const { actual, expected } of await Promise.all(runs)) expect(actual).toEqual(expected);
    });

    it('rejects a shape or datatype the graph refuses, and a missing input, with InvalidInputError', async () => {
      const model = await load(engine, buildLinearModel());
      const attempt = model.run({ x: fp32([1, LINEAR_IN - 1], () => 0) });
      await expect(attempt).rejects.toThrow(InvalidInputError);
      await expect(attempt).rejects.toThrow(/invalid dimensions for input: x/);
      const wrongType: Tensor = { datatype: 'INT32', shape: [1, LINEAR_IN], data: new Int32Array(LINEAR_IN) };
      await expect(model.run({ x: wrongType })).rejects.toThrow(InvalidInputError);
      await expect(model.run({})).rejects.toThrow(InvalidInputError);
      // The session survives a refused request.
      expect((await model.run({ x: fp32([1, LINEAR_IN], () => 0) })).y?.shape).toEqual([1, 2]);
    });

    it('brings a refused run back as InputRejectedError without native detail, the vendor text as its cause', async () => {
      const model = await load(engine, buildAddModel());
      const error = (await model
        .run({ a: fp32([2, 4], () => 1), b: fp32([3, 4], () => 1) })
        .catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(InputRejectedError);
      expect(error.message).toMatch(/^the model cannot run on these inputs: its Add node/);
      expect(error.message).not.toMatch(/\.(?:cc|h)\b|::|onnxruntime_src/);
      expect((error.cause as Error).message).toMatch(/element_wise_ops\.h/);
    });

    // Ordering, not timing: a chain of setImmediate hops runs to its end while the worker computes; with
    // OrtEngine the native run blocks the event loop before the first hop.
    it('keeps the event loop free while a long run is in flight', async () => {
      const HOPS = 20;
      const hopsDuringRun = async (model: LoadedModel): Promise<number> => {
        let hops = 0;
        const run = model.run({ x: fp32([BIG_BATCH, BIG_MLP.inputSize], (i) => (i % 7) / 7) });
        const hop = () => {
          hops += 1;
          if (hops < HOPS) setImmediate(hop);
        };
        setImmediate(hop);
        await run;
        return hops;
      };
      const inWorker = await load(engine, bigMlp);
      const onMain = await load(mainEngine, bigMlp);
      expect(await hopsDuringRun(inWorker)).toBe(HOPS);
      expect(await hopsDuringRun(onMain)).toBe(0);
    });
  });

  describe('release', () => {
    it('releases once and ends the worker; a run afterwards rejects', async () => {
      const before = workers.length;
      const model = await engine.load({ bytes: buildLinearModel(), format: 'onnx' }, ENGINE_OPTIONS);
      const exited = exitOf(workers[before] as Worker);
      await Promise.all([model.release(), model.release()]);
      await exited;
      expect(workers[before]?.threadId).toBe(-1);
      await expect(model.run({ x: fp32([1, LINEAR_IN], () => 0) })).rejects.toThrow(/released/);
    });
  });

  describe('a worker that dies', () => {
    it('fails later runs with ModelLoadError once its worker is gone; the next load starts a new worker', async () => {
      const before = workers.length;
      const model = await load(engine, buildLinearModel());
      const worker = workers[before] as Worker;
      // Terminated while idle: ending a worker while onnxruntime runs inside it can abort the whole process
      // (the binding throws into a torn-down environment), so neither the engine nor this test does that.
      await worker.terminate();
      await expect(model.run({ x: fp32([1, LINEAR_IN], () => 1) })).rejects.toThrow(ModelLoadError);
      await expect(model.run({ x: fp32([1, LINEAR_IN], () => 1) })).rejects.toThrow(
        /worker exited with code 1/,
      );
      await model.release();

      const next = await load(engine, buildLinearModel());
      expect(workers.length).toBe(before + 2);
      expect((await next.run({ x: fp32([1, LINEAR_IN], () => 1) })).y?.shape).toEqual([1, 2]);
    });

    it('fails the pending run when the worker exits by itself (process.exit inside it)', async () => {
      // A wrapper around the real worker that exits as soon as a run arrives, whatever the session does.
      const crashing = new WorkerOrtEngine({
        defaultIntraOpThreads: 1,
        workerFile,
        createWorker: (file) => {
          const source = `const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => { if (m.op === 'run') process.exit(7); });
require(${JSON.stringify(file)});`;
          const worker = new Worker(source, { eval: true });
          workers.push(worker);
          return worker;
        },
      });
      const model = await crashing.load({ bytes: buildLinearModel(), format: 'onnx' }, ENGINE_OPTIONS);
      loaded.push(model);
      await expect(model.run({ x: fp32([1, LINEAR_IN], () => 1) })).rejects.toThrow(/exited with code 7/);
    });
  });
});
