import {
  ModelConfigError,
  ModelLoadBackoffError,
  ModelLoadError,
  ModelNotFoundError,
} from '../../shared/core/errors';
import {
  assertEmptyDimsMatch,
  emptyDimsProblems,
  parseModelConfig,
  resolveVersion,
} from '../../shared/core/model-config';
import { ModelRegistry } from '../../shared/core/model-registry';
import { FakeStore, RecordingTelemetry, sha256 } from '../support/fakes';

function setup(ttlMs = 30_000) {
  const store = new FakeStore();
  let now = 0;
  const registry = new ModelRegistry({ store, configTtlMs: ttlMs, clock: () => now });
  return { store, registry, advance: (ms: number) => (now += ms) };
}

describe('ModelRegistry', () => {
  describe('resolve', () => {
    it('takes the explicit version, else the default, else the highest (numerically)', async () => {
      const { store, registry } = setup();
      for (const v of ['2', '9', '10']) store.addVersion('m', v, Buffer.from(`v${v}`));
      expect((await registry.resolve('m', '2')).version).toBe('2');
      expect((await registry.resolve('m')).version).toBe('10');
      store.addVersion('d', '1', Buffer.from('a'));
      store.addVersion('d', '3', Buffer.from('b'), { defaultVersion: '1' });
      expect((await registry.resolve('d')).version).toBe('1');
    });

    it('returns the recorded hash and size of the chosen file, preferring the ORT copy', async () => {
      const { store, registry } = setup();
      const onnx = Buffer.from('onnx bytes');
      const ort = Buffer.from('ort bytes!!');
      store.configs.set(
        'm',
        JSON.stringify({
          versions: {
            '1': { sha256: sha256(onnx), size: onnx.length, ort: { sha256: sha256(ort), size: ort.length } },
          },
        }),
      );
      const resolved = await registry.resolve('m');
      expect(resolved).toMatchObject({ format: 'ort', sha256: sha256(ort), size: ort.length });
      store.configs.set(
        'p',
        JSON.stringify({
          versions: {
            '1': { sha256: sha256(onnx), size: onnx.length, ort: { sha256: sha256(ort), size: ort.length } },
          },
          session: { preferOrtFormat: false },
        }),
      );
      expect(await registry.resolve('p')).toMatchObject({ format: 'onnx', sha256: sha256(onnx) });
    });

    it.each([
      ['an unknown model', 'nope', undefined, "model 'nope' not found"],
      ['an unknown version', 'm', '7', "model 'm' has no version '7'"],
      ['a path traversal name', '..', undefined, 'not a valid model name'],
      ['a name with a slash', 'a/b', undefined, 'not a valid model name'],
      ['a non-numeric version', 'm', 'latest', "has no version 'latest'"],
      ['a traversal version', 'm', '../1', "has no version '../1'"],
    ])('answers 404 for %s, naming it', async (_case, model, version, message) => {
      const { store, registry } = setup();
      store.addVersion('m', '1', Buffer.from('x'));
      const attempt = registry.resolve(model, version);
      await expect(attempt).rejects.toBeInstanceOf(ModelNotFoundError);
      await expect(registry.resolve(model, version)).rejects.toThrow(message);
    });

    it.each(['constructor', 'toString', '__proto__'])(
      "refuses '%s' as defaultVersion and as a version: Object.prototype is no version",
      async (name) => {
        const { store, registry } = setup();
        const version = { sha256: 'a'.repeat(64), size: 1 };
        store.configs.set('m', JSON.stringify({ defaultVersion: name, versions: { '1': version } }));
        await expect(registry.resolve('m')).rejects.toThrow(/'defaultVersion' must name one of the versions/);
        const config = parseModelConfig('m', JSON.stringify({ versions: { '1': version } }));
        expect(resolveVersion(config, name)).toBeUndefined();
      },
    );

    it("reads the batch jobs' Parquet column mapping, and reports a bad one as a config error naming it", () => {
      const version = { sha256: 'a'.repeat(64), size: 1 };
      const parse = (batch: unknown) =>
        parseModelConfig('m', JSON.stringify({ versions: { '1': version }, batch }));
      expect(parse({ idColumn: 'key', inputs: { x: { prefix: 'f' } } }).batch).toEqual({
        idColumn: 'key',
        inputs: { x: { prefix: 'f' } },
      });
      expect(parse({ inputs: { x: { columns: ['a', 'b'] } } }).batch).toEqual({
        idColumn: 'id',
        inputs: { x: { columns: ['a', 'b'] } },
      });
      expect(parseModelConfig('m', JSON.stringify({ versions: { '1': version } })).batch).toBeUndefined();
      expect(() => parse({ inputs: { x: { columns: [] } } })).toThrow(ModelConfigError);
      expect(() => parse({ inputs: { x: { columns: [] } } })).toThrow(
        "'batch.inputs.x'.columns must be a non-empty array of column names",
      );
      expect(() => parse({ inputs: { x: { prefix: 'f', columns: ['a'] } } })).toThrow(
        `'batch.inputs.x' must be {"columns": [...]} or {"prefix": "..."}`,
      );
      expect(() => parse({ idColumn: '' })).toThrow("'batch.idColumn' must be a non-empty string");
      expect(() => parse([1])).toThrow("'batch' must be an object");
    });

    it('reads emptyDims per input into a null-prototype object, and reports bad entries', () => {
      const version = { sha256: 'a'.repeat(64), size: 1 };
      const config = parseModelConfig(
        'm',
        `{"versions": ${JSON.stringify({ '1': version })}, "emptyDims": {"input_ids": [1], "__proto__": [0]}}`,
      );
      expect(config.emptyDims.input_ids).toEqual([1]);
      expect(Object.getPrototypeOf(config.emptyDims)).toBeNull();
      expect(Object.keys(config.emptyDims)).toEqual(['input_ids', '__proto__']);
      expect(parseModelConfig('m', JSON.stringify({ versions: { '1': version } })).emptyDims).toEqual({});
      for (const emptyDims of [
        [0],
        { x: [] },
        { x: [-1] },
        { x: [0, 0] },
        { x: [1.5] },
        { x: [32] },
        { x: 0 },
      ]) {
        expect(() =>
          parseModelConfig('m', JSON.stringify({ versions: { '1': version }, emptyDims })),
        ).toThrow(/'emptyDims/);
      }
    });

    it('refuses unknown keys at the top level and in version, variant and ORT-copy entries', () => {
      const artifact = { sha256: 'a'.repeat(64), size: 1 };
      const parse = (config: object) => () => parseModelConfig('m', JSON.stringify(config));
      expect(parse({ versions: { '1': artifact }, maxBatchsize: 8 })).toThrow(
        "model 'm': config.json is invalid: 'config.json' has an unknown key 'maxBatchsize' (did you mean 'maxBatchSize'?)",
      );
      expect(parse({ versions: { '1': { ...artifact, sha: 'x' } } })).toThrow(
        "'versions.1' has an unknown key 'sha' (known: sha256, size, ort, variants)",
      );
      expect(parse({ versions: { '1': { ...artifact, ort: { ...artifact, sizes: 2 } } } })).toThrow(
        "'versions.1.ort' has an unknown key 'sizes' (did you mean 'size'?)",
      );
      const variant = { ...artifact, precision: 'int8', runsOn: ['cpu'] };
      expect(
        parse({ versions: { '1': { ...artifact, variants: { int8: { ...variant, provider: ['cpu'] } } } } }),
      ).toThrow("'versions.1.variants.int8' has an unknown key 'provider' (did you mean 'providers'?)");
      // Every key the model tool writes, and the batch mapping, are still taken.
      const full = {
        name: 'm',
        platform: 'onnxruntime_onnx',
        maxBatchSize: 8,
        defaultVersion: '1',
        versions: {
          '1': {
            ...artifact,
            ort: artifact,
            variants: {
              int8: {
                ...variant,
                providers: ['cpu'],
                ort: artifact,
                accuracy: { inputs: 'random', cosine: 1, bounds: {} },
                rewrite: { onnxruntime: '1' },
              },
            },
          },
        },
        session: {},
        dynamicBatching: { maxBatchSize: 8, maxQueueDelayMs: 1, maxQueueSize: 16 },
        emptyDims: {},
        batch: { idColumn: 'id', inputs: { x: { prefix: 'x_' } } },
      };
      expect(parse(full)()).toMatchObject({ maxBatchSize: 8, batch: { idColumn: 'id' } });
    });

    it('refuses unknown keys in session and dynamicBatching, naming the key and the nearest known one', () => {
      const versions = { '1': { sha256: 'a'.repeat(64), size: 1 } };
      const parse = (extra: object) => () =>
        parseModelConfig('m', JSON.stringify({ versions, maxBatchSize: 8, ...extra }));
      expect(parse({ session: { warmUp: false } })).toThrow(
        "model 'm': config.json is invalid: 'session' has an unknown key 'warmUp' (did you mean 'warmup'?)",
      );
      expect(parse({ session: { intraOpThread: 2, colour: 'red' } })).toThrow(
        /'session' has an unknown key 'intraOpThread' \(did you mean 'intraOpThreads'\?\); 'session' has an unknown key 'colour' \(known: graphOptimizationLevel, .*disablePrepacking\)/,
      );
      expect(parse({ dynamicBatching: { maxQueueDelay: 2 } })).toThrow(
        "'dynamicBatching' has an unknown key 'maxQueueDelay' (did you mean 'maxQueueDelayMs'?)",
      );
      expect(parse({ session: { warmup: [{ inputs: { x: { shap: [1] } } }] } })).toThrow(
        "'session.warmup[0].inputs.x' has an unknown key 'shap' (did you mean 'shape'?)",
      );
      // Every documented key is still taken.
      expect(
        parse({
          session: {
            graphOptimizationLevel: 'basic',
            intraOpThreads: 1,
            interOpThreads: 1,
            executionProviders: ['cpu'],
            warmup: false,
            preferOrtFormat: false,
            useModelBytesDirectly: false,
            disablePrepacking: true,
          },
          dynamicBatching: { maxBatchSize: 4, maxQueueDelayMs: 1, maxQueueSize: 2 },
        })(),
      ).toMatchObject({ session: { warmup: { mode: 'off' } }, dynamicBatching: { maxQueueSize: 2 } });
    });

    it('checks emptyDims against the inputs of the model once they are known', () => {
      const signature = {
        inputs: [
          { name: 'input_ids', shape: [-1, -1] },
          { name: 'attention_mask', shape: [-1, -1] },
          { name: 'opaque', shape: null },
        ],
      };
      expect(emptyDimsProblems({ input_ids: [1], opaque: [5] }, signature)).toEqual([]);
      expect(emptyDimsProblems({ input_id: [1], colour: [0], attention_mask: [2] }, signature)).toEqual([
        "'emptyDims' names input 'input_id', which the model does not have (did you mean 'input_ids'?)",
        "'emptyDims' names input 'colour', which the model does not have (known: input_ids, attention_mask, opaque)",
        "'emptyDims.attention_mask' lists dim 2 but input 'attention_mask' has rank 2",
      ]);
      expect(() => assertEmptyDimsMatch("model 'm' version 1", { input_id: [1] }, signature)).toThrow(
        ModelConfigError,
      );
    });

    it('reports a malformed config.json with every problem', async () => {
      const { store, registry } = setup();
      store.configs.set(
        'm',
        JSON.stringify({ versions: { '1': { sha256: 'xyz', size: -1 } }, maxBatchSize: 'big' }),
      );
      const error = await registry.resolve('m').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelConfigError);
      expect((error as Error).message).toMatch(/sha256.*64 lowercase hex/);
      expect((error as Error).message).toMatch(/size.*positive integer/);
      expect((error as Error).message).toMatch(/maxBatchSize/);
    });
  });

  describe('a config.json that does not parse, with nothing cached', () => {
    it('is remembered with the load backoff: 503 with Retry-After and no store request until it ends', async () => {
      const { store, registry, advance } = setup(30_000);
      store.configs.set('m', '{"versions": {');
      const first = await registry.resolve('m').catch((e: unknown) => e);
      expect(first).toBeInstanceOf(ModelConfigError);
      expect(store.count('config:m')).toBe(1);
      // A flood within the backoff: answered from memory, with the reason and when to come back.
      for (let i = 0; i < 50; i++) {
        const error = await registry.resolve('m').catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ModelLoadBackoffError);
        expect(error).toMatchObject({ status: 503, code: 'model_config_invalid' });
        expect((error as ModelLoadBackoffError).headers).toEqual({ 'retry-after': '1' });
        expect((error as Error).message).toBe(
          "model 'm': config.json is not valid JSON (not tried again for 1 s)",
        );
      }
      expect(store.count('config:m')).toBe(1);
      // Each failure in a row doubles the wait: 1 s, then 2 s.
      advance(1000);
      await expect(registry.resolve('m')).rejects.toBeInstanceOf(ModelConfigError);
      expect(store.count('config:m')).toBe(2);
      advance(1999);
      await expect(registry.resolve('m')).rejects.toBeInstanceOf(ModelLoadBackoffError);
      expect(store.count('config:m')).toBe(2);
      // A reader that must know now (a batch job's recheck) reads past it.
      await expect(registry.resolve('m', undefined, { fresh: true })).rejects.toBeInstanceOf(
        ModelConfigError,
      );
      expect(store.count('config:m')).toBe(3);
      // Fixed: read once the backoff ends, served, and forgotten.
      store.configs.delete('m');
      store.addVersion('m', '1', Buffer.from('a'));
      advance(4000);
      await expect(registry.resolve('m')).resolves.toMatchObject({ version: '1' });
      expect(store.count('config:m')).toBe(4);
    });
  });

  describe('config revalidation', () => {
    it('re-reads config.json only after the TTL, conditionally, and picks up a new default', async () => {
      const { store, registry, advance } = setup(30_000);
      store.addVersion('m', '1', Buffer.from('a'));
      await registry.resolve('m');
      await registry.resolve('m');
      expect(store.count('config:m')).toBe(1);
      advance(31_000);
      await registry.resolve('m'); // not modified: conditional read, same config
      expect(store.count('config:m')).toBe(2);
      store.addVersion('m', '2', Buffer.from('b'));
      expect((await registry.resolve('m')).version).toBe('1'); // still within the new TTL
      advance(31_000);
      expect((await registry.resolve('m')).version).toBe('2');
    });

    it('answers a missing model from memory within the TTL, then asks the store again', async () => {
      const { store, registry, advance } = setup(30_000);
      for (let i = 0; i < 5; i += 1)
        await expect(registry.resolve('later')).rejects.toThrow("model 'later' not found");
      expect(store.count('config:later')).toBe(1);
      store.addVersion('later', '1', Buffer.from('a'));
      advance(31_000);
      expect((await registry.resolve('later')).version).toBe('1');
      expect(store.count('config:later')).toBe(2);
    });

    it('reads config.json now when asked for fresh, past the missing-name cache and the TTL', async () => {
      const { store, registry } = setup();
      await expect(registry.resolve('late')).rejects.toBeInstanceOf(ModelNotFoundError);
      store.addVersion('late', '1', Buffer.from('v1'));
      await expect(registry.resolve('late')).rejects.toBeInstanceOf(ModelNotFoundError);
      expect(store.count('config:late')).toBe(1);
      expect((await registry.resolve('late', undefined, { fresh: true })).version).toBe('1');
      expect(store.count('config:late')).toBe(2);
      // A version published within the TTL: a fresh read asks (conditionally) and finds it.
      store.addVersion('late', '2', Buffer.from('v2'));
      await expect(registry.resolve('late', '2')).rejects.toBeInstanceOf(ModelNotFoundError);
      expect((await registry.resolve('late', '2', { fresh: true })).version).toBe('2');
      expect(store.count('config:late')).toBe(3);
    });

    it('shares one config read between concurrent requests', async () => {
      const { store, registry } = setup();
      store.addVersion('m', '1', Buffer.from('a'));
      await Promise.all(Array.from({ length: 10 }, () => registry.resolve('m')));
      expect(store.count('config:m')).toBe(1);
    });

    it('keeps serving the last good config when a re-read fails', async () => {
      const { store, registry, advance } = setup(1000);
      store.addVersion('m', '1', Buffer.from('a'));
      await registry.resolve('m');
      advance(2000);
      store.failNext = new Error('bucket unreachable');
      expect((await registry.resolve('m')).version).toBe('1');
    });

    it('keeps the last good config when a re-read does not parse, and reports it', async () => {
      const store = new FakeStore();
      const telemetry = new RecordingTelemetry();
      let now = 0;
      const registry = new ModelRegistry({ store, configTtlMs: 1000, clock: () => now, telemetry });
      store.addVersion('m', '1', Buffer.from('a'));
      await registry.resolve('m');
      store.configs.set('m', '{"versions": {"2": {"sha256": "truncated');
      now += 2000;

      expect((await registry.resolve('m')).version).toBe('1');
      expect(telemetry.ofType('config-rejected')).toEqual([
        { type: 'config-rejected', model: 'm', error: expect.any(ModelConfigError) },
      ]);
      expect(store.count('config:m')).toBe(2);
      await registry.resolve('m'); // within the TTL again: no read
      expect(store.count('config:m')).toBe(2);
    });

    it('reads a distrusted config again at once and unconditionally, so other content under the real ETag does not stick', async () => {
      const { store, registry, advance } = setup(1000);
      store.addVersion('m', '1', Buffer.from('real'));
      const real = (await store.readConfig('m')) as { text: string; etag: string };
      const poisoned = JSON.stringify({
        versions: { '1': { sha256: sha256(Buffer.from('other')), size: 5 } },
      });
      const read = jest.spyOn(store, 'readConfig').mockResolvedValueOnce({ text: poisoned, etag: real.etag });
      expect((await registry.resolve('m')).sha256).toBe(sha256(Buffer.from('other')));
      advance(2000);
      // A conditional re-read is answered 304 (the object never changed): the poisoned config stays.
      expect((await registry.resolve('m')).sha256).toBe(sha256(Buffer.from('other')));
      expect(read.mock.calls.at(-1)).toEqual(['m', real.etag]);

      registry.distrust('m');

      expect((await registry.resolve('m')).sha256).toBe(sha256(Buffer.from('real')));
      expect(read.mock.calls.at(-1)).toEqual(['m', undefined]);
      await registry.resolve('m'); // trusted again, within the TTL: no read
      expect(read).toHaveBeenCalledTimes(3);
    });

    it('turns a store failure without a cached config into a 503 naming the model', async () => {
      const { store, registry } = setup();
      store.failNext = new Error('bucket unreachable');
      const error = await registry.resolve('m').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelLoadError);
      expect((error as Error).message).toContain("model 'm'");
    });
  });
});
