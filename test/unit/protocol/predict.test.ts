import { InvalidInputError, PayloadTooLargeError } from '../../../shared/core/errors';
import { decodePredictRequest, encodePredictResponse } from '../../../shared/core/protocol/predict';
import type { Datatype, ModelSignature, TensorData } from '../../../shared/core/tensor';

const utf8 = new TextEncoder();
const body = (value: unknown) => utf8.encode(JSON.stringify(value));
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const ONE_INPUT: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
};

const TWO_INPUTS: ModelSignature = {
  inputs: [
    { name: 'ids', datatype: 'INT64', shape: [-1, -1] },
    { name: 'mask', datatype: 'BOOL', shape: [-1, -1] },
  ],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
};

describe('decodePredictRequest', () => {
  it('takes a bare nested array for a single-input model, shape from the nesting', () => {
    expect(
      decodePredictRequest(
        body([
          [1, 2, 3],
          [4, 5, 6],
        ]),
        ONE_INPUT,
      ),
    ).toEqual([{ name: 'x', datatype: 'FP32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }]);
  });

  it.each([
    ['an object by name', { x: [[1, 2, 3]] }],
    ['a wrapped array', { inputs: [[1, 2, 3]] }],
    ['a wrapped object', { inputs: { x: [[1, 2, 3]] } }],
  ])('takes %s', (_label, payload) => {
    expect(decodePredictRequest(body(payload), ONE_INPUT)).toEqual([
      { name: 'x', datatype: 'FP32', shape: [1, 3], data: new Float32Array([1, 2, 3]) },
    ]);
  });

  it('takes several inputs by name, each with its datatype from the signature', () => {
    const inputs = decodePredictRequest(
      body({ ids: [[1, '9007199254740993']], mask: [[true, false]] }),
      TWO_INPUTS,
    );
    expect(inputs).toEqual([
      { name: 'ids', datatype: 'INT64', shape: [1, 2], data: new BigInt64Array([1n, 9007199254740993n]) },
      { name: 'mask', datatype: 'BOOL', shape: [1, 2], data: new Uint8Array([1, 0]) },
    ]);
  });

  it('takes a bare value as a scalar (shape [])', () => {
    const signature: ModelSignature = { inputs: [{ name: 'sr', datatype: 'INT64', shape: [] }], outputs: [] };
    expect(decodePredictRequest(body(16000), signature)).toEqual([
      { name: 'sr', datatype: 'INT64', shape: [], data: new BigInt64Array([16000n]) },
    ]);
  });

  it('treats {"inputs": [...]} as the input named inputs when the model has one', () => {
    const signature: ModelSignature = {
      inputs: [
        { name: 'inputs', datatype: 'INT32', shape: [-1] },
        { name: 'other', datatype: 'INT32', shape: [-1] },
      ],
      outputs: [],
    };
    expect(decodePredictRequest(body({ inputs: [1, 2] }), signature)).toEqual([
      { name: 'inputs', datatype: 'INT32', shape: [2], data: new Int32Array([1, 2]) },
    ]);
  });

  it.each<[string, Uint8Array, ModelSignature, RegExp]>([
    ['malformed JSON', utf8.encode('[[1,2'), ONE_INPUT, /^the request body is not valid JSON/],
    ['null', body(null), ONE_INPUT, /^the request body must be a nested array or an object/],
    [
      'a bare array for a two-input model',
      body([[1]]),
      TWO_INPUTS,
      /^the model has 2 inputs \(ids, mask\): send an object of input name -> nested array$/,
    ],
    ['an unknown input', body({ x: [1], z: [2] }), ONE_INPUT, /^the model has no input 'z' \(inputs: x\)$/],
    [
      'ragged nesting',
      body([[1, 2, 3], [4]]),
      ONE_INPUT,
      /^input 'x': nested data is not rectangular: data\[1\] has 1 elements, expected 3$/,
    ],
    ['a bad value', body([[1, 'a', 3]]), ONE_INPUT, /^input 'x': element 1 \("a"\) is not a finite number$/],
    [
      'a number for a BOOL input',
      body({ ids: [[1]], mask: [[1]] }),
      TWO_INPUTS,
      /^input 'mask': element 0 \(1\) is not true or false for BOOL$/,
    ],
  ])('refuses %s', (_label, bytes, signature, message) => {
    const run = () => decodePredictRequest(bytes, signature);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });

  it.each(['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'])(
    'refuses the string "%s" as a float (it is no documented non-finite value)',
    (name) => {
      const run = () => decodePredictRequest(body([[1, name, 3]]), ONE_INPUT);
      expect(run).toThrow(InvalidInputError);
      expect(run).toThrow(`input 'x': element 1 ("${name}") is not a finite number`);
    },
  );

  it('refuses a body nested 100,000 deep by the model rank, before any recursive walk', () => {
    const deep = utf8.encode(`${'['.repeat(100_000)}1${']'.repeat(100_000)}`);
    const run = () => decodePredictRequest(deep, ONE_INPUT);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow("input 'x': data is nested deeper than the model's rank 2 (shape [-1,3])");
    const named = utf8.encode(`{"ids": ${'['.repeat(50_000)}1${']'.repeat(50_000)}, "mask": [[true]]}`);
    expect(() => decodePredictRequest(named, TWO_INPUTS)).toThrow(/input 'ids': data is nested deeper/);
  });

  it('refuses a tensor over the element limit', () => {
    const run = () => decodePredictRequest(body([[1, 2, 3]]), ONE_INPUT, { maxTensorElements: 2 });
    expect(run).toThrow(PayloadTooLargeError);
    expect(run).toThrow("input 'x': shape [1,3] holds 3 elements, over the limit of 2");
  });
});

describe('encodePredictResponse', () => {
  it.each<[string, Datatype, number[], TensorData, string]>([
    ['a matrix', 'FP32', [2, 3], new Float32Array([1, 2, 3, 4, 5, 6]), '[[1,2,3],[4,5,6]]'],
    ['a column', 'INT32', [3, 1], new Int32Array([1, 2, 3]), '[[1],[2],[3]]'],
    ['rank 3', 'UINT8', [2, 1, 2], new Uint8Array([1, 2, 3, 4]), '[[[1,2]],[[3,4]]]'],
    ['a vector', 'FP64', [2], new Float64Array([0.5, 0.25]), '[0.5,0.25]'],
    ['a scalar', 'FP32', [], new Float32Array([7]), '7'],
    ['an empty inner dim', 'FP32', [2, 0], new Float32Array(0), '[[],[]]'],
    ['an empty outer dim', 'FP32', [0, 3], new Float32Array(0), '[]'],
    ['BOOL', 'BOOL', [1, 2], new Uint8Array([0, 1]), '[[false,true]]'],
    ['exact INT64', 'INT64', [2], new BigInt64Array([9007199254740993n, -1n]), '[9007199254740993,-1]'],
    ['FP16 values', 'FP16', [1, 2], new Uint16Array([0x3c00, 0x3555]), '[[1,0.333251953125]]'],
    [
      'non-finite floats',
      'FP32',
      [1, 3],
      new Float32Array([Number.NaN, 1, Number.NEGATIVE_INFINITY]),
      '[["NaN",1,"-Infinity"]]',
    ],
    ['strings', 'BYTES', [2, 1], ['a', 'b'], '[["a"],["b"]]'],
  ])('nests %s per its shape', (_label, datatype, shape, data, nested) => {
    expect(text(encodePredictResponse([{ name: 'y', datatype, shape, data }]))).toBe(
      `{"outputs":{"y":${nested}}}`,
    );
  });

  it('writes every output in the order given', () => {
    const bytes = encodePredictResponse([
      { name: 'b', datatype: 'INT8', shape: [1], data: new Int8Array([-1]) },
      { name: 'a', datatype: 'INT8', shape: [1], data: new Int8Array([1]) },
    ]);
    expect(text(bytes)).toBe('{"outputs":{"b":[-1],"a":[1]}}');
  });

  it('refuses data that does not match its shape (an engine bug)', () => {
    expect(() =>
      encodePredictResponse([{ name: 'y', datatype: 'FP32', shape: [2, 2], data: new Float32Array(3) }]),
    ).toThrow("output 'y': shape [2,2] holds 4 elements but data has 3");
  });

  it('writes what decodePredictRequest reads back', () => {
    const data = new Float32Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    const encoded = encodePredictResponse([{ name: 'x', datatype: 'FP32', shape: [2, 3], data }]);
    const outputs = (JSON.parse(text(encoded)) as { outputs: Record<string, unknown> }).outputs;
    expect(decodePredictRequest(body(outputs), ONE_INPUT)).toEqual([
      { name: 'x', datatype: 'FP32', shape: [2, 3], data },
    ]);
  });
});
