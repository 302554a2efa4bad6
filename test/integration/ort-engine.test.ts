import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { OrtEngine, type OrtLoadedModel, runErrorMessage } from '../../shared/adapters/ort-engine';
import { InputRejectedError, InvalidInputError, ModelLoadError } from '../../shared/core/errors';
import { parseModelConfig } from '../../shared/core/model-config';
import type { ArtifactFormat, EngineSessionOptions } from '../../shared/core/ports';
import { DATATYPES, type Tensor } from '../../shared/core/tensor';
import { synthesizeInputs } from '../../shared/core/warmup';
import {
  buildAddModel,
  buildFixedShapeModel,
  buildLinearModel,
  buildMlpModel,
  buildTypedIdentityModel,
  LINEAR_IN,
  LINEAR_OUT,
  LINEAR_WEIGHTS,
  TYPED_IDENTITY_WIDTH,
  typedIdentityNames,
} from '../../tools/onnx/model-builder';
import { convertToOrtFormat } from '../../tools/onnx/ort-format';
import { textDirectionModelPath, writeModelVersion, writeSampleRepository } from '../../tools/sample-models';
import { ENGINE_OPTIONS, fp32, SMALL_MLP, sampleData } from '../support/engine-fixtures';
import { expectClose } from '../support/golden';

const MLP = SMALL_MLP;
/** What must never reach a client: source files, C++ names, the build's path. */
const NATIVE = /\.(?:cc|h|cpp)\b|::|onnxruntime_src/;

const engine = new OrtEngine({ defaultIntraOpThreads: 1 });
const loaded: OrtLoadedModel[] = [];

async function load(
  bytes: Uint8Array,
  format: ArtifactFormat = 'onnx',
  options: Partial<EngineSessionOptions> = {},
): Promise<OrtLoadedModel> {
  const model = await engine.load({ bytes, format }, { ...ENGINE_OPTIONS, ...options });
  loaded.push(model);
  return model;
}

let scratch: string;
let linearOrt: Uint8Array;
let mlpOnnx: Uint8Array;
let mlpOrt: Uint8Array;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'ort-engine-test-'));
  linearOrt = await convertToOrtFormat(buildLinearModel(), join(scratch, 'linear.ort'));
  mlpOnnx = buildMlpModel(MLP);
  mlpOrt = await convertToOrtFormat(mlpOnnx, join(scratch, 'mlp.ort'));
});

afterAll(async () => {
  await Promise.all(loaded.map((m) => m.release()));
  await rm(scratch, { recursive: true, force: true });
});

describe('OrtEngine', () => {
  describe('constructor', () => {
    it('refuses a default thread count below 1', () => {
      expect(() => new OrtEngine({ defaultIntraOpThreads: 0 })).toThrow(RangeError);
    });
  });

  describe('load', () => {
    it('reads the signature with symbolic dims as -1 and keeps their names', async () => {
      const model = await load(buildLinearModel());
      expect(model.signature).toEqual({
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, LINEAR_IN], dims: ['batch', LINEAR_IN] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, LINEAR_OUT], dims: ['batch', LINEAR_OUT] }],
      });
      expect(model.provider).toBe('cpu');
      expect(model.fallbacks).toEqual([]);
    });

    it('reads fixed shapes without dims and every input of a two-input model', async () => {
      const fixed = await load(buildFixedShapeModel());
      expect(fixed.signature.inputs).toEqual([{ name: 'x', datatype: 'FP32', shape: [2, 3] }]);
      const add = await load(buildAddModel());
      expect(add.signature.inputs.map((i) => [i.name, i.shape])).toEqual([
        ['a', [-1, 4]],
        ['b', [-1, 4]],
      ]);
    });

    it('maps every element type to its OIP datatype', async () => {
      const model = await load(buildTypedIdentityModel());
      for (const datatype of DATATYPES) {
        const { input, output } = typedIdentityNames(datatype);
        expect(model.signature.inputs.find((i) => i.name === input)?.datatype).toBe(datatype);
        expect(model.signature.outputs.find((o) => o.name === output)?.datatype).toBe(datatype);
      }
    });

    it('reads only the bytes of the view it is given (byteOffset and length)', async () => {
      const bytes = buildLinearModel();
      const padded = new Uint8Array(bytes.byteLength + 13).fill(0xff);
      padded.set(bytes, 7);
      const model = await load(padded.subarray(7, 7 + bytes.byteLength));
      expect(model.signature.inputs[0]?.name).toBe('x');
    });

    it('falls back from providers that cannot load here to cpu and says why', async () => {
      const model = await load(buildLinearModel(), 'onnx', { executionProviders: ['coreml', 'cuda', 'cpu'] });
      expect(model.provider).toBe('cpu');
      expect(model.fallbacks.map((f) => f.provider)).toEqual(['coreml', 'cuda']);
      expect(model.fallbacks[1]?.error.message).toMatch(/cuda/i);
    });

    it('fails with ModelLoadError when no provider loads', async () => {
      const attempt = engine.load(
        { bytes: buildLinearModel(), format: 'onnx' },
        { ...ENGINE_OPTIONS, executionProviders: ['cuda'] },
      );
      await expect(attempt).rejects.toThrow(ModelLoadError);
      await expect(attempt).rejects.toThrow(/cuda:/);
    });

    it('fails with ModelLoadError on bytes that are not a model', async () => {
      const attempt = engine.load(
        { bytes: new TextEncoder().encode('not a model'), format: 'onnx' },
        ENGINE_OPTIONS,
      );
      await expect(attempt).rejects.toThrow(ModelLoadError);
      // The message (exposed in a 503) keeps onnxruntime's reason but not its source paths.
      const error = (await attempt.catch((e: unknown) => e)) as Error;
      expect(error.message).toMatch(/^onnxruntime could not create the session \(cpu: /);
      expect(error.message).not.toMatch(NATIVE);
    });

    it('fails with ModelLoadError when no provider is configured', async () => {
      const attempt = engine.load(
        { bytes: buildLinearModel(), format: 'onnx' },
        { ...ENGINE_OPTIONS, executionProviders: [] },
      );
      await expect(attempt).rejects.toThrow(ModelLoadError);
    });

    it('loads the ORT-format copy, also from an unaligned view', async () => {
      const padded = new Uint8Array(linearOrt.byteLength + 3);
      padded.set(linearOrt, 3);
      const model = await load(padded.subarray(3), 'ort');
      expect(model.signature.inputs[0]).toEqual({
        name: 'x',
        datatype: 'FP32',
        shape: [-1, LINEAR_IN],
        dims: ['batch', LINEAR_IN],
      });
    });

    // Proof that the config entries reach onnxruntime: with them, the session reads its weights from our
    // buffer, so overwriting them there changes the answer; without them, onnxruntime holds a copy.
    it.each([
      [true, 'reads'],
      [false, 'does not read'],
    ])('with useModelBytesDirectly %s, the session %s its weights from the given bytes', async (direct) => {
      const bytes = mlpOrt.slice();
      const model = await load(bytes, 'ort', { useModelBytesDirectly: direct, disablePrepacking: true });
      const x = fp32([1, MLP.inputSize], () => 1);
      const before = (await model.run({ x })).y?.data as Float32Array;

      const graph = onnx.ModelProto.decode(mlpOnnx).graph;
      const lastWeight = graph?.initializer?.find((t) => t.name === 'w1')?.rawData as Uint8Array;
      const lastBias = graph?.initializer?.find((t) => t.name === 'b1')?.rawData as Uint8Array;
      const at = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(lastWeight);
      expect(at).toBeGreaterThan(0);
      bytes.fill(0, at, at + lastWeight.byteLength);

      const after = (await model.run({ x })).y?.data as Float32Array;
      if (direct) {
        // y = relu(...) · 0 + b1
        expect(Array.from(after)).toEqual(Array.from(new Float32Array(new Uint8Array(lastBias).buffer)));
        expect(Array.from(after)).not.toEqual(Array.from(before));
      } else {
        expect(after).toEqual(before);
      }
    });
  });

  describe('run', () => {
    it('matches x · Wᵀ + b computed independently in JS', async () => {
      const model = await load(buildLinearModel());
      const batch = 5;
      const x = fp32([batch, LINEAR_IN], (i) => Math.sin(i * 0.7) * 3);
      const expected: number[] = [];
      for (let r = 0; r < batch; r++) {
        for (let o = 0; o < LINEAR_OUT; o++) {
          let sum = LINEAR_WEIGHTS.bias[o] as number;
          for (let i = 0; i < LINEAR_IN; i++) {
            sum += (x.data[r * LINEAR_IN + i] as number) * (LINEAR_WEIGHTS.weight[o]?.[i] as number);
          }
          expected.push(sum);
        }
      }
      const { y } = await model.run({ x });
      expect(y?.datatype).toBe('FP32');
      expect(y?.shape).toEqual([batch, LINEAR_OUT]);
      expectClose(y?.data as Float32Array, expected, { atol: 1e-5, rtol: 1e-5 });
    });

    it('answers concurrent runs each with its own result', async () => {
      const model = await load(buildAddModel());
      const runs = [1, 2, 3, 4].map((k) =>
        model.run({ a: fp32([k, 4], () => k), b: fp32([k, 4], (i) => i) }).then((r) => ({ k, r })),
      );
      for (const { k, r } of await Promise.all(runs)) {
        expect(r.sum?.shape).toEqual([k, 4]);
        expect(Array.from(r.sum?.data as Float32Array)).toEqual(
          Array.from({ length: k * 4 }, (_, i) => k + i),
        );
      }
    });

    it('round-trips every datatype exactly', async () => {
      const model = await load(buildTypedIdentityModel());
      const feeds: Record<string, Tensor> = {};
      for (const datatype of DATATYPES) {
        feeds[typedIdentityNames(datatype).input] = {
          datatype,
          shape: [2, TYPED_IDENTITY_WIDTH],
          data: sampleData(datatype),
        };
      }
      const outputs = await model.run(feeds);
      for (const datatype of DATATYPES) {
        const out = outputs[typedIdentityNames(datatype).output];
        expect(out?.datatype).toBe(datatype);
        expect(out?.shape).toEqual([2, TYPED_IDENTITY_WIDTH]);
        // Output string arrays come from the outer realm, so compare their kind, not their constructor.
        if (datatype === 'BYTES') expect(Array.isArray(out?.data)).toBe(true);
        else expect(out?.data.constructor).toBe(sampleData(datatype).constructor);
        expect(out?.data).toEqual(sampleData(datatype));
      }
    });

    it('returns only the outputs asked for', async () => {
      const model = await load(buildTypedIdentityModel());
      const feeds = synthesizeInputs(model.signature);
      const outputs = await model.run(feeds, ['out_fp32', 'out_bytes']);
      expect(Object.keys(outputs).sort()).toEqual(['out_bytes', 'out_fp32']);
    });

    it('gives the same outputs from the ORT-format copy, loaded zero-copy, as from the .onnx', async () => {
      const fromOnnx = await load(mlpOnnx, 'onnx');
      const fromOrt = await load(mlpOrt, 'ort', { useModelBytesDirectly: true, disablePrepacking: true });
      const x = fp32([3, MLP.inputSize], (i) => Math.cos(i));
      const a = (await fromOnnx.run({ x })).y;
      const b = (await fromOrt.run({ x })).y;
      expect(b?.shape).toEqual([3, MLP.outputSize]);
      expectClose(b?.data as Float32Array, a?.data as Float32Array, { atol: 1e-5, rtol: 1e-5 });
      // Only the session that reads its weights in place keeps the file's bytes alive.
      expect(fromOrt.retainedBytes).toBe(mlpOrt.byteLength);
      expect(fromOnnx.retainedBytes).toBe(0);
    });

    it('rejects a shape the graph refuses with InvalidInputError carrying the ORT message', async () => {
      const model = await load(buildLinearModel());
      const attempt = model.run({ x: fp32([1, LINEAR_IN - 1], () => 0) });
      await expect(attempt).rejects.toThrow(InvalidInputError);
      await expect(attempt).rejects.toThrow(/invalid dimensions for input: x/);
    });

    it('rejects data that does not fill its shape, a wrong type and a missing input with InvalidInputError', async () => {
      const model = await load(buildAddModel());
      const ok = fp32([1, 4], () => 1);
      const short: Tensor = { datatype: 'FP32', shape: [1, 4], data: new Float32Array(3) };
      const wrongType: Tensor = { datatype: 'INT32', shape: [1, 4], data: new Int32Array(4) };
      await expect(model.run({ a: ok, b: short })).rejects.toThrow(InvalidInputError);
      await expect(model.run({ a: ok, b: wrongType })).rejects.toThrow(InvalidInputError);
      await expect(model.run({ a: ok })).rejects.toThrow(InvalidInputError);
    });

    it('answers a run onnxruntime refuses without its C++ detail, which stays in the cause for logs', async () => {
      const model = await load(buildAddModel());
      const error = await model
        .run({ a: fp32([2, 4], () => 1), b: fp32([3, 4], () => 1) })
        .catch((e: unknown) => e as Error);
      expect(error).toBeInstanceOf(InputRejectedError);
      expect(error.message).toMatch(
        /^the model cannot run on these inputs: its Add node '[^']*' refused them: .*broadcast/,
      );
      expect(error.message).not.toMatch(NATIVE);
      expect((error.cause as Error).message).toMatch(/element_wise_ops\.h:\d+/);
    });

    it.each([
      [
        "Non-zero status code returned while running Reshape node. Name:'/enc/Reshape_4' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input shape:{5,0,8}, requested shape:{5,16}\n",
        "the model cannot run on these inputs: its Reshape node '/enc/Reshape_4' refused them: The input tensor cannot be reshaped to the requested shape. Input shape:{5,0,8}, requested shape:{5,16}",
      ],
      [
        "Non-zero status code returned while running Gather node. Name:'/embed/Gather' Status Message: indices element out of data bounds, idx=1000 must be within the inclusive range [-100,99]",
        "the model cannot run on these inputs: its Gather node '/embed/Gather' refused them: indices element out of data bounds, idx=1000 must be within the inclusive range [-100,99]",
      ],
      [
        'Something failed in /build/onnxruntime/core/x.cc:12 in onnxruntime::Foo::Bar',
        'the model cannot run on these inputs: Something failed in in onnxruntime refused it (details are in the logs)',
      ],
    ])('words an onnxruntime message for clients: %#', (message, expected) => {
      const clean = runErrorMessage(message);
      expect(clean).not.toMatch(NATIVE);
      if (!expected.includes('details are in the logs')) expect(clean).toBe(expected);
      else expect(clean).toMatch(/details are in the logs\)$/);
    });

    it('classifies with the real text-direction model: [N, 2] softmax rows', async () => {
      const bytes = new Uint8Array(await readFile(textDirectionModelPath()));
      const graph = onnx.ModelProto.decode(bytes).graph;
      const lastNode = graph?.node?.at(-1);
      expect(lastNode?.opType).toBe('Softmax');
      expect(lastNode?.output).toEqual([graph?.output?.[0]?.name]);

      const model = await load(bytes);
      expect(model.signature.inputs).toMatchObject([{ name: 'x', datatype: 'FP32', shape: [-1, 3, -1, -1] }]);
      expect(model.signature.outputs).toMatchObject([{ datatype: 'FP32', shape: [-1, 2] }]);

      const batch = 2;
      const x = fp32([batch, 3, 48, 192], (i) => Math.sin(i * 0.013) * (i % 2 === 0 ? 1 : -1));
      const outputs = await model.run({ x });
      const probabilities = outputs[model.signature.outputs[0]?.name as string];
      expect(probabilities?.shape).toEqual([batch, 2]);
      const p = probabilities?.data as Float32Array;
      for (let r = 0; r < batch; r++) {
        expect((p[2 * r] as number) + (p[2 * r + 1] as number)).toBeCloseTo(1, 5);
        expect(Math.min(p[2 * r] as number, p[2 * r + 1] as number)).toBeGreaterThanOrEqual(0);
      }
    });
  });

  describe('release', () => {
    it('releases once; a run afterwards rejects', async () => {
      const model = await engine.load({ bytes: buildLinearModel(), format: 'onnx' }, ENGINE_OPTIONS);
      await model.release();
      await model.release();
      await expect(model.run({ x: fp32([1, LINEAR_IN], () => 0) })).rejects.toThrow(/released/);
    });
  });
});

describe('synthesizeInputs', () => {
  it('synthesises zero inputs for every datatype that the model accepts as a warm-up run', async () => {
    const model = await load(buildTypedIdentityModel());
    const feeds = synthesizeInputs(model.signature);
    expect(Object.keys(feeds)).toHaveLength(DATATYPES.length);
    for (const datatype of DATATYPES) {
      const feed = feeds[typedIdentityNames(datatype).input];
      expect(feed?.datatype).toBe(datatype);
      expect(feed?.shape).toEqual([1, TYPED_IDENTITY_WIDTH]);
      expect(feed?.data).toHaveLength(TYPED_IDENTITY_WIDTH);
    }
    expect(feeds.in_bytes?.data).toEqual(['', '', '']);
    expect(feeds.in_int64?.data).toEqual(new BigInt64Array(3));
    const outputs = await model.run(feeds);
    expect(Object.keys(outputs)).toHaveLength(DATATYPES.length);
  });

  it('keeps fixed dims and warms up the real model with a batch of 1 and its named H and W at 64', async () => {
    const fixed = synthesizeInputs({ inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3] }], outputs: [] });
    expect(fixed.x?.shape).toEqual([2, 3]);
    const model = await load(new Uint8Array(await readFile(textDirectionModelPath())));
    const feeds = synthesizeInputs(model.signature);
    expect(feeds.x?.shape).toEqual([1, 3, 64, 64]);
    await expect(model.run(feeds)).resolves.toBeDefined();
  });
});

describe('writeSampleRepository', () => {
  it('writes linear and text-direction with ORT copies that config.json describes, then skips them', async () => {
    const repo = join(scratch, 'models');
    expect(await writeSampleRepository(repo)).toEqual([
      { model: 'linear', version: '1', changed: true },
      { model: 'text-direction', version: '1', changed: true },
    ]);
    for (const name of ['linear', 'text-direction']) {
      const config = parseModelConfig(name, await readFile(join(repo, name, 'config.json'), 'utf8'));
      expect(config.maxBatchSize).toBeGreaterThan(0);
      const info = config.versions['1'];
      const onnxBytes = await readFile(join(repo, name, '1', 'model.onnx'));
      const ortBytes = new Uint8Array(await readFile(join(repo, name, '1', 'model.ort')));
      expect(createHash('sha256').update(onnxBytes).digest('hex')).toBe(info?.sha256);
      expect(createHash('sha256').update(ortBytes).digest('hex')).toBe(info?.ort?.sha256);
      expect(ortBytes.byteLength).toBe(info?.ort?.size);
      const model = await load(ortBytes, 'ort', { disablePrepacking: true });
      expect(model.signature.outputs[0]?.shape.at(-1)).toBe(2);
    }
    const mtime = (await stat(join(repo, 'linear', 'config.json'))).mtimeMs;
    expect((await writeSampleRepository(repo)).map((r) => r.changed)).toEqual([false, false]);
    expect((await stat(join(repo, 'linear', 'config.json'))).mtimeMs).toBe(mtime);
  });

  it('adds a version to an existing config.json and keeps the others', async () => {
    const repo = join(scratch, 'versions');
    await writeModelVersion(repo, 'add', '1', buildAddModel(), { configPatch: { maxBatchSize: 8 } });
    const second = await writeModelVersion(repo, 'add', '2', buildLinearModel(), { ortBytes: linearOrt });
    expect(second.changed).toBe(true);
    const again = await writeModelVersion(repo, 'add', '2', buildLinearModel(), { ortBytes: linearOrt });
    expect(again.changed).toBe(false);
    const config = parseModelConfig('add', await readFile(join(repo, 'add', 'config.json'), 'utf8'));
    expect(Object.keys(config.versions)).toEqual(['1', '2']);
    expect(config.versions['1']?.ort).toBeUndefined();
    expect(config.versions['2']?.ort?.size).toBe(linearOrt.byteLength);
    expect(config.maxBatchSize).toBe(8);
  });
});
