import { UnsupportedInputError } from '../../../shared/core/batch/errors';
import type { Line } from '../../../shared/core/batch/line-splitter';
import {
  createRecordParser,
  hasBatchAxis,
  type ParsedRecord,
  type RecordFailure,
  type RecordParserOptions,
} from '../../../shared/core/batch/records';
import type { ModelSignature } from '../../../shared/core/tensor';

const VECTOR: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }],
};
const TWO: ModelSignature = {
  inputs: [
    { name: 'a', datatype: 'FP32', shape: [-1, 2] },
    { name: 'b', datatype: 'INT64', shape: [-1, 1] },
  ],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }],
};
const FIXED: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 2] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 2] }],
};

const utf8 = new TextEncoder();
const line = (text: string, number = 7): Line => ({
  start: 0,
  end: text.length + 1,
  number,
  bytes: utf8.encode(text),
});

function parser(options: Partial<RecordParserOptions> = {}) {
  return createRecordParser({
    format: 'jsonl',
    signature: VECTOR,
    maxBatchSize: 8,
    limits: { maxTensorElements: 1000 },
    maxLineBytes: 1000,
    joinInput: false,
    ...options,
  });
}

function record(result: ReturnType<ReturnType<typeof parser>>): ParsedRecord {
  if (result.kind !== 'record') throw new Error(`expected a record, got ${JSON.stringify(result)}`);
  return result.record;
}

function failure(result: ReturnType<ReturnType<typeof parser>>): RecordFailure {
  if (result.kind !== 'failure') throw new Error(`expected a failure, got ${result.kind}`);
  return result.failure;
}

describe('hasBatchAxis', () => {
  it('is true when the config batches and every input has a dynamic dim 0', () => {
    expect(hasBatchAxis(VECTOR, 8)).toBe(true);
    expect(hasBatchAxis(VECTOR, 0)).toBe(false);
    expect(hasBatchAxis(FIXED, 8)).toBe(false);
  });
});

describe('createRecordParser (JSON Lines)', () => {
  it.each([
    ['inputs by name', '{"x": [1, 2, 3]}'],
    ['a batch of one', '{"x": [[1, 2, 3]]}'],
    ['the predict wrapper', '{"inputs": {"x": [1, 2, 3]}}'],
    ['the predict wrapper of a bare array', '{"inputs": [1, 2, 3]}'],
    ['a bare array', '[1, 2, 3]'],
    ['OIP tensors', '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}'],
    [
      'nested OIP data',
      '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [[1, 2, 3]]}]}',
    ],
  ])('reads %s as one example of the model input', (_name, text) => {
    const parsed = record(parser()(line(text)));
    expect(parsed).toEqual({
      line: 7,
      id: '7',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [3], data: Float32Array.from([1, 2, 3]) }],
      shapeKey: '3',
      bytes: 12,
    });
  });

  it('carries a string or number id, as JSON text, and names the line without one', () => {
    expect(record(parser()(line('{"id": "a-1", "x": [1, 2, 3]}'))).id).toBe('"a-1"');
    expect(record(parser()(line('{"id": 42, "inputs": {"x": [1, 2, 3]}}'))).id).toBe('42');
    expect(failure(parser()(line('{"id": {"no": 1}, "x": [1, 2, 3]}')))).toMatchObject({
      id: '7',
      message: "the record's 'id' must be a string or a number",
    });
  });

  it('orders inputs as the model does and keys records by their example shapes', () => {
    const parsed = record(parser({ signature: TWO })(line('{"b": ["9007199254740993"], "a": [0.5, 1]}')));
    expect(parsed.inputs.map((i) => i.name)).toEqual(['a', 'b']);
    expect(parsed.inputs[1]?.data).toEqual(BigInt64Array.from([9007199254740993n]));
    expect(parsed.shapeKey).toBe('2|1');
  });

  it('keeps the source text for joined outputs', () => {
    expect(record(parser({ joinInput: true })(line('{"id":1,"x":[1,2,3]}'))).source).toBe(
      '{"id":1,"x":[1,2,3]}',
    );
  });

  it('feeds records of a model without a batch axis as they are', () => {
    const parsed = record(parser({ signature: FIXED })(line('[[1, 2], [3, 4]]')));
    expect(parsed.inputs[0]?.shape).toEqual([2, 2]);
  });

  it.each([
    ['not JSON', '{"x": [1, 2', 'invalid_input', /line 7 is not valid JSON/],
    ['a scalar', '3', 'invalid_input', /a record must be a nested array or an object/],
    ['an unknown input', '{"x": [1, 2, 3], "z": [1]}', 'invalid_input', /the model has no input 'z'/],
    ['a missing input', '{"a": [1, 2]}', 'invalid_input', /missing input 'b'/],
    ['a short vector', '{"x": [1, 2]}', 'invalid_input', /input 'x': dim 1 is 2 but the model takes 3/],
    [
      'a string value',
      '{"id": "s", "x": [1, "two", 3]}',
      'invalid_input',
      /input 'x': element 1 \("two"\) is not a finite number/,
    ],
    ['ragged nesting', '{"x": [[1, 2, 3], [4]]}', 'invalid_input', /not rectangular/],
    [
      'two examples in one record',
      '{"x": [[1, 2, 3], [4, 5, 6]]}',
      'invalid_input',
      /a record holds one example of shape \[3\]/,
    ],
    ['a bare array for two inputs', '[1, 2]', 'invalid_input', /the model has 2 inputs/],
  ])('fails %s, naming the line and the reason', (_name, text, code, message) => {
    const signature = text.startsWith('{"a"') || text === '[1, 2]' ? TWO : VECTOR;
    const result = failure(parser({ signature })(line(text)));
    expect(result.line).toBe(7);
    expect(result.code).toBe(code);
    expect(result.message).toMatch(message);
    if (text.includes('"id": "s"')) expect(result.id).toBe('"s"');
  });

  it('fails a line over the cap and skips blank lines', () => {
    expect(failure(parser()({ start: 0, end: 5000, number: 3, bytes: undefined })).message).toBe(
      'the line is longer than the limit of 1000 bytes',
    );
    expect(parser()(line('  \r')).kind).toBe('blank');
  });

  it('fails a record nested far deeper than the model rank, and one with deep OIP parameters, by name', () => {
    const deep = `${'['.repeat(100_000)}1${']'.repeat(100_000)}`;
    const nested = failure(parser({ maxLineBytes: 1 << 20 })(line(`{"x": ${deep}}`)));
    expect(nested).toMatchObject({ code: 'invalid_input' });
    expect(nested.message).toMatch(/^input 'x': data is nested deeper than the model's rank 2/);
    const parameters = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`;
    const oip = `{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3], "parameters": ${parameters}}]}`;
    expect(record(parser({ maxLineBytes: 1 << 20 })(line(oip))).inputs[0]?.shape).toEqual([3]);
  });

  it('refuses more elements than the tensor limit', () => {
    const result = failure(parser({ limits: { maxTensorElements: 2 } })(line('[1, 2, 3]')));
    expect(result.code).toBe('payload_too_large');
  });
});

describe('createRecordParser (CSV)', () => {
  const csv = (header: string, options: Partial<RecordParserOptions> = {}) =>
    parser({ format: 'csv', csv: { header, idColumn: 'id' }, ...options });

  it('makes the columns other than the id one feature vector, in header order', () => {
    const parsed = record(csv('f1,id,f2,f3', { joinInput: true })(line('1.5,"row 9",-2,3e1')));
    expect(parsed).toEqual({
      line: 7,
      id: '"row 9"',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [3], data: Float32Array.from([1.5, -2, 30]) }],
      shapeKey: '3',
      bytes: 12,
      source: '{"f1":"1.5","id":"row 9","f2":"-2","f3":"3e1"}',
    });
  });

  it('names a row by its line number when there is no id column, or its cell is empty', () => {
    expect(record(csv('a,b,c')(line('1,2,3'))).id).toBe('7');
    expect(record(csv('a,id,b,c')(line('1,,2,3'))).id).toBe('7');
  });

  it('keeps every digit of 64-bit integers', () => {
    const signature: ModelSignature = {
      inputs: [{ name: 'n', datatype: 'INT64', shape: [-1, 2] }],
      outputs: [],
    };
    const parsed = record(csv('a,b', { signature })(line('9007199254740993,-4')));
    expect(parsed.inputs[0]?.data).toEqual(BigInt64Array.from([9007199254740993n, -4n]));
  });

  it.each([
    ['a missing field', '1,2', /the row has 2 fields but the header has 3/],
    ['an empty cell', '1,,3', /column 'b' is empty/],
    ['text', '1,two,3', /column 'b': 'two' is not a number/],
    ['hex', '1,0x10,3', /'0x10' is not a number/],
    ['a broken quote', '1,"2,3', /unterminated quoted field/],
  ])('fails a row with %s', (_name, text, message) => {
    expect(failure(csv('a,b,c')(line(text))).message).toMatch(message);
  });

  it('fails the whole input when the model is not a single-input tabular one', () => {
    expect(() => csv('a,b', { signature: TWO })).toThrow(UnsupportedInputError);
    expect(() => csv('a,b', { signature: TWO })).toThrow(
      /CSV input needs a single-input tabular model; this one has 2 inputs/,
    );
    expect(() => csv('id')).toThrow(/names no feature column/);
    expect(() => parser({ format: 'csv' })).toThrow(/needs its header line/);
  });
});
