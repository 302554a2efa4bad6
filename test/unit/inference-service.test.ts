import {
  InputRejectedError,
  IntegrityError,
  ModelLoadBackoffError,
  ModelLoadError,
  ModelNotFoundError,
} from '../../shared/core/errors';
import { InferenceService } from '../../shared/core/inference-service';
import { ModelCache } from '../../shared/core/model-cache';
import { ModelLoader } from '../../shared/core/model-loader';
import { ModelRegistry } from '../../shared/core/model-registry';
import type { LoadedModel } from '../../shared/core/ports';
import { FakeEngine, FakeStore, RecordingTelemetry, sha256 } from '../support/fakes';

function setup() {
  const store = new FakeStore();
  store.addVersion('m', '1', Buffer.from('bytes'), { session: { warmup: false } });
  const engine = new FakeEngine();
  const service = new InferenceService({
    registry: new ModelRegistry({ store, configTtlMs: 60_000 }),
    cache: new ModelCache({ maxBytes: 1 << 20 }),
    loader: new ModelLoader({ store, engine }),
    limits: { maxTensorElements: 1000 },
  });
  return { engine, service };
}

const x = { name: 'x', datatype: 'FP32' as const, shape: [1, 2], data: Float32Array.from([1, 2]) };

describe('InferenceService', () => {
  describe('the cache estimate of a session', () => {
    /** A version of 1,000 bytes with an int8 variant of 250, served with `variant` chosen. */
    async function loadedBytes(variant: string | undefined, read: string): Promise<number> {
      const store = new FakeStore();
      const int8 = Buffer.alloc(250, 8);
      store.addVersion('m', '1', Buffer.alloc(1000, 1), { session: { warmup: false } });
      const config = JSON.parse(store.configs.get('m') as string);
      config.versions['1'].variants = {
        int8: { sha256: sha256(int8), size: int8.byteLength, precision: 'int8', runsOn: ['cpu'] },
      };
      store.configs.set('m', JSON.stringify(config));
      store.artifacts.set('m/1/onnx.int8', int8);
      const cache = new ModelCache({ maxBytes: 1 << 20 });
      const service = new InferenceService({
        registry: new ModelRegistry({ store, configTtlMs: 60_000 }),
        cache,
        loader: new ModelLoader({ store, engine: new FakeEngine(), variant }),
        limits: { maxTensorElements: 1000 },
      });
      await service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false });
      expect(store.calls.filter((c) => c.startsWith('artifact:'))).toEqual([`artifact:${read}`]);
      return cache.loadedBytes;
    }

    it("is sized by the file that serves: the chosen variant's, not the float32 file's", async () => {
      expect(await loadedBytes(undefined, 'm/1/onnx')).toBe(2500);
      expect(await loadedBytes('int8', 'm/1/onnx.int8')).toBe(625);
    });

    it("is sized by the version's own file when the chosen variant is missing", async () => {
      expect(await loadedBytes('int4', 'm/1/onnx')).toBe(2500);
    });
  });

  describe('a load that failed under one config.json', () => {
    it('is not held against a fixed config.json: the next request after the re-read loads again', async () => {
      const store = new FakeStore();
      // `X` for `x`: refused when the session is created, and remembered with the load backoff.
      store.addVersion('m', '1', Buffer.from('bytes'), { session: { warmup: false }, emptyDims: { X: [0] } });
      const engine = new FakeEngine();
      const service = new InferenceService({
        registry: new ModelRegistry({ store, configTtlMs: 0 }),
        cache: new ModelCache({ maxBytes: 1 << 20 }),
        loader: new ModelLoader({ store, engine }),
        limits: { maxTensorElements: 1000 },
      });
      const request = { inputs: [x], binaryOutputDefault: false };
      await expect(service.infer('m', undefined, request)).rejects.toThrow(/'emptyDims' names input 'X'/);
      // The same config.json: the failure is remembered (no new session), as before.
      await expect(service.infer('m', undefined, request)).rejects.toBeInstanceOf(ModelLoadBackoffError);
      const attempts = engine.loaded.length;

      store.addVersion('m', '1', Buffer.from('bytes'), { session: { warmup: false }, emptyDims: { x: [0] } });
      const answer = await service.infer('m', undefined, request);
      expect(Array.from(answer.outputs[0]?.data as Float32Array)).toEqual([2, 4]);
      expect(engine.loaded.length).toBe(attempts + 1);
    });
  });

  describe('infer', () => {
    it('reuses the cached session across requests', async () => {
      const { engine, service } = setup();
      await service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false });
      const second = await service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false });
      expect(Array.from(second.outputs[0]?.data as Float32Array)).toEqual([2, 4]);
      expect(engine.loaded).toHaveLength(1);
    });

    it('runs every output for an empty outputs list, as for an absent one', async () => {
      const { engine, service } = setup();
      const fetched: (readonly string[] | undefined)[] = [];
      await service.load('m');
      const model = engine.loaded[0] as LoadedModel;
      const run = model.run.bind(model);
      model.run = (feeds, outputs) => {
        fetched.push(outputs);
        return run(feeds, outputs);
      };
      const answer = await service.infer('m', undefined, {
        inputs: [x],
        outputs: [],
        binaryOutputDefault: false,
      });
      expect(fetched).toEqual([undefined]);
      expect(answer.outputs.map((o) => o.name)).toEqual(['y']);
    });

    it('reports a run the engine refused as an input-rejected event, with the vendor text as cause', async () => {
      const store = new FakeStore();
      store.addVersion('m', '1', Buffer.from('bytes'), { session: { warmup: false } });
      const engine = new FakeEngine();
      const telemetry = new RecordingTelemetry();
      const service = new InferenceService({
        registry: new ModelRegistry({ store, configTtlMs: 60_000 }),
        cache: new ModelCache({ maxBytes: 1 << 20 }),
        loader: new ModelLoader({ store, engine }),
        limits: { maxTensorElements: 1000 },
        telemetry,
      });
      await service.load('m');
      const vendor = new Error('/onnxruntime_src/x.cc:1 onnxruntime::F() failed');
      (engine.loaded[0] as LoadedModel).run = async () => {
        throw new InputRejectedError('the model cannot run on these inputs', { cause: vendor });
      };
      await expect(
        service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false }),
      ).rejects.toThrow('the model cannot run on these inputs');
      const [event] = telemetry.ofType('input-rejected');
      expect(event).toMatchObject({ model: 'm', version: '1' });
      expect(event?.error.cause).toBe(vendor);
    });

    it('loads afresh after a run reports its session broken (a load error), and releases the broken one', async () => {
      const { engine, service } = setup();
      await service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false });
      const broken = engine.loaded[0] as LoadedModel & { released: boolean };
      broken.run = async () => {
        throw new ModelLoadError('the worker running this session exited');
      };
      await expect(
        service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false }),
      ).rejects.toThrow('the worker running this session exited');
      const after = await service.infer('m', undefined, { inputs: [x], binaryOutputDefault: false });
      expect(Array.from(after.outputs[0]?.data as Float32Array)).toEqual([2, 4]);
      expect(engine.loaded).toHaveLength(2);
      expect(broken.released).toBe(true);
    });
  });

  describe('a warm route through a bad rollout', () => {
    function warm(configTtlMs = 0) {
      let now = 0;
      const store = new FakeStore();
      store.addVersion('m', '1', Buffer.from('one'), { session: { warmup: false } });
      const engine = new FakeEngine();
      const telemetry = new RecordingTelemetry();
      const service = new InferenceService({
        registry: new ModelRegistry({ store, configTtlMs, clock: () => now }),
        cache: new ModelCache({ maxBytes: 1 << 20, clock: () => now }),
        loader: new ModelLoader({ store, engine }),
        limits: { maxTensorElements: 1000 },
        telemetry,
      });
      const infer = (version?: string) =>
        service.infer('m', version, { inputs: [x], binaryOutputDefault: false });
      return { store, engine, telemetry, service, infer, advance: (ms: number) => (now += ms) };
    }

    it('keeps the default on the serving version while a new default cannot load, then cuts over', async () => {
      const { store, telemetry, infer, advance } = warm();
      expect((await infer()).modelVersion).toBe('1');
      store.addVersion('m', '2', Buffer.from('two'));
      store.artifacts.set('m/2/onnx', Buffer.from('bad'));

      expect((await infer()).modelVersion).toBe('1');
      expect(telemetry.ofType('rollout-held')).toEqual([
        {
          type: 'rollout-held',
          model: 'm',
          version: '2',
          sha256: sha256(Buffer.from('two')),
          serving: '1',
          error: expect.any(IntegrityError),
        },
      ]);
      // The new version asked for by name never served: its own 503, remembered with a backoff.
      await expect(infer('2')).rejects.toThrow(ModelLoadBackoffError);
      expect((await infer()).modelVersion).toBe('1');
      expect(store.count('artifact:m/2')).toBe(1);
      expect(telemetry.ofType('rollout-held')).toHaveLength(1);

      store.artifacts.set('m/2/onnx', Buffer.from('two'));
      advance(1000);
      expect((await infer()).modelVersion).toBe('2');
      expect((await infer()).modelVersion).toBe('2');
      expect(store.count('artifact:m/2')).toBe(2);
    });

    it('keeps an explicit version on its serving file when config.json points it at one that cannot load', async () => {
      const { store, telemetry, infer } = warm();
      expect((await infer('1')).modelVersion).toBe('1');
      store.addVersion('m', '1', Buffer.from('replaced'));
      store.artifacts.set('m/1/onnx', Buffer.from('broken'));

      expect((await infer('1')).modelVersion).toBe('1');
      expect(telemetry.ofType('rollout-held')).toEqual([
        expect.objectContaining({ version: '1', sha256: sha256(Buffer.from('replaced')), serving: '1' }),
      ]);
    });

    it("holds the default while a new version's file is missing, reporting it once, and cuts over once it is uploaded", async () => {
      const { store, telemetry, infer } = warm();
      expect((await infer()).modelVersion).toBe('1');
      store.addVersion('m', '2', Buffer.from('two'));
      store.artifacts.delete('m/2/onnx');

      expect((await infer()).modelVersion).toBe('1');
      expect((await infer()).modelVersion).toBe('1');
      expect(telemetry.ofType('rollout-held')).toEqual([
        expect.objectContaining({ version: '2', serving: '1', error: expect.any(ModelNotFoundError) }),
      ]);

      store.artifacts.set('m/2/onnx', Buffer.from('two'));
      expect((await infer()).modelVersion).toBe('2');
    });

    it('answers the failure itself on a route that never served', async () => {
      const { store, infer } = warm();
      store.artifacts.set('m/1/onnx', Buffer.from('bad'));
      await expect(infer()).rejects.toThrow(IntegrityError);
      await expect(infer()).rejects.toThrow(ModelLoadBackoffError);
    });

    it('reads a config again unconditionally after an integrity failure, within its TTL', async () => {
      const { store, infer } = warm(60_000);
      const real = (await store.readConfig('m')) as { etag: string };
      const poisoned = JSON.stringify({
        versions: { '1': { sha256: sha256(Buffer.from('other')), size: 5 } },
        session: { warmup: false },
      });
      const read = jest.spyOn(store, 'readConfig').mockResolvedValueOnce({ text: poisoned, etag: real.etag });

      await expect(infer()).rejects.toThrow(IntegrityError);
      expect((await infer()).modelVersion).toBe('1');
      expect(read.mock.calls.map((call) => call[1])).toEqual([undefined, undefined]);
    });
  });
});
