import { InvalidInputError } from '../../../shared/core/errors';
import {
  describeJsonValue,
  jsonToTensorData,
  tensorDataToJson,
} from '../../../shared/core/protocol/oip-json';
import type { Datatype, TensorData } from '../../../shared/core/tensor';

const WHERE = "input 'x'";

describe('jsonToTensorData', () => {
  it.each<[Datatype, unknown[], TensorData]>([
    ['BOOL', [true, false, true], new Uint8Array([1, 0, 1])],
    ['UINT8', [0, 255, 7], new Uint8Array([0, 255, 7])],
    ['INT8', [-128, 127, 0], new Int8Array([-128, 127, 0])],
    ['UINT16', [0, 65535, 1], new Uint16Array([0, 65535, 1])],
    ['INT16', [-32768, 32767, -1], new Int16Array([-32768, 32767, -1])],
    ['UINT32', [0, 4294967295, 1], new Uint32Array([0, 4294967295, 1])],
    ['INT32', [-2147483648, 2147483647, 3.0], new Int32Array([-2147483648, 2147483647, 3])],
    [
      'UINT64',
      [0, '18446744073709551615', 2 ** 53 - 1],
      new BigUint64Array([0n, 2n ** 64n - 1n, 2n ** 53n - 1n]),
    ],
    [
      'INT64',
      ['-9223372036854775808', '9223372036854775807', -(2 ** 53 - 1), '9007199254740993'],
      new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, -(2n ** 53n - 1n), 9007199254740993n]),
    ],
    ['FP16', [1, -2, 65504, 0.1], new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x2e66])],
    [
      'FP32',
      [0.5, -1.25, 3.4028234663852886e38, 0.1],
      new Float32Array([0.5, -1.25, 3.4028234663852886e38, 0.1]),
    ],
    ['FP64', [0.1, -1e300, 5e-324], new Float64Array([0.1, -1e300, 5e-324])],
    ['BYTES', ['a', '', 'héllo ✓'], ['a', '', 'héllo ✓']],
  ])('converts %s', (datatype, values, expected) => {
    const data = jsonToTensorData(WHERE, datatype, values);
    expect(data.constructor).toBe(expected.constructor);
    expect(data).toEqual(expected);
  });

  it.each<[Datatype, string, number]>([
    ['FP32', 'NaN', Number.NaN],
    ['FP32', 'Infinity', Number.POSITIVE_INFINITY],
    ['FP64', '-Infinity', Number.NEGATIVE_INFINITY],
    ['FP16', 'Infinity', Number.POSITIVE_INFINITY],
  ])('takes %s %s as a string (JSON has no literal for it)', (datatype, text, value) => {
    const data = jsonToTensorData(WHERE, datatype, [text]);
    if (datatype === 'FP16') expect(data[0]).toBe(0x7c00);
    else expect(data[0]).toBe(value);
  });

  it.each<[string, Datatype, unknown[], RegExp]>([
    ['a string for FP32', 'FP32', [1, 2, 3, 'x'], /^input 'x': element 3 \("x"\) is not a finite number$/],
    ['null for FP32', 'FP32', [null], /^input 'x': element 0 \(null\) is not a finite number$/],
    ['an array inside flat data', 'FP64', [1, [2]], /element 1 \(an array\) is not a finite number/],
    ['Infinity from 1e999', 'FP64', [JSON.parse('1e999')], /element 0 \(Infinity\) is not a finite number/],
    [
      '-Infinity from -1e999',
      'FP32',
      [JSON.parse('-1e999')],
      /element 0 \(-Infinity\) is not a finite number/,
    ],
    ['an FP32 overflow', 'FP32', [1, 1e39], /element 1 \(1e\+39\) overflows FP32/],
    ['an FP16 overflow', 'FP16', [65520], /element 0 \(65520\) overflows FP16 \(max 65504\)/],
    ['a bool for INT32', 'INT32', [true], /element 0 \(true\) is not a finite number/],
    ['3.5 for INT64', 'INT64', [1, 3.5], /^input 'x': element 1 \(3\.5\) is not an integer for INT64$/],
    ['3.5 for UINT8', 'UINT8', [3.5], /element 0 \(3\.5\) is not an integer for UINT8/],
    ['256 for UINT8', 'UINT8', [256], /element 0 \(256\) is out of range for UINT8 \(0 to 255\)/],
    ['-1 for UINT8', 'UINT8', [-1], /element 0 \(-1\) is out of range for UINT8 \(0 to 255\)/],
    ['-129 for INT8', 'INT8', [-129], /out of range for INT8 \(-128 to 127\)/],
    ['128 for INT8', 'INT8', [128], /out of range for INT8 \(-128 to 127\)/],
    ['65536 for UINT16', 'UINT16', [65536], /out of range for UINT16 \(0 to 65535\)/],
    ['-32769 for INT16', 'INT16', [-32769], /out of range for INT16 \(-32768 to 32767\)/],
    ['2^32 for UINT32', 'UINT32', [2 ** 32], /out of range for UINT32 \(0 to 4294967295\)/],
    ['2^31 for INT32', 'INT32', [2 ** 31], /out of range for INT32 \(-2147483648 to 2147483647\)/],
    ['a numeric string for INT32', 'INT32', ['5'], /element 0 \("5"\) is not a finite number/],
    ['2^63 for INT64', 'INT64', ['9223372036854775808'], /out of range for INT64/],
    ['-1 for UINT64', 'UINT64', [-1], /element 0 \(-1\) is out of range for UINT64/],
    ['"-1" for UINT64', 'UINT64', ['-1'], /element 0 \("-1"\) is out of range for UINT64/],
    ['2^64 for UINT64', 'UINT64', ['18446744073709551616'], /out of range for UINT64/],
    [
      'a number beyond 2^53 for INT64',
      'INT64',
      [2 ** 60],
      /is beyond 2\^53 .* send it as a string of digits/,
    ],
    ['a decimal string for INT64', 'INT64', ['1.5'], /element 0 \("1\.5"\) is not an integer for INT64/],
    ['a hex string for INT64', 'INT64', ['0x10'], /is not an integer for INT64/],
    ['1 for BOOL', 'BOOL', [true, 1], /element 1 \(1\) is not true or false for BOOL/],
    ['"true" for BOOL', 'BOOL', ['true'], /element 0 \("true"\) is not true or false for BOOL/],
    ['a number for BYTES', 'BYTES', ['a', 2], /element 1 \(2\) is not a string for BYTES/],
  ])('refuses %s', (_label, datatype, values, message) => {
    const run = () => jsonToTensorData(WHERE, datatype, values);
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(message);
  });
});

describe('jsonToTensorData and the names of Object.prototype', () => {
  const PROTOTYPE_NAMES = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'];
  it.each(
    PROTOTYPE_NAMES.flatMap((name) => (['FP16', 'FP32', 'FP64'] as const).map((t) => [name, t] as const)),
  )(
    'refuses the string "%s" for %s: only "NaN", "Infinity" and "-Infinity" mean non-finite values',
    (name, t) => {
      const run = () => jsonToTensorData(WHERE, t, [name, 2, 3]);
      expect(run).toThrow(InvalidInputError);
      expect(run).toThrow(`input 'x': element 0 ("${name}") is not a finite number`);
    },
  );
});

describe('tensorDataToJson', () => {
  it.each<[Datatype, TensorData, string]>([
    ['BOOL', new Uint8Array([1, 0, 1]), '[true,false,true]'],
    ['UINT8', new Uint8Array([0, 255]), '[0,255]'],
    ['INT8', new Int8Array([-128, 127]), '[-128,127]'],
    ['UINT16', new Uint16Array([65535]), '[65535]'],
    ['INT16', new Int16Array([-32768]), '[-32768]'],
    ['UINT32', new Uint32Array([4294967295]), '[4294967295]'],
    ['INT32', new Int32Array([-2147483648, 7]), '[-2147483648,7]'],
    ['UINT64', new BigUint64Array([2n ** 64n - 1n]), '[18446744073709551615]'],
    [
      'INT64',
      new BigInt64Array([-(2n ** 63n), 9007199254740993n]),
      '[-9223372036854775808,9007199254740993]',
    ],
    ['FP16', new Uint16Array([0x3c00, 0xc000, 0x3555]), '[1,-2,0.333251953125]'],
    ['FP32', new Float32Array([0.5, -1.25]), '[0.5,-1.25]'],
    ['FP32 0.1 (its exact double)', new Float32Array([0.1]), '[0.10000000149011612]'],
    ['FP64', new Float64Array([0.1, 1e300]), '[0.1,1e+300]'],
    ['BYTES', ['a', 'é"\n'], '["a","é\\"\\n"]'],
  ] as [Datatype, TensorData, string][])('writes %s', (label, data, text) => {
    const datatype = label.split(' ')[0] as Datatype;
    expect(tensorDataToJson(datatype, data)).toBe(text);
  });

  it.each<[Datatype, TensorData]>([
    ['FP32', new Float32Array([1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])],
    ['FP64', new Float64Array([1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])],
    ['FP16', new Uint16Array([0x3c00, 0x7e00, 0x7c00, 0xfc00])],
  ])('writes %s NaN and infinities as strings', (datatype, data) => {
    expect(tensorDataToJson(datatype, data)).toBe('[1,"NaN","Infinity","-Infinity"]');
  });

  it('writes a range of the data', () => {
    const data = new Float32Array([1, 2, 3, 4, 5]);
    expect(tensorDataToJson('FP32', data, 1, 3)).toBe('[2,3]');
    expect(tensorDataToJson('BYTES', ['a', 'b', 'c'], 2, 3)).toBe('["c"]');
    expect(tensorDataToJson('INT64', new BigInt64Array([1n, 2n, 3n]), 0, 0)).toBe('[]');
  });

  it.each<[Datatype, unknown[]]>([
    ['FP32', [0.1, -3.5, 1e-30, 123456.789, 'NaN', '-Infinity']],
    ['FP16', [0.1, -3.5, 1e-5, 65504]],
    ['INT64', ['-9223372036854775808', 42, '9223372036854775807']],
    ['BOOL', [false, true]],
    ['BYTES', ['x', '✓']],
  ])('writes %s text that jsonToTensorData reads back to the same data', (datatype, values) => {
    const data = jsonToTensorData(WHERE, datatype, values);
    // Big integer literals would be rounded by JSON.parse: read them as strings of digits.
    const text = tensorDataToJson(datatype, data).replace(/(?<=[[,])(-?\d{16,})(?=[,\]])/g, '"$1"');
    expect(jsonToTensorData(WHERE, datatype, JSON.parse(text))).toEqual(data);
  });
});

describe('describeJsonValue', () => {
  it.each([
    [null, 'null'],
    [[1], 'an array'],
    [{ a: 1 }, 'an object'],
    ['a\nb', '"a?b"'],
    [1.5, '1.5'],
    [false, 'false'],
    [undefined, 'nothing'],
  ])('%p reads %p', (value, text) => {
    expect(describeJsonValue(value)).toBe(text);
  });
});
