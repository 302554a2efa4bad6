import { IntegrityError, ModelConfigError, ModelLoadError } from '../../shared/core/errors';
import { ModelLoader } from '../../shared/core/model-loader';
import { ModelRegistry } from '../../shared/core/model-registry';
import { FakeEngine, FakeStore, MemoryArtifactCache, RecordingTelemetry, sha256 } from '../support/fakes';

function setup() {
  const store = new FakeStore();
  const engine = new FakeEngine();
  const disk = new MemoryArtifactCache();
  const telemetry = new RecordingTelemetry();
  const registry = new ModelRegistry({ store, configTtlMs: 0 });
  const loader = new ModelLoader({ store, engine, diskCache: disk, telemetry });
  return { store, engine, disk, telemetry, registry, loader };
}

describe('ModelLoader', () => {
  it('downloads, verifies, creates the session from the bytes and warms it up', async () => {
    const { store, engine, disk, telemetry, registry, loader } = setup();
    const bytes = Buffer.from('model-bytes');
    store.addVersion('m', '1', bytes);
    const model = await loader.load(await registry.resolve('m'));
    await loader.flush();
    expect(engine.loaded[0]?.bytes).toBe(bytes);
    expect(engine.loaded[0]?.runs).toBe(1); // the warm-up run
    expect(model.provider).toBe('cpu');
    expect(disk.files.get(sha256(bytes))).toBe(bytes);
    expect(telemetry.ofType('model-loaded')[0]).toMatchObject({ model: 'm', version: '1', source: 'store' });
  });

  it('takes the bytes from the disk tier without touching the store', async () => {
    const { store, disk, telemetry, registry, loader } = setup();
    const bytes = Buffer.from('model-bytes');
    store.addVersion('m', '1', bytes);
    disk.files.set(sha256(bytes), bytes);
    await loader.load(await registry.resolve('m'));
    expect(store.count('artifact:')).toBe(0);
    expect(telemetry.ofType('model-loaded')[0]?.source).toBe('disk');
  });

  it('drops a disk-tier file that no longer hashes to its name and downloads the version', async () => {
    const { store, engine, disk, telemetry, registry, loader } = setup();
    const bytes = Buffer.from('model-bytes');
    store.addVersion('m', '1', bytes);
    disk.files.set(sha256(bytes), Buffer.from('model-bytez'));
    await loader.load(await registry.resolve('m'));
    await loader.flush();
    expect(store.count('artifact:')).toBe(1);
    expect(engine.loaded[0]?.bytes).toBe(bytes);
    expect(disk.files.get(sha256(bytes))).toBe(bytes);
    expect(telemetry.ofType('model-loaded')[0]?.source).toBe('store');
  });

  it('refuses bytes whose sha256 does not match and caches nothing of them', async () => {
    const { store, engine, disk, telemetry, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('the real bytes'));
    store.artifacts.set('m/1/onnx', Buffer.from('corrupt bytes!'));
    const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
    await loader.flush();
    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as Error).message).toMatch(/model 'm' version 1: onnx file failed its integrity check/);
    expect(engine.loaded).toHaveLength(0);
    expect(disk.files.size).toBe(0);
    expect(telemetry.ofType('model-load-failed')).toHaveLength(1);
  });

  describe('with a store that hashes while it downloads', () => {
    /** A store whose readArtifactHashed answers the bytes with `digest` (their own sha256 by default). */
    function hashingStore(digest?: string) {
      const parts = setup();
      const { store } = parts;
      const hashed: string[] = [];
      Object.assign(store, {
        readArtifactHashed: async (model: string, version: string, format: 'onnx' | 'ort', size: number) => {
          hashed.push(`${model}/${version}/${format}`);
          const bytes = await store.readArtifact(model, version, format, size);
          return { bytes, sha256: digest ?? sha256(bytes) };
        },
      });
      return { ...parts, hashed };
    }

    it("takes the store's digest instead of hashing the bytes again", async () => {
      const { store, engine, registry, loader, hashed } = hashingStore();
      store.addVersion('m', '1', Buffer.from('model-bytes'));
      await loader.load(await registry.resolve('m'));
      expect(hashed).toEqual(['m/1/onnx']);
      expect(engine.loaded).toHaveLength(1);
    });

    it('has the engine prepare its library once the download is under way, before the session', async () => {
      const { store, engine, registry, loader } = setup();
      const events: string[] = [];
      Object.assign(engine, {
        prepare: async () => {
          events.push(`prepare (sessions so far: ${engine.loaded.length})`);
        },
      });
      Object.assign(store, {
        readArtifactHashed: async (
          model: string,
          version: string,
          format: 'onnx' | 'ort',
          size: number,
          _variant: string | undefined,
          onUnderWay?: () => void,
        ) => {
          events.push('requests made');
          onUnderWay?.();
          events.push('bytes in');
          const bytes = await store.readArtifact(model, version, format, size);
          return { bytes, sha256: sha256(bytes) };
        },
      });
      store.addVersion('m', '1', Buffer.from('model-bytes'));
      await loader.load(await registry.resolve('m'));
      expect(events).toEqual(['requests made', 'prepare (sessions so far: 0)', 'bytes in']);
      expect(engine.loaded).toHaveLength(1);
    });

    it("refuses the bytes when the store's digest does not match config.json", async () => {
      // The bytes themselves are right: only the digest the store computed says otherwise, so a loader
      // that hashed them again would load them.
      const { store, engine, registry, loader } = hashingStore('0'.repeat(64));
      store.addVersion('m', '1', Buffer.from('model-bytes'));
      const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IntegrityError);
      expect(engine.loaded).toHaveLength(0);
    });
  });

  it('skips the warm-up run when the model turns it off', async () => {
    const { store, engine, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('b'), { session: { warmup: false } });
    await loader.load(await registry.resolve('m'));
    expect(engine.loaded[0]?.runs).toBe(0);
  });

  it('serves a model whose default warm-up run fails, and reports it as a warmup-failed warning', async () => {
    const { store, engine, telemetry, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('b'));
    engine.failRuns = new Error('Pad reflect requires axis length >= 2');
    const model = await loader.load(await registry.resolve('m'));
    expect(engine.loaded[0]?.released).toBe(false);
    expect(model).toBe(engine.loaded[0]);
    const [warning] = telemetry.ofType('warmup-failed');
    expect(warning).toMatchObject({ model: 'm', version: '1' });
    expect(warning?.error.message).toContain('the default warm-up run (x [1, 2] zeros) failed: Pad reflect');
    expect(telemetry.ofType('model-load-failed')).toHaveLength(0);
    expect(telemetry.ofType('model-loaded')).toHaveLength(1);
  });

  it('runs the warm-up samples of config.json, each its count of times, on the inputs they give', async () => {
    const { store, engine, registry, loader } = setup();
    const warmup = [{ count: 2, inputs: { x: { shape: [3, 2], data: [0.5] } } }];
    store.addVersion('m', '1', Buffer.from('b'), { session: { warmup } });
    await loader.load(await registry.resolve('m'));
    const feeds = engine.loaded[0]?.feeds ?? [];
    expect(feeds).toHaveLength(2);
    expect(feeds[1]?.x).toEqual({ datatype: 'FP32', shape: [3, 2], data: new Float32Array(6).fill(0.5) });
  });

  it('fails the load and releases the session when a configured warm-up sample fails, as Triton does', async () => {
    const { store, engine, telemetry, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('b'), {
      session: { warmup: [{ inputs: { x: { shape: [1, 2] } } }] },
    });
    engine.failRuns = new Error('kernel refused');
    const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toBe(
      "model 'm' version 1 failed its warm-up (config.json session.warmup)",
    );
    expect(((error as Error).cause as Error).message).toContain(
      'warm-up sample 1 (x [1, 2] zeros) failed: kernel refused',
    );
    expect(engine.loaded[0]?.released).toBe(true);
    expect(telemetry.ofType('warmup-failed')).toHaveLength(0);
    expect(telemetry.ofType('model-load-failed')).toHaveLength(1);
  });

  it('fails the load when a configured sample does not fit the model, naming the input', async () => {
    const { store, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('b'), {
      session: { warmup: [{ inputs: { x: { shape: [1, 3] } } }] },
    });
    const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect(((error as Error).cause as Error).message).toContain(
      "input 'x': dim 1 is 3 but the model takes 2",
    );
  });

  it('refuses a config.json whose emptyDims names an input the model does not have, as a config error', async () => {
    const { store, engine, telemetry, registry, loader } = setup();
    const bytes = Buffer.from('b');
    store.addVersion('m', '1', bytes, {
      session: { executionProviders: ['cuda', 'cpu'] },
      emptyDims: { X: [0] },
    });
    // A cuda variant makes two attempts (variant with cuda, then the file with cpu).
    const config = JSON.parse(store.configs.get('m') as string);
    config.versions['1'].variants = {
      fp16: { sha256: sha256(bytes), size: bytes.byteLength, providers: ['cuda'] },
    };
    store.configs.set('m', JSON.stringify(config));
    store.artifacts.set('m/1/onnx.fp16', bytes);
    const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as ModelConfigError).status).toBe(503);
    expect((error as Error).message).toBe(
      "model 'm' version 1: config.json is invalid: 'emptyDims' names input 'X', which the model does not have (did you mean 'x'?)",
    );
    // Wrong whichever provider runs it: no fallback to the next one, and no warm-up run.
    expect(engine.loaded).toHaveLength(1);
    expect(engine.loaded[0]?.released).toBe(true);
    expect(engine.loaded[0]?.runs).toBe(0);
    expect(telemetry.ofType('provider-fallback')).toHaveLength(0);
    expect(telemetry.ofType('model-load-failed')).toHaveLength(1);
  });

  it('wraps engine failures in a ModelLoadError naming the model', async () => {
    const { store, engine, registry, loader } = setup();
    store.addVersion('m', '1', Buffer.from('b'));
    engine.failNext = new Error('protobuf parsing failed');
    const error = await loader.load(await registry.resolve('m')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toBe("model 'm' version 1 could not be loaded");
    expect((error as Error).cause).toBeInstanceOf(Error);
  });

  it('passes the zero-copy options for an ORT file and turns prepacking off with them', async () => {
    const { store, engine, registry, loader } = setup();
    const onnx = Buffer.from('onnx');
    const ort = Buffer.from('ort!');
    store.configs.set(
      'm',
      JSON.stringify({
        versions: { '1': { sha256: sha256(onnx), size: 4, ort: { sha256: sha256(ort), size: 4 } } },
        session: { intraOpThreads: 3, graphOptimizationLevel: 'basic' },
      }),
    );
    store.artifacts.set('m/1/ort', ort);
    await loader.load(await registry.resolve('m'));
    expect(engine.options[0]).toMatchObject({
      useModelBytesDirectly: true,
      disablePrepacking: true,
      intraOpThreads: 3,
      graphOptimizationLevel: 'basic',
    });
  });
});
