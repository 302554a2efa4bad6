import { ModelConfigError } from '../../shared/core/errors';
import { parseModelConfig } from '../../shared/core/model-config';
import type { ModelSignature, Tensor } from '../../shared/core/tensor';
import {
  DEFAULT_WARMUP,
  defaultWarmupShapes,
  NO_WARMUP,
  parseWarmup,
  runWarmup,
  WarmupError,
  warmupFeeds,
  warmupToJson,
} from '../../shared/core/warmup';

/** Silero VAD's first release, as onnxruntime reports it: named dims, a batch axis inside the state. */
const SILERO_LEGACY: ModelSignature = {
  inputs: [
    { name: 'input', datatype: 'FP32', shape: [-1, -1], dims: ['batch', 'sequence'] },
    { name: 'sr', datatype: 'INT64', shape: [] },
    { name: 'h', datatype: 'FP32', shape: [2, -1, 64], dims: [2, 'batch', 64] },
    { name: 'c', datatype: 'FP32', shape: [2, -1, 64], dims: [2, 'batch', 64] },
  ],
  outputs: [{ name: 'output', datatype: 'FP32', shape: [-1, 1], dims: ['batch', 1] }],
};

/** Silero VAD v5: dynamic dims without names. */
const SILERO_V5: ModelSignature = {
  inputs: [
    { name: 'input', datatype: 'FP32', shape: [-1, -1], dims: [-1, -1] },
    { name: 'state', datatype: 'FP32', shape: [2, -1, 128], dims: [2, -1, 128] },
    { name: 'sr', datatype: 'INT64', shape: [] },
  ],
  outputs: [{ name: 'output', datatype: 'FP32', shape: [-1, 1] }],
};

function parsed(raw: unknown) {
  const problems: string[] = [];
  const warmup = parseWarmup(raw, problems);
  return { warmup, problems };
}

function sample(raw: unknown) {
  const { warmup, problems } = parsed([raw]);
  expect(problems).toEqual([]);
  if (warmup.mode !== 'samples') throw new Error('expected samples');
  return warmup.samples[0];
}

describe('defaultWarmupShapes', () => {
  it('keeps fixed dims, gives a batch axis 1 wherever its name appears and other named dims 64', () => {
    expect(defaultWarmupShapes(SILERO_LEGACY)).toEqual({
      input: [1, 64],
      sr: [],
      h: [2, 1, 64],
      c: [2, 1, 64],
    });
  });

  it('gives dynamic dims without a name 1, the one size that agrees with a batch of one', () => {
    expect(defaultWarmupShapes(SILERO_V5)).toEqual({ input: [1, 1], state: [2, 1, 128], sr: [] });
  });

  it('uses one size for a name shared by inputs, halved until no input holds more than 4M elements', () => {
    const signature: ModelSignature = {
      inputs: [
        { name: 'volume', datatype: 'FP32', shape: [-1, -1, -1, -1, -1], dims: ['n', 'd', 'h', 'w', 'c'] },
        { name: 'mask', datatype: 'BOOL', shape: [-1, -1, -1], dims: ['n', 'h', 'w'] },
      ],
      outputs: [],
    };
    // 64^4 is 16.7M elements; 32^4 is 1M.
    expect(defaultWarmupShapes(signature)).toEqual({ volume: [1, 32, 32, 32, 32], mask: [1, 32, 32] });
  });
});

describe('parseWarmup', () => {
  it('reads true and absent as the default run, false as none', () => {
    expect(parsed(true)).toEqual({ warmup: DEFAULT_WARMUP, problems: [] });
    expect(parsed(undefined)).toEqual({ warmup: DEFAULT_WARMUP, problems: [] });
    expect(parsed(false)).toEqual({ warmup: NO_WARMUP, problems: [] });
  });

  it('reads samples of shapes with zeros, seeded random data and given values', () => {
    const { warmup, problems } = parsed([
      {
        name: 'chunk',
        count: 3,
        inputs: {
          input: { shape: [1, 512], data: 'random', seed: 7 },
          state: { shape: [2, 1, 128] },
          sr: { shape: [], data: [16000] },
        },
      },
    ]);
    expect(problems).toEqual([]);
    expect(warmup).toEqual({
      mode: 'samples',
      samples: [
        {
          name: 'chunk',
          count: 3,
          inputs: [
            { name: 'input', shape: [1, 512], data: { kind: 'random', seed: 7 } },
            { name: 'state', shape: [2, 1, 128], data: { kind: 'zeros' } },
            { name: 'sr', shape: [], data: { kind: 'values', values: [16000] } },
          ],
        },
      ],
    });
    expect(parseWarmup(warmupToJson(warmup), [])).toEqual(warmup);
  });

  it.each([
    ['an object', { inputs: {} }, "'session.warmup' must be true, false or an array"],
    ['an empty array', [], "'session.warmup' must be true, false or an array"],
    ['a misspelt sample key', [{ input: {} }], "'session.warmup[0]' has an unknown key 'input'"],
    [
      'a misspelt input key',
      [{ inputs: { x: { shap: [1] } } }],
      "'session.warmup[0].inputs.x' has an unknown key 'shap'",
    ],
    [
      'a zero-extent dim',
      [{ inputs: { x: { shape: [1, 0] } } }],
      "'session.warmup[0].inputs.x.shape' must be",
    ],
    ['a huge shape', [{ inputs: { x: { shape: [65536, 65536] } } }], 'holds more than 16777216 elements'],
    ['a seed without random data', [{ inputs: { x: { seed: 3 } } }], 'applies to "data": "random" only'],
    ['an unknown data kind', [{ inputs: { x: { data: 'ones' } } }], 'must be "zeros", "random" or an array'],
    [
      'too few values',
      [{ inputs: { x: { shape: [2, 2], data: [1, 2] } } }],
      'has 2 values but shape [2, 2] holds 4',
    ],
    [
      'a count of 0',
      [{ count: 0, inputs: {} }],
      "'session.warmup[0].count' must be an integer from 1 to 100",
    ],
  ])('reports %s', (_, raw, message) => {
    const { warmup, problems } = parsed(raw);
    expect(problems.join('\n')).toContain(message);
    expect(warmup).toBe(DEFAULT_WARMUP);
  });
});

describe('config.json session.warmup', () => {
  const config = (warmup: unknown) =>
    JSON.stringify({ versions: { '1': { sha256: 'a'.repeat(64), size: 1 } }, session: { warmup } });

  it('keeps true and false working and reads samples', () => {
    expect(parseModelConfig('m', config(true)).session.warmup).toEqual({ mode: 'default' });
    expect(parseModelConfig('m', config(false)).session.warmup).toEqual({ mode: 'off' });
    const samples = parseModelConfig('m', config([{ inputs: { x: { shape: [1, 2], data: 'random' } } }]));
    expect(samples.session.warmup.mode).toBe('samples');
  });

  it('refuses a malformed warm-up with the key at fault', () => {
    expect(() => parseModelConfig('m', config('yes'))).toThrow(ModelConfigError);
    expect(() => parseModelConfig('m', config([{ inputs: { x: { shape: [1], dtype: 'FP32' } } }]))).toThrow(
      "'session.warmup[0].inputs.x' has an unknown key 'dtype'",
    );
  });
});

describe('warmupFeeds', () => {
  it('builds the default run: default shapes, zeros of each datatype', () => {
    const feeds = warmupFeeds(SILERO_LEGACY);
    expect(feeds.input).toEqual({ datatype: 'FP32', shape: [1, 64], data: new Float32Array(64) });
    expect(feeds.sr).toEqual({ datatype: 'INT64', shape: [], data: new BigInt64Array(1) });
    expect(feeds.h?.shape).toEqual([2, 1, 64]);
  });

  it('fills a sample: the same seeded values on every call, given values, defaults for the rest', () => {
    const chunk = sample({
      inputs: { input: { shape: [1, 512], data: 'random' }, sr: { shape: [], data: [16000] } },
    });
    const a = warmupFeeds(SILERO_LEGACY, chunk);
    const b = warmupFeeds(SILERO_LEGACY, chunk);
    const other = warmupFeeds(
      SILERO_LEGACY,
      sample({ inputs: { input: { shape: [1, 512], data: 'random', seed: 2 } } }),
    );
    const input = a.input?.data as Float32Array;
    expect(input).toHaveLength(512);
    expect(input).toEqual(b.input?.data);
    expect(input).not.toEqual(other.input?.data);
    expect(Math.min(...input)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...input)).toBeLessThan(1);
    expect(new Set(input).size).toBeGreaterThan(500);
    expect(a.sr?.data).toEqual(BigInt64Array.of(16000n));
    expect(a.h).toEqual({ datatype: 'FP32', shape: [2, 1, 64], data: new Float32Array(128) });
  });

  it('takes one value per element or one value for all, as the datatype holds them', () => {
    const signature: ModelSignature = {
      inputs: [
        { name: 'mask', datatype: 'BOOL', shape: [2] },
        { name: 'ids', datatype: 'INT32', shape: [-1, 3], dims: ['n', 3] },
        { name: 'text', datatype: 'BYTES', shape: [1] },
      ],
      outputs: [],
    };
    const feeds = warmupFeeds(
      signature,
      sample({
        inputs: {
          mask: { data: [true, false] },
          ids: { shape: [2, 3], data: [7] },
          text: { data: ['hello'] },
        },
      }),
    );
    expect(feeds.mask?.data).toEqual(Uint8Array.of(1, 0));
    expect(feeds.ids?.data).toEqual(Int32Array.of(7, 7, 7, 7, 7, 7));
    expect(feeds.text?.data).toEqual(['hello']);
  });

  it.each([
    [
      'an input the model lacks',
      { inputs: { inptu: { shape: [1, 512] } } },
      "warm-up input 'inptu' is not an input of the model (inputs: input, sr, h, c)",
    ],
    ['a wrong rank', { inputs: { input: { shape: [512] } } }, "input 'input': shape [512] has rank 1"],
    [
      'a wrong fixed dim',
      { inputs: { h: { shape: [2, 1, 32] } } },
      "input 'h': dim 2 is 32 but the model takes 64",
    ],
    [
      'a value the datatype cannot hold',
      { inputs: { sr: { data: [1.5] } } },
      "warm-up input 'sr': value 1.5 is not a valid INT64 value",
    ],
    [
      'values that do not fill the shape',
      { inputs: { sr: { data: [1, 2] } } },
      "warm-up input 'sr' has 2 values for 1 elements",
    ],
  ])('refuses %s, naming the input', (_, raw, message) => {
    expect(() => warmupFeeds(SILERO_LEGACY, sample(raw))).toThrow(WarmupError);
    expect(() => warmupFeeds(SILERO_LEGACY, sample(raw))).toThrow(message);
  });
});

describe('runWarmup', () => {
  function recordingModel(fail?: (feeds: Record<string, Tensor>) => boolean) {
    const runs: Record<string, Tensor>[] = [];
    return {
      runs,
      model: {
        signature: SILERO_LEGACY,
        async run(feeds: Readonly<Record<string, Tensor>>) {
          runs.push({ ...feeds });
          if (fail?.(feeds)) throw new Error('Pad reflect: pre-pad (96) exceeds maximum allowed (63)');
          return {};
        },
      },
    };
  }

  it('runs nothing when off, the default run once, and each sample its count of times', async () => {
    const off = recordingModel();
    await runWarmup(off.model, NO_WARMUP);
    expect(off.runs).toHaveLength(0);

    const byDefault = recordingModel();
    await runWarmup(byDefault.model, DEFAULT_WARMUP);
    expect(byDefault.runs.map((f) => f.input?.shape)).toEqual([[1, 64]]);

    const { warmup } = parsed([
      { count: 2, inputs: { input: { shape: [1, 512] } } },
      { inputs: { input: { shape: [1, 256] } } },
    ]);
    const samples = recordingModel();
    await runWarmup(samples.model, warmup);
    expect(samples.runs.map((f) => f.input?.shape)).toEqual([
      [1, 512],
      [1, 512],
      [1, 256],
    ]);
  });

  it("says which run failed, on what, and onnxruntime's reason", async () => {
    const { model } = recordingModel((feeds) => feeds.input?.shape[1] === 64);
    const attempt = runWarmup(model, DEFAULT_WARMUP);
    await expect(attempt).rejects.toThrow(WarmupError);
    await expect(attempt).rejects.toThrow(
      'the default warm-up run (input [1, 64] zeros, sr [] zeros, h [2, 1, 64] zeros, c [2, 1, 64] zeros) failed: Pad reflect: pre-pad (96)',
    );
    const { warmup } = parsed([{ name: 'short', inputs: { input: { shape: [1, 64], data: 'random' } } }]);
    await expect(runWarmup(model, warmup)).rejects.toThrow(
      "warm-up sample 'short' (input [1, 64] random, sr [] zeros, h [2, 1, 64] zeros, c [2, 1, 64] zeros) failed",
    );
  });
});
