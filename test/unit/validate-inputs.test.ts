import { InvalidInputError, PayloadTooLargeError } from '../../shared/core/errors';
import type { InferInput } from '../../shared/core/protocol/infer-types';
import type { ModelSignature } from '../../shared/core/tensor';
import { validateInputs, validateOutputs } from '../../shared/core/validate-inputs';

/** An image classifier and a recurrent model whose state has its batch axis second (like silero VAD). */
const SIGNATURE: ModelSignature = {
  inputs: [
    { name: 'image', datatype: 'FP32', shape: [-1, 3, 2, 2] },
    { name: 'state', datatype: 'FP32', shape: [2, -1, 4] },
    { name: 'sr', datatype: 'INT64', shape: [] },
  ],
  outputs: [
    { name: 'logits', datatype: 'FP32', shape: [-1, 10] },
    { name: 'state_out', datatype: 'FP32', shape: [2, -1, 4] },
  ],
};

function tensor(name: string, shape: number[], datatype: InferInput['datatype'] = 'FP32'): InferInput {
  const count = shape.reduce((n, d) => n * d, 1);
  const data = datatype === 'INT64' ? new BigInt64Array(count) : new Float32Array(count);
  return { name, datatype, shape, data };
}

const valid = (batch = 1): InferInput[] => [
  tensor('image', [batch, 3, 2, 2]),
  tensor('state', [2, batch, 4]),
  tensor('sr', [], 'INT64'),
];

describe('validateInputs', () => {
  it('returns the feeds by name when every rule holds', () => {
    const inputs = valid(4);
    const feeds = validateInputs(inputs, SIGNATURE, { maxBatchSize: 8 });
    expect(Object.keys(feeds).sort()).toEqual(['image', 'sr', 'state']);
    expect(feeds.image).toEqual({ datatype: 'FP32', shape: [4, 3, 2, 2], data: inputs[0]?.data });
    expect(feeds.image?.data).toBe(inputs[0]?.data);
  });

  it('takes inputs in any order', () => {
    expect(() => validateInputs(valid().reverse(), SIGNATURE, { maxBatchSize: 0 })).not.toThrow();
  });

  it('accepts any batch when maxBatchSize is 0', () => {
    expect(() => validateInputs(valid(1000), SIGNATURE, { maxBatchSize: 0 })).not.toThrow();
  });

  it('accepts a batch equal to maxBatchSize', () => {
    expect(() => validateInputs(valid(8), SIGNATURE, { maxBatchSize: 8 })).not.toThrow();
  });

  it('holds inputs with a fixed dim 0 to that dim, not to the batch limit', () => {
    // state is [2, batch, 4]: its dim 0 (2) is over maxBatchSize 1 but is not a batch axis.
    expect(() => validateInputs(valid(1), SIGNATURE, { maxBatchSize: 1 })).not.toThrow();
  });

  const replace = (name: string, replacement: InferInput | undefined): InferInput[] =>
    valid().flatMap((i) => (i.name !== name ? [i] : replacement === undefined ? [] : [replacement]));

  it.each<[string, InferInput[], number, RegExp]>([
    [
      'an unknown input',
      [...valid(), tensor('extra', [1])],
      0,
      /^the model has no input 'extra' \(inputs: image, state, sr\)$/,
    ],
    ['a duplicate input', [...valid(), tensor('sr', [], 'INT64')], 0, /^input 'sr' appears more than once$/],
    [
      'a missing input',
      replace('state', undefined),
      0,
      /^missing input 'state' \(the model takes image, state, sr\)$/,
    ],
    ['missing inputs', [tensor('sr', [], 'INT64')], 0, /^missing inputs 'image', 'state' \(the model takes/],
    [
      "a datatype other than the model's",
      replace('sr', tensor('sr', [], 'FP32')),
      0,
      /^input 'sr': datatype is FP32 but the model takes INT64$/,
    ],
    [
      "a rank other than the model's",
      replace('image', tensor('image', [3, 2, 2])),
      0,
      /^input 'image': shape \[3,2,2\] has rank 3 but the model takes rank 4 \[-1,3,2,2\]$/,
    ],
    [
      'a fixed dim that differs',
      replace('image', tensor('image', [1, 4, 2, 2])),
      0,
      /^input 'image': dim 1 is 4 but the model takes 3 \(shape \[-1,3,2,2\]\)$/,
    ],
    [
      'a fixed dim 0 that differs',
      replace('state', tensor('state', [3, 1, 4])),
      0,
      /^input 'state': dim 0 is 3 but the model takes 2 \(shape \[2,-1,4\]\)$/,
    ],
    [
      'a batch over maxBatchSize',
      valid(9),
      8,
      /^input 'image': batch size 9 is over the model's max batch size 8$/,
    ],
    [
      'data that does not match the shape',
      replace('image', { name: 'image', datatype: 'FP32', shape: [1, 3, 2, 2], data: new Float32Array(11) }),
      0,
      /^input 'image': shape \[1,3,2,2\] holds 12 elements but data has 11$/,
    ],
  ])('refuses %s (400)', (_label, inputs, maxBatchSize, message) => {
    const run = () => validateInputs(inputs, SIGNATURE, { maxBatchSize: maxBatchSize });
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });

  it('refuses a tensor over the element limit (413)', () => {
    const run = () => validateInputs(valid(2), SIGNATURE, { maxBatchSize: 0 }, { maxTensorElements: 16 });
    expect(run).toThrow(PayloadTooLargeError);
    expect(run).toThrow("input 'image': shape [2,3,2,2] holds 24 elements, over the limit of 16");
  });

  it('keeps a hostile input name away from Object.prototype', () => {
    const signature: ModelSignature = {
      inputs: [{ name: '__proto__', datatype: 'FP32', shape: [1] }],
      outputs: [],
    };
    const feeds = validateInputs([tensor('__proto__', [1])], signature, { maxBatchSize: 0 });
    expect(Object.keys(feeds)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>).datatype).toBeUndefined();
  });
});

/** A text model: ids and mask share their symbolic dims, as an exporter with dynamic axes writes them. */
const TEXT: ModelSignature = {
  inputs: [
    { name: 'ids', datatype: 'INT64', shape: [-1, -1], dims: ['batch', 'seq'] },
    { name: 'mask', datatype: 'INT64', shape: [-1, -1], dims: ['batch', 'seq'] },
    { name: 'pad', datatype: 'FP32', shape: [0, -1], dims: [0, ''] },
  ],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
};
const text = (ids: number[], mask: number[] = ids, pad: number[] = [0, 1]): InferInput[] => [
  tensor('ids', ids, 'INT64'),
  tensor('mask', mask, 'INT64'),
  tensor('pad', pad),
];

describe('validateInputs: shape edges', () => {
  it.each<[string, number[], RegExp]>([
    [
      'an empty sequence',
      [1, 0],
      /^input 'ids': dim 1 is 0 \(an empty tensor, shape \[1,0\]\); this model does not take empty dims there \(config.json 'emptyDims' can allow it\)$/,
    ],
    [
      'an empty batch',
      [0, 5],
      /^input 'ids': dim 0 is 0 \(an empty tensor, shape \[0,5\]\); this model does not take empty batches there/,
    ],
    ['both empty', [0, 0], /^input 'ids': dim 0 is 0/],
  ])('refuses %s by default (400), before onnxruntime sees it', (_label, shape, message) => {
    const run = () => validateInputs(text(shape), TEXT, { maxBatchSize: 8 });
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });

  it('takes the zero dims config.json lists for an input, and only those', () => {
    const rules = { maxBatchSize: 8, emptyDims: { ids: [1], mask: [1] } };
    expect(validateInputs(text([2, 0]), TEXT, rules).ids?.shape).toEqual([2, 0]);
    expect(() => validateInputs(text([0, 3]), TEXT, rules)).toThrow(/^input 'ids': dim 0 is 0/);
    expect(() => validateInputs(text([2, 0]), TEXT, { maxBatchSize: 8, emptyDims: { ids: [1] } })).toThrow(
      /^input 'mask': dim 1 is 0/,
    );
  });

  it('takes a dim 0 that the model itself fixes at 0, and never looks emptyDims up on Object.prototype', () => {
    expect(() => validateInputs(text([1, 2]), TEXT, { maxBatchSize: 8 })).not.toThrow();
    const signature: ModelSignature = {
      inputs: [{ name: 'constructor', datatype: 'FP32', shape: [-1] }],
      outputs: [],
    };
    const run = () =>
      validateInputs([tensor('constructor', [0])], signature, { maxBatchSize: 0, emptyDims: {} });
    expect(run).toThrow(/^input 'constructor': dim 0 is 0/);
  });

  it('refuses dims that share a symbolic name in the model but differ (400), across and within inputs', () => {
    expect(() => validateInputs(text([2, 3], [1, 3]), TEXT, { maxBatchSize: 8 })).toThrow(
      "input 'mask': dim 0 ('batch') is 1 but input 'ids' dim 0 ('batch') is 2: the model names both 'batch', so they must be equal",
    );
    expect(() => validateInputs(text([2, 3], [2, 4]), TEXT, { maxBatchSize: 8 })).toThrow(
      /^input 'mask': dim 1 \('seq'\) is 4 but input 'ids' dim 1 \('seq'\) is 3/,
    );
    const square: ModelSignature = {
      inputs: [{ name: 'a', datatype: 'FP32', shape: [-1, -1], dims: ['n', 'n'] }],
      outputs: [],
    };
    expect(() => validateInputs([tensor('a', [2, 3])], square, { maxBatchSize: 0 })).toThrow(
      /^input 'a': dim 1 \('n'\) is 3 but input 'a' dim 0 \('n'\) is 2/,
    );
    // Unnamed dynamic dims ('') are not tied to each other.
    expect(() => validateInputs(text([2, 3], [2, 3], [0, 7]), TEXT, { maxBatchSize: 8 })).not.toThrow();
  });

  it('refuses a huge dim beside an empty one as the huge tensor it describes (413)', () => {
    const rules = { maxBatchSize: 0, emptyDims: { ids: [0], mask: [0] } };
    const huge = [
      tensor('ids', [0, 2 ** 40], 'INT64'),
      tensor('mask', [0, 2 ** 40], 'INT64'),
      tensor('pad', [0, 1]),
    ];
    const run = () => validateInputs(huge, TEXT, rules, { maxTensorElements: 1 << 24 });
    expect(run).toThrow(PayloadTooLargeError);
    expect(run).toThrow(
      "input 'ids': shape [0,1099511627776] spans 1099511627776 elements (its empty dims aside), over the limit of 16777216",
    );
  });

  it('takes the edges that are fine: dims of 1 and a batch of exactly maxBatchSize', () => {
    expect(() => validateInputs(text([1, 1]), TEXT, { maxBatchSize: 1 })).not.toThrow();
    expect(() => validateInputs(text([8, 1]), TEXT, { maxBatchSize: 8 })).not.toThrow();
    expect(() => validateInputs(text([9, 1]), TEXT, { maxBatchSize: 8 })).toThrow(/batch size 9 is over/);
  });
});

describe('validateOutputs', () => {
  it('returns undefined (every output) when none is requested', () => {
    expect(validateOutputs(undefined, SIGNATURE)).toBeUndefined();
    expect(validateOutputs([], SIGNATURE)).toBeUndefined();
  });

  it('returns the requested names in request order, from names or requested outputs', () => {
    expect(validateOutputs([{ name: 'state_out' }, { name: 'logits', binaryData: true }], SIGNATURE)).toEqual(
      ['state_out', 'logits'],
    );
    expect(validateOutputs(['logits'], SIGNATURE)).toEqual(['logits']);
  });

  it.each([
    [
      'an output the model lacks',
      [{ name: 'probs' }],
      /^the model has no output 'probs' \(outputs: logits, state_out\)$/,
    ],
    [
      'an output twice',
      [{ name: 'logits' }, { name: 'logits' }],
      /^output 'logits' is requested more than once$/,
    ],
  ])('refuses %s', (_label, requested, message) => {
    const run = () => validateOutputs(requested, SIGNATURE);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });
});
