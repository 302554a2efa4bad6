import { InputRejectedError, ModelLoadError } from '../../shared/core/errors';
import { InferenceService } from '../../shared/core/inference-service';
import { ModelCache } from '../../shared/core/model-cache';
import { ModelLoader } from '../../shared/core/model-loader';
import { ModelRegistry } from '../../shared/core/model-registry';
import type { LoadedModel } from '../../shared/core/ports';
import { FakeEngine, FakeStore, RecordingTelemetry } from '../support/fakes';

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
});
