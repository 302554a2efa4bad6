import { InvalidInputError, PayloadTooLargeError } from '../../../shared/core/errors';
import { nestFlat } from '../../../shared/core/nested';
import type {
  CodecLimits,
  InferOutput,
  InferRequest,
  RequestedOutput,
} from '../../../shared/core/protocol/infer-types';
import {
  binaryOutputSelector,
  decodeInferRequest,
  decodeInferResponse,
  decodeRawBinaryRequest,
  encodeInferRequest,
  encodeInferResponse,
  isRawBinaryRequest,
} from '../../../shared/core/protocol/oip-codec';
import type { Datatype, ModelSignature, TensorData } from '../../../shared/core/tensor';

const LIMITS: CodecLimits = { maxTensorElements: 1_000_000 };
const utf8 = new TextEncoder();

/** Four values of every datatype (shape [2, 2]): JSON as a client writes it, and the typed array it means. */
const SAMPLES: [Datatype, unknown[], TensorData][] = [
  ['BOOL', [true, false, false, true], new Uint8Array([1, 0, 0, 1])],
  ['UINT8', [0, 255, 7, 1], new Uint8Array([0, 255, 7, 1])],
  ['INT8', [-128, 127, 0, -1], new Int8Array([-128, 127, 0, -1])],
  ['UINT16', [0, 65535, 1, 2], new Uint16Array([0, 65535, 1, 2])],
  ['INT16', [-32768, 32767, -1, 0], new Int16Array([-32768, 32767, -1, 0])],
  ['UINT32', [0, 4294967295, 1, 2], new Uint32Array([0, 4294967295, 1, 2])],
  ['INT32', [-2147483648, 2147483647, 0, -7], new Int32Array([-2147483648, 2147483647, 0, -7])],
  [
    'UINT64',
    [0, '18446744073709551615', 1, '9007199254740993'],
    new BigUint64Array([0n, 2n ** 64n - 1n, 1n, 9007199254740993n]),
  ],
  [
    'INT64',
    ['-9223372036854775808', '9223372036854775807', -5, '9007199254740993'],
    new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, -5n, 9007199254740993n]),
  ],
  ['FP16', [1, -2, 65504, 0.1], new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x2e66])],
  [
    'FP32',
    [0.5, -1.25, 3.4028234663852886e38, 0.1],
    new Float32Array([0.5, -1.25, 3.4028234663852886e38, 0.1]),
  ],
  ['FP64', [0.1, -1e300, 5e-324, 'NaN'], new Float64Array([0.1, -1e300, 5e-324, Number.NaN])],
  ['BYTES', ['a', '', 'héllo ✓', '\u0000x'], ['a', '', 'héllo ✓', '\u0000x']],
];

function json(value: unknown): Uint8Array {
  return utf8.encode(JSON.stringify(value));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

/** The bytes of the binary extension, written here independently of the codec. */
function blobOf(data: TensorData): Uint8Array {
  if (!Array.isArray(data))
    return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  return concat(
    ...data.flatMap((s) => {
      const bytes = utf8.encode(s);
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, bytes.byteLength, true);
      return [length, bytes];
    }),
  );
}

/** A binary request: header JSON, then the blobs; returns the body and the header length. */
function binaryRequest(header: unknown, ...blobs: Uint8Array[]): [Uint8Array, string] {
  const head = json(header);
  return [concat(head, ...blobs), String(head.byteLength)];
}

function input(datatype: Datatype, shape: number[], data: unknown, name = 'x') {
  return { name, datatype, shape, data };
}

describe('decodeInferRequest', () => {
  describe('JSON data', () => {
    it.each(SAMPLES)('decodes flat %s data into its typed array', (datatype, values, expected) => {
      const request = decodeInferRequest(
        json({ inputs: [input(datatype, [2, 2], values)] }),
        undefined,
        LIMITS,
      );
      const data = request.inputs[0]?.data;
      expect(data?.constructor).toBe(expected.constructor);
      expect(data).toEqual(expected);
      expect(request.inputs[0]?.shape).toEqual([2, 2]);
    });

    it.each(SAMPLES)('decodes nested %s data exactly as flat data', (datatype, values) => {
      const flat = decodeInferRequest(json({ inputs: [input(datatype, [2, 2], values)] }), undefined, LIMITS);
      const nested = decodeInferRequest(
        json({ inputs: [input(datatype, [2, 2], nestFlat(values, [2, 2]))] }),
        undefined,
        LIMITS,
      );
      expect(nested.inputs[0]?.data).toEqual(flat.inputs[0]?.data);
    });

    it.each(['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'])(
      'refuses "%s" in FP32 data, flat or nested',
      (name) => {
        for (const data of [
          [name, 2, 3, 4],
          [
            [name, 2],
            [3, 4],
          ],
        ]) {
          const run = () =>
            decodeInferRequest(json({ inputs: [input('FP32', [2, 2], data)] }), undefined, LIMITS);
          expect(run).toThrow(InvalidInputError);
          expect(run).toThrow(`element 0 ("${name}") is not a finite number`);
        }
      },
    );

    it('refuses a shape of 20,000 ones with matching nesting by its rank, before any recursive walk', () => {
      const depth = 20_000;
      const header = `{"inputs":[{"name":"x","datatype":"FP32","shape":[${Array(depth).fill(1).join(',')}],"data":`;
      const body = utf8.encode(`${header}${'['.repeat(depth)}1${']'.repeat(depth)}}]}`);
      const run = () => decodeInferRequest(body, undefined, LIMITS);
      expect(run).toThrow(InvalidInputError);
      expect(run).toThrow("input 'x': shape has 20000 dims, more than the 32 a tensor may have");
    });

    it('refuses data nested 100,000 deep for a small shape, naming both shapes', () => {
      const depth = 100_000;
      const body = utf8.encode(
        `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":${'['.repeat(depth)}1${']'.repeat(depth)}}]}`,
      );
      const run = () => decodeInferRequest(body, undefined, LIMITS);
      expect(run).toThrow(InvalidInputError);
      expect(run).toThrow("input 'x': nested data has shape [1,1,1] but 'shape' is [1,1]");
    });

    it('takes a scalar (shape []) as a one-element array', () => {
      const request = decodeInferRequest(json({ inputs: [input('INT64', [], [16000])] }), undefined, LIMITS);
      expect(request.inputs[0]?.data).toEqual(new BigInt64Array([16000n]));
    });

    it('takes empty tensors, flat or nested', () => {
      const flat = decodeInferRequest(json({ inputs: [input('FP32', [0, 3], [])] }), undefined, LIMITS);
      expect(flat.inputs[0]?.data).toEqual(new Float32Array(0));
      const nested = decodeInferRequest(
        json({ inputs: [input('FP32', [2, 0], [[], []])] }),
        undefined,
        LIMITS,
      );
      expect(nested.inputs[0]?.data).toEqual(new Float32Array(0));
    });

    it('reads id, parameters, outputs and binary_data_output, consuming the transport parameters', () => {
      const request = decodeInferRequest(
        json({
          id: 'req-1',
          parameters: { binary_data_output: true, priority: 2 },
          inputs: [{ ...input('FP32', [1], [1]), parameters: { content_type: 'x' } }],
          outputs: [{ name: 'a', parameters: { binary_data: false } }, { name: 'b' }],
        }),
        undefined,
        LIMITS,
      );
      expect(request.id).toBe('req-1');
      expect(request.parameters).toEqual({ priority: 2 });
      expect(request.binaryOutputDefault).toBe(true);
      expect(request.inputs[0]?.parameters).toEqual({ content_type: 'x' });
      expect(request.outputs).toEqual([{ name: 'a', binaryData: false }, { name: 'b' }]);
    });

    it('leaves out what the request leaves out', () => {
      const request = decodeInferRequest(json({ inputs: [input('FP32', [1], [1])] }), undefined, LIMITS);
      expect(request).toEqual({
        inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: new Float32Array([1]) }],
        binaryOutputDefault: false,
      });
      expect('outputs' in request).toBe(false);
      expect('id' in request).toBe(false);
    });

    it('takes a header length equal to the body with no binary input', () => {
      const body = json({ inputs: [input('FP32', [1], [1])] });
      const request = decodeInferRequest(body, String(body.byteLength), LIMITS);
      expect(request.inputs[0]?.data).toEqual(new Float32Array([1]));
    });
  });

  describe('binary data', () => {
    it.each(SAMPLES)(
      'decodes binary %s data to the same typed array as JSON data',
      (datatype, values, expected) => {
        const blob = blobOf(expected);
        const [body, length] = binaryRequest(
          {
            inputs: [
              { ...input(datatype, [2, 2], undefined), parameters: { binary_data_size: blob.byteLength } },
            ],
          },
          blob,
        );
        const binary = decodeInferRequest(body, length, LIMITS);
        const fromJson = decodeInferRequest(
          json({ inputs: [input(datatype, [2, 2], values)] }),
          undefined,
          LIMITS,
        );
        expect(binary.inputs[0]?.data.constructor).toBe(expected.constructor);
        expect(binary.inputs[0]?.data).toEqual(fromJson.inputs[0]?.data);
        expect(binary.inputs[0]?.data).toEqual(expected);
        expect(binary.inputs[0]?.parameters).toBeUndefined();
      },
    );

    it.each<[Datatype, number[], TensorData]>([
      ['FP32', [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0], new Float32Array([1, -2])],
      ['INT64', [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], new BigInt64Array([-2n])],
      ['FP16', [0x00, 0x3c, 0x00, 0xc0], new Uint16Array([0x3c00, 0xc000])],
      ['UINT16', [0x01, 0x02], new Uint16Array([0x0201])],
      ['BOOL', [0x01, 0x00], new Uint8Array([1, 0])],
      ['BYTES', [0x02, 0x00, 0x00, 0x00, 0x61, 0x62, 0x00, 0x00, 0x00, 0x00], ['ab', '']],
    ])('reads %s little-endian bytes %j', (datatype, bytes, expected) => {
      const [body, length] = binaryRequest(
        {
          inputs: [
            {
              ...input(datatype, [expected.length], undefined),
              parameters: { binary_data_size: bytes.length },
            },
          ],
        },
        new Uint8Array(bytes),
      );
      expect(decodeInferRequest(body, length, LIMITS).inputs[0]?.data).toEqual(expected);
    });

    it('gives binary inputs consecutive bytes in input order, mixed with JSON inputs', () => {
      const a = new Float32Array([1, 2, 3]);
      const c = new Int32Array([7, 8]);
      const [body, length] = binaryRequest(
        {
          inputs: [
            { ...input('FP32', [3], undefined, 'a'), parameters: { binary_data_size: 12 } },
            input('INT8', [2], [-1, 1], 'b'),
            { ...input('INT32', [2], undefined, 'c'), parameters: { binary_data_size: 8 } },
          ],
        },
        blobOf(a),
        blobOf(c),
      );
      const request = decodeInferRequest(body, length, LIMITS);
      expect(request.inputs.map((i) => i.name)).toEqual(['a', 'b', 'c']);
      expect(request.inputs[0]?.data).toEqual(a);
      expect(request.inputs[1]?.data).toEqual(new Int8Array([-1, 1]));
      expect(request.inputs[2]?.data).toEqual(c);
    });

    it('views the body without copying when the data is aligned, and copies when it is not', () => {
      const values = new Float32Array([1.5, -2.5, 3.5]);
      const header = { inputs: [{ ...input('FP32', [3], undefined), parameters: { binary_data_size: 12 } }] };
      let head = json(header);
      // Pad the JSON with spaces until the binary part starts on a 4-byte boundary, then one more for misalignment.
      while (head.byteLength % 4 !== 0) head = concat(head, utf8.encode(' '));
      const aligned = concat(head, blobOf(values));
      const viewed = decodeInferRequest(aligned, String(head.byteLength), LIMITS).inputs[0]
        ?.data as Float32Array;
      expect(viewed).toEqual(values);
      expect(viewed.buffer).toBe(aligned.buffer);
      expect(viewed.byteOffset).toBe(head.byteLength);

      const shifted = concat(head, utf8.encode(' '), blobOf(values));
      const copied = decodeInferRequest(shifted, String(head.byteLength + 1), LIMITS).inputs[0]
        ?.data as Float32Array;
      expect(copied).toEqual(values);
      expect(copied.buffer).not.toBe(shifted.buffer);
    });

    it('ends the encoded header on an 8-byte boundary, so the receiver uses the first tensor in place', () => {
      for (const id of ['a', 'ab', 'abc', 'abcd', 'abcde', 'abcdef', 'abcdefg', 'abcdefgh']) {
        const data = Float64Array.from([1.5, -2, 3]);
        const encoded = encodeInferRequest(
          { id, inputs: [{ name: 'x', datatype: 'FP64', shape: [3], data }], binaryOutputDefault: false },
          { binaryInputs: true },
        );
        const headerLength = Number(encoded.headers['inference-header-content-length']);
        expect(headerLength % 8).toBe(0);
        const decoded = decodeInferRequest(encoded.body, String(headerLength), LIMITS);
        expect(decoded.id).toBe(id);
        const got = decoded.inputs[0]?.data as Float64Array;
        expect(Array.from(got)).toEqual([1.5, -2, 3]);
        expect(got.buffer).toBe(encoded.body.buffer);
      }
    });

    it('views aligned data inside a body that is itself a slice of a larger buffer', () => {
      const values = new BigInt64Array([1n, -1n]);
      const header = {
        inputs: [{ ...input('INT64', [2], undefined), parameters: { binary_data_size: 16 } }],
      };
      let head = json(header);
      while (head.byteLength % 8 !== 4) head = concat(head, utf8.encode(' '));
      const outer = concat(new Uint8Array(4), head, blobOf(values));
      const body = outer.subarray(4);
      const data = decodeInferRequest(body, String(head.byteLength), LIMITS).inputs[0]?.data as BigInt64Array;
      expect(data).toEqual(values);
      expect(data.buffer).toBe(outer.buffer);
    });
  });

  describe('limits', () => {
    it('refuses a tensor over maxTensorElements from its shape, before looking at the data (413)', () => {
      const run = () =>
        decodeInferRequest(json({ inputs: [input('FP32', [1000, 1000, 1000], [])] }), undefined, LIMITS);
      expect(run).toThrow(PayloadTooLargeError);
      expect(run).toThrow(
        "input 'x': shape [1000,1000,1000] holds 1000000000 elements, over the limit of 1000000",
      );
    });

    it('checks every shape before converting any data', () => {
      const run = () =>
        decodeInferRequest(
          json({ inputs: [input('FP32', [1], ['bad']), input('FP32', [2000000], [], 'y')] }),
          undefined,
          LIMITS,
        );
      expect(run).toThrow(PayloadTooLargeError);
    });

    it('refuses a binary tensor over the limit whatever its binary_data_size says', () => {
      const [body, length] = binaryRequest({
        inputs: [{ ...input('UINT8', [2000000], undefined), parameters: { binary_data_size: 0 } }],
      });
      expect(() => decodeInferRequest(body, length, LIMITS)).toThrow(PayloadTooLargeError);
    });

    it('refuses inputs over maxTotalElements together', () => {
      const limits = { maxTensorElements: 10, maxTotalElements: 15 };
      const inputs = [
        input('FP32', [8], new Array(8).fill(0), 'a'),
        input('FP32', [8], new Array(8).fill(0), 'b'),
      ];
      expect(() => decodeInferRequest(json({ inputs }), undefined, limits)).toThrow(PayloadTooLargeError);
      expect(() => decodeInferRequest(json({ inputs: inputs.slice(1) }), undefined, limits)).not.toThrow();
    });
  });

  const x = (over: Record<string, unknown>) => ({ ...input('FP32', [2], [1, 2]), ...over });

  it.each<[string, Uint8Array | unknown, RegExp]>([
    ['malformed JSON', utf8.encode('{"inputs": ['), /^the request's JSON is not valid JSON/],
    [
      'bytes that are not UTF-8',
      new Uint8Array([0x7b, 0xff, 0x7d]),
      /^the request's JSON is not valid UTF-8$/,
    ],
    ['a JSON array', [], /^the request's JSON must be an object$/],
    ['a request without inputs', { outputs: [] }, /^the request has no 'inputs'$/],
    ['inputs that are not an array', { inputs: {} }, /^'inputs' must be an array of tensors$/],
    ['an input that is not an object', { inputs: [1] }, /^inputs\[0\] must be an object$/],
    [
      'an input without a name',
      { inputs: [x({ name: '' })] },
      /^inputs\[0\]: 'name' must be a non-empty string$/,
    ],
    ['duplicate input names', { inputs: [x({}), x({})] }, /^input 'x' appears more than once$/],
    [
      'an unknown datatype',
      { inputs: [x({ datatype: 'FP33' })] },
      /^input 'x': datatype 'FP33' is not one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, .*BYTES$/,
    ],
    ['a lower-case datatype', { inputs: [x({ datatype: 'fp32' })] }, /datatype 'fp32' is not one of/],
    [
      'a missing datatype',
      { inputs: [x({ datatype: undefined })] },
      /^input 'x': 'datatype' is missing \(one of /,
    ],
    [
      'a missing shape',
      { inputs: [x({ shape: undefined })] },
      /^input 'x': 'shape' must be an array of dims/,
    ],
    [
      'a negative dim',
      { inputs: [x({ shape: [2, -1] })] },
      /^input 'x': dim 1 of shape is -1, not a non-negative/,
    ],
    ['a fractional dim', { inputs: [x({ shape: [2.5] })] }, /^input 'x': dim 0 of shape is 2.5, not/],
    ['a dim as a string', { inputs: [x({ shape: ['2'] })] }, /^input 'x': dim 0 of shape is "2", not/],
    [
      'data shorter than the shape',
      { inputs: [x({ shape: [2, 3], data: [1, 2, 3, 4, 5] })] },
      /^input 'x': shape \[2,3\] holds 6 elements but data has 5$/,
    ],
    [
      'nested data of another shape',
      {
        inputs: [
          x({
            shape: [2, 3],
            data: [
              [1, 2],
              [3, 4],
              [5, 6],
            ],
          }),
        ],
      },
      /^input 'x': nested data has shape \[3,2\] but 'shape' is \[2,3\]$/,
    ],
    [
      'ragged nested data',
      {
        inputs: [
          x({
            shape: [2, 3],
            data: [
              [1, 2, 3],
              [4, 5],
            ],
          }),
        ],
      },
      /^input 'x': nested data is not rectangular: data\[1\] has 2 elements, expected 3$/,
    ],
    [
      'data that is not an array',
      { inputs: [x({ shape: [], data: 5 })] },
      /^input 'x': 'data' must be an array$/,
    ],
    [
      'an input with no data',
      { inputs: [x({ data: undefined })] },
      /^input 'x' has neither 'data' nor parameters.binary_data_size$/,
    ],
    [
      'a bad element',
      { inputs: [x({ data: [1, 'two'] })] },
      /^input 'x': element 1 \("two"\) is not a finite number$/,
    ],
    ['an id that is not a string', { id: 5, inputs: [x({})] }, /^'id' must be a string$/],
    [
      'parameters that are not an object',
      { parameters: [], inputs: [x({})] },
      /^request 'parameters' must be an object$/,
    ],
    [
      'a binary_data_output that is not a boolean',
      { parameters: { binary_data_output: 'yes' }, inputs: [x({})] },
      /^request parameters.binary_data_output must be true or false$/,
    ],
    [
      'input parameters that are not an object',
      { inputs: [x({ parameters: 1 })] },
      /^input 'x': 'parameters' must/,
    ],
    ['outputs that are not an array', { inputs: [x({})], outputs: 'y' }, /^'outputs' must be an array$/],
    [
      'an output without a name',
      { inputs: [x({})], outputs: [{}] },
      /^outputs\[0\]: 'name' must be a non-empty/,
    ],
    [
      'an output requested twice',
      { inputs: [x({})], outputs: [{ name: 'y' }, { name: 'y' }] },
      /^output 'y' is requested more than once$/,
    ],
    [
      'a binary_data that is not a boolean',
      { inputs: [x({})], outputs: [{ name: 'y', parameters: { binary_data: 1 } }] },
      /^output 'y': parameters.binary_data must be true or false$/,
    ],
    [
      'binary_data_size without the header length',
      { inputs: [x({ data: undefined, parameters: { binary_data_size: 8 } })] },
      /^input 'x' has parameters.binary_data_size but there is no Inference-Header-Content-Length header$/,
    ],
    [
      'a hostile name, kept short and printable in the message',
      { inputs: [x({ name: `a\n${'b'.repeat(100)}`, datatype: 'X' })] },
      /^input 'a\?b{59}\.\.\.': datatype 'X'/,
    ],
  ])('refuses %s', (_label, payload, message) => {
    const body = payload instanceof Uint8Array ? payload : json(payload);
    const run = () => decodeInferRequest(body, undefined, LIMITS);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });

  it('refuses 1e999, which JSON.parse turns into Infinity', () => {
    const body = utf8.encode('{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,1e999]}]}');
    expect(() => decodeInferRequest(body, undefined, LIMITS)).toThrow(
      "input 'x': element 1 (Infinity) is not a finite number",
    );
  });

  const bin = (datatype: Datatype, shape: number[], size: number, name = 'x') => ({
    ...input(datatype, shape, undefined, name),
    parameters: { binary_data_size: size },
  });

  type BinaryCase = [string, unknown, Uint8Array, RegExp, string?];
  it.each<[string, unknown, Uint8Array, RegExp, string | undefined]>(
    (
      [
        [
          'a binary_data_size that does not fit the shape',
          { inputs: [bin('FP32', [3], 8)] },
          new Uint8Array(8),
          /^input 'x': binary_data_size is 8 but shape \[3\] of FP32 takes 12 bytes$/,
        ],
        [
          'a binary_data_size past the end of the body',
          { inputs: [bin('FP32', [3], 12)] },
          new Uint8Array(8),
          /^input 'x': binary_data_size 12 runs past the end of the body \(8 bytes left\)$/,
        ],
        [
          'bytes left over after the last binary input',
          { inputs: [bin('FP32', [1], 4)] },
          new Uint8Array(7),
          /^3 bytes are left over after the JSON header and the binary inputs$/,
        ],
        [
          'bytes after the header and no binary input',
          { inputs: [input('FP32', [1], [1])] },
          new Uint8Array(2),
          /^2 bytes are left over/,
        ],
        [
          'both data and binary_data_size',
          { inputs: [{ ...input('FP32', [1], [1]), parameters: { binary_data_size: 4 } }] },
          new Uint8Array(4),
          /^input 'x' has both 'data' and parameters.binary_data_size$/,
        ],
        [
          'a negative binary_data_size',
          { inputs: [bin('FP32', [1], -4)] },
          new Uint8Array(0),
          /^input 'x': parameters.binary_data_size must be a non-negative integer$/,
        ],
        [
          'a BOOL byte other than 0 or 1',
          { inputs: [bin('BOOL', [3], 3)] },
          new Uint8Array([1, 0, 2]),
          /^input 'x': BOOL element 2 is the byte 2, not 0 or 1$/,
        ],
        [
          'a truncated BYTES length prefix',
          { inputs: [bin('BYTES', [2], 7)] },
          new Uint8Array([1, 0, 0, 0, 0x61, 1, 0]),
          /^input 'x': BYTES element 1 has a truncated 4-byte length prefix$/,
        ],
        [
          'a BYTES length past the data',
          { inputs: [bin('BYTES', [1], 6)] },
          new Uint8Array([5, 0, 0, 0, 0x61, 0x62]),
          /^input 'x': BYTES element 0 declares 5 bytes but 2 remain$/,
        ],
        [
          'more BYTES elements than the shape',
          { inputs: [bin('BYTES', [1], 10)] },
          new Uint8Array([1, 0, 0, 0, 0x61, 1, 0, 0, 0, 0x62]),
          /^input 'x': binary BYTES data holds more than the 1 elements of shape \[1\]$/,
        ],
        [
          'fewer BYTES elements than the shape',
          { inputs: [bin('BYTES', [3], 5)] },
          new Uint8Array([1, 0, 0, 0, 0x61]),
          /^input 'x': binary BYTES data holds 1 elements but shape \[3\] holds 3$/,
        ],
        [
          'BYTES that are not UTF-8',
          { inputs: [bin('BYTES', [1], 5)] },
          new Uint8Array([1, 0, 0, 0, 0xff]),
          /^input 'x': BYTES element 0 is not valid UTF-8$/,
        ],
        [
          'a header length that is not a number',
          { inputs: [] },
          new Uint8Array(0),
          /^Inference-Header-Content-Length '12a' is not a non-negative integer$/,
          '12a',
        ],
        [
          'a body shorter than the header length',
          { inputs: [] },
          new Uint8Array(0),
          /^the request body \(13 bytes\) is shorter than its Inference-Header-Content-Length 999$/,
          '999',
        ],
      ] as BinaryCase[]
    )
      // Every row gets five arguments: with fewer, jest would pass its done callback as the last one.
      .map((row) => [row[0], row[1], row[2], row[3], row[4]]),
  )('refuses %s', (_label, header, blob, message, length) => {
    const [body, headerLength] = binaryRequest(header, blob);
    const run = () => decodeInferRequest(body, length ?? headerLength, LIMITS);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });
});

describe('decodeRawBinaryRequest (Inference-Header-Content-Length: 0)', () => {
  const one = (shape: number[], datatype: Datatype = 'FP32'): ModelSignature => ({
    inputs: [{ name: 'x', datatype, shape }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
  });
  const floats = (n: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer);

  it('is told by a header of 0 only', () => {
    expect(isRawBinaryRequest('0')).toBe(true);
    expect(isRawBinaryRequest('00')).toBe(true);
    expect(isRawBinaryRequest('10')).toBe(false);
    expect(isRawBinaryRequest(undefined)).toBe(false);
  });

  it.each<[string, number[], number, number, number[]]>([
    ['fixed dims', [2, 3], 0, 6, [2, 3]],
    ['a batch of one for a batching model, the rest fixed', [-1, 3], 8, 3, [1, 3]],
    ['the one dynamic dim from the byte count', [1, -1], 0, 5, [1, 5]],
    ['batch 1 and a dynamic sequence', [-1, -1], 8, 4, [1, 4]],
  ])('decodes %s', (_label, modelShape, maxBatchSize, n, shape) => {
    const [input] = decodeRawBinaryRequest(floats(n), one(modelShape), maxBatchSize, LIMITS);
    expect(input?.shape).toEqual(shape);
    expect(Array.from(input?.data as Float32Array)).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('takes a BYTES body as its one element', () => {
    const [input] = decodeRawBinaryRequest(utf8.encode('héllo'), one([-1], 'BYTES'), 4, LIMITS);
    expect(input).toMatchObject({ shape: [1], data: ['héllo'] });
  });

  it.each<[string, ModelSignature, number, Uint8Array, RegExp]>([
    [
      'a model with two inputs',
      { inputs: [...one([1]).inputs, { name: 'z', datatype: 'FP32', shape: [1] }], outputs: [] },
      0,
      floats(1),
      /^a raw binary request \(Inference-Header-Content-Length: 0\) needs a model with one input; this one has 2 \(x, z\): send the JSON header$/,
    ],
    [
      'two dynamic dims',
      one([1, 3, -1, -1]),
      0,
      floats(6),
      /cannot tell the shape of input 'x' \[1,3,-1,-1\]: dims 2 and 3 are both dynamic; send the JSON header with the shape/,
    ],
    ['a dynamic batch without maxBatchSize, and another', one([-1, -1]), 0, floats(4), /dims 0 and 1/],
    [
      'bytes that are no whole rows',
      one([-1, 3]),
      0,
      floats(4),
      /a raw body of 16 bytes is not a whole number of \[-1,3\] FP32 rows of 12 bytes/,
    ],
    [
      'bytes that do not fill the fixed shape',
      one([2, 3]),
      0,
      floats(5),
      /binary_data_size is 20 but shape \[2,3\] of FP32 takes 24 bytes/,
    ],
    [
      'a BYTES input of more than one element',
      one([2], 'BYTES'),
      0,
      utf8.encode('a'),
      /carries one BYTES element/,
    ],
    ['a BYTES body that is not UTF-8', one([1], 'BYTES'), 0, new Uint8Array([0xff]), /not valid UTF-8/],
  ])('refuses %s (400)', (_label, signature, maxBatchSize, body, message) => {
    const run = () => decodeRawBinaryRequest(body, signature, maxBatchSize, LIMITS);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });

  it('decides an empty body into a zero dim, for validation to refuse, and caps the size (413)', () => {
    expect(decodeRawBinaryRequest(new Uint8Array(0), one([-1, -1]), 8, LIMITS)[0]?.shape).toEqual([1, 0]);
    const run = () => decodeRawBinaryRequest(floats(10), one([-1]), 0, { maxTensorElements: 4 });
    expect(run).toThrow(PayloadTooLargeError);
  });
});

describe('encodeInferResponse', () => {
  const outputsOf = (samples: typeof SAMPLES): InferOutput[] =>
    samples.map(([datatype, , data]) => ({ name: `out_${datatype}`, datatype, shape: [2, 2], data }));

  it('writes JSON with flat row-major data when no output is binary', () => {
    const { body, headers } = encodeInferResponse(
      {
        modelName: 'm',
        modelVersion: '3',
        id: 'r1',
        outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }],
      },
      () => false,
    );
    expect(headers).toEqual({ 'content-type': 'application/json' });
    expect(JSON.parse(new TextDecoder().decode(body))).toEqual({
      model_name: 'm',
      model_version: '3',
      id: 'r1',
      outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 2], data: [1, 2, 3, 4] }],
    });
  });

  it.each<[Datatype, TensorData, string]>([
    ['BOOL', new Uint8Array([1, 0]), '[true,false]'],
    ['FP16', new Uint16Array([0x3c00, 0x7e00]), '[1,"NaN"]'],
    [
      'FP32',
      new Float32Array([Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]),
      '["Infinity","-Infinity"]',
    ],
    ['INT64', new BigInt64Array([9007199254740993n, -1n]), '[9007199254740993,-1]'],
    ['UINT64', new BigUint64Array([2n ** 64n - 1n, 0n]), '[18446744073709551615,0]'],
    ['BYTES', ['a', '"'], '["a","\\""]'],
  ])('writes %s data as %s', (datatype, data, text) => {
    const { body } = encodeInferResponse(
      { modelName: 'm', modelVersion: '1', outputs: [{ name: 'y', datatype, shape: [2], data }] },
      () => false,
    );
    expect(new TextDecoder().decode(body)).toContain(`"data":${text}}`);
  });

  it('writes binary outputs after the JSON header, with their sizes and the header length', () => {
    const a = new Float32Array([1, 2]);
    const c = ['xy'];
    const { body, headers } = encodeInferResponse(
      {
        modelName: 'm',
        modelVersion: '1',
        outputs: [
          { name: 'a', datatype: 'FP32', shape: [2], data: a },
          { name: 'b', datatype: 'INT32', shape: [1], data: new Int32Array([5]) },
          { name: 'c', datatype: 'BYTES', shape: [1], data: c },
        ],
      },
      (name) => name !== 'b',
    );
    expect(headers['content-type']).toBe('application/octet-stream');
    const headerLength = Number(headers['inference-header-content-length']);
    const header = JSON.parse(new TextDecoder().decode(body.subarray(0, headerLength)));
    expect(header.outputs).toEqual([
      { name: 'a', datatype: 'FP32', shape: [2], parameters: { binary_data_size: 8 } },
      { name: 'b', datatype: 'INT32', shape: [1], data: [5] },
      { name: 'c', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: 6 } },
    ]);
    expect(body.subarray(headerLength)).toEqual(concat(blobOf(a), blobOf(c)));
  });

  it.each(SAMPLES)(
    'round-trips %s binary output exactly through decodeInferResponse',
    (datatype, _values, data) => {
      const { body, headers } = encodeInferResponse(
        { modelName: 'm', modelVersion: '1', outputs: [{ name: 'y', datatype, shape: [2, 2], data }] },
        () => true,
      );
      const decoded = decodeInferResponse(body, headers['inference-header-content-length']);
      expect(decoded.outputs).toEqual([{ name: 'y', datatype, shape: [2, 2], data }]);
      expect(decoded.outputs[0]?.data.constructor).toBe(data.constructor);
    },
  );

  it('round-trips every datatype at once, half binary and half JSON', () => {
    // JSON INT64 beyond 2^53 would be rounded by JSON.parse; the 64-bit samples go binary.
    const outputs = outputsOf(SAMPLES);
    const binary = (name: string) => /64|BOOL|FP16|INT8/.test(name);
    const response = { modelName: 'm', modelVersion: '7', id: 'r', parameters: { took: 3 }, outputs };
    const { body, headers } = encodeInferResponse(response, binary);
    expect(decodeInferResponse(body, headers['inference-header-content-length'])).toEqual(response);
  });

  it('takes the decoded request in place of a function', () => {
    const request = decodeInferRequest(
      json({
        inputs: [input('FP32', [1], [1])],
        outputs: [{ name: 'y', parameters: { binary_data: true } }],
      }),
      undefined,
      LIMITS,
    );
    const { headers } = encodeInferResponse(
      {
        modelName: 'm',
        modelVersion: '1',
        outputs: [{ name: 'y', datatype: 'FP32', shape: [1], data: new Float32Array([1]) }],
      },
      request,
    );
    expect(headers['inference-header-content-length']).toBeDefined();
  });

  it('refuses output data that does not match its shape (an engine bug)', () => {
    const run = () =>
      encodeInferResponse(
        {
          modelName: 'm',
          modelVersion: '1',
          outputs: [{ name: 'y', datatype: 'FP32', shape: [3], data: new Float32Array(2) }],
        },
        () => false,
      );
    expect(run).toThrow("output 'y': shape [3] holds 3 elements but data has 2");
    expect(run).not.toThrow(InvalidInputError);
  });

  // Its speed is measured by `npm run bench -- request-overhead` (the JSON cost row), not timed here: a
  // wall-clock bound in a test fails on a busy machine and proves nothing about the encoder.
  it('encodes a million floats as JSON', () => {
    const data = new Float32Array(1_000_000).map((_, i) => i / 7);
    const { body } = encodeInferResponse(
      {
        modelName: 'm',
        modelVersion: '1',
        outputs: [{ name: 'y', datatype: 'FP32', shape: [1000, 1000], data }],
      },
      () => false,
    );
    const decoded = JSON.parse(new TextDecoder().decode(body)) as { outputs: { data: number[] }[] };
    const values = decoded.outputs[0]?.data ?? [];
    expect(values).toHaveLength(1_000_000);
    expect(values[0]).toBe(0);
    expect(values[999_999]).toBe(data[999_999]);
  });
});

describe('binaryOutputSelector', () => {
  it.each<[boolean, RequestedOutput[] | undefined, string, boolean]>([
    [false, undefined, 'y', false],
    [true, undefined, 'y', true],
    [false, [{ name: 'y', binaryData: true }], 'y', true],
    [true, [{ name: 'y', binaryData: false }], 'y', false],
    [true, [{ name: 'y' }], 'y', true],
    [false, [{ name: 'z', binaryData: true }], 'y', false],
  ])('default %p, outputs %j: %s binary is %p', (binaryOutputDefault, outputs, name, expected) => {
    const request: Pick<InferRequest, 'outputs' | 'binaryOutputDefault'> =
      outputs === undefined ? { binaryOutputDefault } : { outputs, binaryOutputDefault };
    expect(binaryOutputSelector(request)(name)).toBe(expected);
  });
});

describe('encodeInferRequest', () => {
  const request: InferRequest = {
    id: 'q',
    parameters: { priority: 1 },
    inputs: SAMPLES.map(([datatype, , data]) => ({ name: `in_${datatype}`, datatype, shape: [2, 2], data })),
    outputs: [{ name: 'y', binaryData: true }, { name: 'z' }],
    binaryOutputDefault: true,
  };

  it('round-trips a request with binary inputs through decodeInferRequest', () => {
    const { body, headers } = encodeInferRequest(request, { binaryInputs: true });
    expect(headers['content-type']).toBe('application/octet-stream');
    expect(decodeInferRequest(body, headers['inference-header-content-length'], LIMITS)).toEqual(request);
  });

  it('round-trips a request with JSON inputs, big INT64 values included', () => {
    const { body, headers } = encodeInferRequest(request);
    expect(headers).toEqual({ 'content-type': 'application/json' });
    // A JSON INT64 beyond 2^53 is written exactly; a JavaScript JSON.parse would round it, so the decoder refuses it.
    expect(() => decodeInferRequest(body, undefined, LIMITS)).toThrow(/beyond 2\^53/);
    const text = new TextDecoder().decode(body).replace(/(?<=[[,])(-?\d{16,})(?=[,\]])/g, '"$1"');
    expect(decodeInferRequest(utf8.encode(text), undefined, LIMITS)).toEqual(request);
  });
});
