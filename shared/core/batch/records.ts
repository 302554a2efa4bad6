/**
 * One input line to one record: the model's inputs for one example, checked against the model before
 * anything runs, or the reason the line cannot be scored. The tensor rules are the serving ones: nested
 * arrays as the predict codec reads them ({@link nestedShape}, {@link flattenNested}), values as
 * {@link jsonToTensorData} converts them, OIP tensors as {@link decodeInferRequest} decodes them, and the
 * result checked by {@link validateInputs}, so a record fails in batch exactly where the infer door would
 * answer 400.
 *
 * JSON Lines records, for a model with inputs `x` (and `y`):
 * - `{"x": [1, 2], "y": [3]}`: inputs by name, each one example (no batch axis), or a batch of one;
 * - `{"inputs": {"x": [1, 2]}}` or `{"inputs": [1, 2]}`: the same, wrapped, as the predict endpoint takes;
 * - `{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}`: OIP tensors;
 * - `[1, 2]`: the one input of a single-input model.
 * An `id` field (a string or a number) is carried to the output; a record without one is named by its
 * line number. A model with an input named `id` or `inputs` keeps that name for the input.
 *
 * CSV records: the header names the columns; the id column (configurable) is the id and every other
 * column is one element of the feature vector of a single-input tabular model, in header order.
 */
import { InvalidInputError, ServingError } from '../errors';
import { printable } from '../names';
import { nestedShape } from '../nested';
import type { CodecLimits, InferInput } from '../protocol/infer-types';
import { decodeJsonInputs } from '../protocol/oip-codec';
import { jsonToTensorData, nestedJsonToTensorData, parseJsonBytes } from '../protocol/oip-json';
import type { Datatype, ModelSignature, TensorData, TensorSpec } from '../tensor';
import { type InputRules, validateInputs } from '../validate-inputs';
import { parseCsvLine } from './csv';
import { UnsupportedInputError } from './errors';
import type { Line } from './line-splitter';
import type { InputFormat } from './object-names';

/** A line that can be scored. */
export interface ParsedRecord {
  readonly line: number;
  /** The id as JSON text: the record's own `id`, or its line number. */
  readonly id: string;
  /**
   * One tensor per model input, in the model's order: a single example without the batch axis when the
   * model batches ({@link hasBatchAxis}), else the whole tensor as the model takes it.
   */
  readonly inputs: readonly InferInput[];
  /** Records with equal keys have equal example shapes and may be stacked into one batch. */
  readonly shapeKey: string;
  /** Bytes of tensor data, for the micro-batch byte cap. */
  readonly bytes: number;
  /** The input record as JSON text, when outputs join it. */
  readonly source?: string;
}

/** A line that cannot be scored, and why. */
export interface RecordFailure {
  readonly line: number;
  /** The id as JSON text, or the line number when the line never got as far as its id. */
  readonly id: string;
  readonly code: string;
  readonly message: string;
}

/** What one line is: a record, a failure, or nothing (a blank line). */
export type RecordResult =
  | { readonly kind: 'record'; readonly record: ParsedRecord }
  | { readonly kind: 'failure'; readonly failure: RecordFailure }
  | { readonly kind: 'blank' };

/** The model and settings a parser reads records for. */
export interface RecordParserOptions {
  readonly format: InputFormat;
  readonly signature: ModelSignature;
  /** The model's `maxBatchSize` from config.json; 0: no batch axis. */
  readonly maxBatchSize: number;
  /**
   * The model's config.json `emptyDims`: the dims an input may have at 0, as the doors allow them (see
   * {@link InputRules}); none when absent.
   */
  readonly emptyDims?: InputRules['emptyDims'];
  readonly limits: CodecLimits;
  /** The longest line read; a longer one fails as a record (the line splitter never holds it). */
  readonly maxLineBytes: number;
  /** Keep each record's source text for the output line (SageMaker's `JoinSource=Input`). */
  readonly joinInput: boolean;
  /** CSV: the header line's text and the name of the id column. */
  readonly csv?: { readonly header: string; readonly idColumn: string };
}

/**
 * Whether records of this model are single examples stacked along dim 0: the config allows batches and
 * every input's dim 0 is dynamic. Otherwise each record is fed as it is, one run per record.
 */
export function hasBatchAxis(signature: ModelSignature, maxBatchSize: number): boolean {
  return (
    maxBatchSize > 0 &&
    signature.inputs.length > 0 &&
    signature.inputs.every((s) => s.shape.length > 0 && (s.shape[0] as number) < 0)
  );
}

/**
 * A parser of lines into records for one model. Blank lines are not records.
 *
 * @throws {@link UnsupportedInputError} when no line of this input could ever be scored (e.g. CSV for a
 *   model with two inputs, or a CSV header without feature columns): the job fails as a whole
 * @example
 * const parse = createRecordParser({ format: 'jsonl', signature, maxBatchSize: 64, limits, joinInput: false });
 * parse({ start: 0, end: 8, number: 1, bytes: new TextEncoder().encode('[1, 2]') });
 */
export function createRecordParser(options: RecordParserOptions): (line: Line) => RecordResult {
  const batched = hasBatchAxis(options.signature, options.maxBatchSize);
  const decodeLine = options.format === 'csv' ? csvDecoder(options, batched) : jsonDecoder(options, batched);
  return (line) => {
    if (line.bytes === undefined) {
      const reason = `the line is longer than the limit of ${options.maxLineBytes} bytes`;
      return failure(line.number, String(line.number), new InvalidInputError(reason));
    }
    if (isBlank(line.bytes)) return { kind: 'blank' };
    // The id is learnt part-way through decoding; a failure after that still names it.
    let id = String(line.number);
    try {
      const record = decodeLine(line, (value) => {
        id = value;
      });
      return { kind: 'record', record };
    } catch (error) {
      return failure(line.number, id, error);
    }
  };
}

/** Turns an error into the reason an errors-file line gives. */
export function failureOf(line: number, id: string, error: unknown): RecordFailure {
  if (error instanceof ServingError) return { line, id, code: error.code, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { line, id, code: 'inference_failed', message: message.slice(0, 1000) };
}

function failure(line: number, id: string, error: unknown): RecordResult {
  return { kind: 'failure', failure: failureOf(line, id, error) };
}

function isBlank(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.byteLength; i++) {
    const b = bytes[i];
    if (b !== 32 && b !== 9 && b !== 13) return false;
  }
  return true;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const utf8 = new TextDecoder('utf-8');

function jsonDecoder(options: RecordParserOptions, batched: boolean) {
  const { signature } = options;
  const names = signature.inputs.map((s) => s.name);
  const hasInput = (name: string) => names.includes(name);
  return (line: Line, setId: (id: string) => void): ParsedRecord => {
    const bytes = line.bytes as Uint8Array;
    let payload = parseJsonBytes(bytes, `line ${line.number}`);
    let id = String(line.number);
    let tensors: InferInput[] | undefined;
    if (isObject(payload)) {
      if (Object.hasOwn(payload, 'id') && !hasInput('id')) {
        id = readId(payload.id);
        setId(id);
        const { id: _omit, ...rest } = payload;
        payload = rest;
      }
      const record = payload as Json;
      const wrapped = record.inputs;
      if (Object.hasOwn(record, 'inputs') && !(hasInput('inputs') && Array.isArray(wrapped))) {
        if (Array.isArray(wrapped) && wrapped.length > 0 && wrapped.every(isObject)) {
          tensors = decodeOipInputs(wrapped, options.limits, batched, signature);
        } else if (Object.keys(record).length === 1) {
          payload = wrapped;
        }
      }
    }
    tensors ??= decodeNamed(payload, signature, batched);
    return finish(line.number, id, tensors, options, batched, () => utf8.decode(bytes));
  };
}

function readId(value: unknown): string {
  if (typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) {
    return JSON.stringify(value);
  }
  throw new InvalidInputError(`the record's 'id' must be a string or a number`);
}

/** Inputs by name (or the bare value of a single-input model), each one example. */
function decodeNamed(payload: unknown, signature: ModelSignature, batched: boolean): InferInput[] {
  const names = signature.inputs.map((s) => s.name);
  const named: [string, unknown][] = [];
  if (isObject(payload)) {
    named.push(...Object.entries(payload));
  } else if (Array.isArray(payload) && signature.inputs.length === 1) {
    named.push([names[0] as string, payload]);
  } else if (Array.isArray(payload)) {
    throw new InvalidInputError(
      `the model has ${names.length} inputs (${names.join(', ')}): write an object of input name -> nested array`,
    );
  } else {
    throw new InvalidInputError('a record must be a nested array or an object of input name -> nested array');
  }
  return named.map(([name, value]) => {
    const where = `input '${printable(name)}'`;
    const spec = signature.inputs.find((s) => s.name === name);
    if (spec === undefined) {
      throw new InvalidInputError(`the model has no ${where} (inputs: ${names.join(', ')})`);
    }
    const rank = spec.shape.length;
    const full = nestedShape(value, rank);
    if (full.length > rank) {
      throw new InvalidInputError(
        `${where}: data is nested deeper than the model's rank ${rank} (shape [${spec.shape.join(',')}])`,
      );
    }
    const data = nestedJsonToTensorData(where, spec.datatype, value, full);
    const shape = batched ? exampleShape(spec, full, where) : full;
    return { name, datatype: spec.datatype, shape, data };
  });
}

/** OIP tensors, decoded by the OIP codec itself; their shapes include the batch axis (of one). */
function decodeOipInputs(
  inputs: unknown[],
  limits: CodecLimits,
  batched: boolean,
  signature: ModelSignature,
): InferInput[] {
  const decoded = decodeJsonInputs(inputs, limits);
  if (!batched) return decoded;
  return decoded.map((input) => {
    const where = `input '${printable(input.name)}'`;
    const spec = signature.inputs.find((s) => s.name === input.name);
    if (spec === undefined) return input;
    return { ...input, shape: exampleShape(spec, input.shape, where) };
  });
}

/**
 * The shape of one example: a record holds one, written without the batch axis (`[1, 2]` for `[batch, 2]`)
 * or as a batch of one (`[[1, 2]]`). More than one example in a record is refused: outputs are per record.
 */
function exampleShape(spec: TensorSpec, shape: readonly number[], where: string): number[] {
  const rank = spec.shape.length;
  if (shape.length === rank - 1) return [...shape];
  if (shape.length === rank && shape[0] === 1) return shape.slice(1);
  const inner = spec.shape.slice(1).map((d) => (d < 0 ? '-1' : String(d)));
  throw new InvalidInputError(
    `${where}: a record holds one example of shape [${inner.join(',')}] (or a batch of one, [1,${inner.join(',')}]); got [${shape.join(',')}]`,
  );
}

/** Checks the record as the service would check a batch of one, then puts its inputs in model order. */
function finish(
  line: number,
  id: string,
  tensors: readonly InferInput[],
  options: RecordParserOptions,
  batched: boolean,
  source: () => string,
): ParsedRecord {
  const fed = batched ? tensors.map((t) => ({ ...t, shape: [1, ...t.shape] })) : tensors;
  // The doors' rules, config.json `emptyDims` included: a record fails here exactly where a request would.
  const rules: InputRules = {
    maxBatchSize: options.maxBatchSize,
    ...(options.emptyDims === undefined ? {} : { emptyDims: options.emptyDims }),
  };
  validateInputs(fed, options.signature, rules, options.limits);
  const inputs: InferInput[] = [];
  const key: string[] = [];
  let bytes = 0;
  for (const spec of options.signature.inputs) {
    const input = tensors.find((t) => t.name === spec.name) as InferInput;
    inputs.push({ name: input.name, datatype: input.datatype, shape: input.shape, data: input.data });
    key.push(input.shape.join(','));
    bytes += dataBytes(input.data);
  }
  return {
    line,
    id,
    inputs,
    shapeKey: key.join('|'),
    bytes,
    ...(options.joinInput ? { source: source() } : {}),
  };
}

function dataBytes(data: TensorData): number {
  if (Array.isArray(data)) return data.reduce((n, s) => n + s.length, 0);
  return data.byteLength;
}

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;
const NON_FINITE = new Set(['NaN', 'Infinity', '-Infinity']);

function csvDecoder(options: RecordParserOptions, batched: boolean) {
  const csv = options.csv;
  if (csv === undefined) throw new UnsupportedInputError('a CSV input needs its header line');
  const { signature } = options;
  const spec = signature.inputs[0];
  if (spec === undefined || signature.inputs.length !== 1) {
    throw new UnsupportedInputError(
      `CSV input needs a single-input tabular model; this one has ${signature.inputs.length} inputs (${signature.inputs.map((s) => s.name).join(', ')})`,
    );
  }
  let header: string[];
  try {
    header = parseCsvLine(csv.header).map((h) => h.trim());
  } catch (error) {
    throw new UnsupportedInputError(`the CSV header cannot be read: ${(error as Error).message}`);
  }
  const idIndex = header.indexOf(csv.idColumn);
  const features = header.map((_, i) => i).filter((i) => i !== idIndex);
  if (features.length === 0) throw new UnsupportedInputError('the CSV header names no feature column');
  const rank = spec.shape.length;
  if (batched ? rank !== 2 : rank !== 1 && !(rank === 2 && spec.shape[0] === 1)) {
    throw new UnsupportedInputError(
      `CSV rows are feature vectors, but input '${spec.name}' has shape [${spec.shape.join(',')}]`,
    );
  }
  const where = `input '${printable(spec.name)}'`;
  return (line: Line, setId: (id: string) => void): ParsedRecord => {
    const text = utf8.decode(line.bytes as Uint8Array);
    const fields = parseCsvLine(text);
    const own = idIndex >= 0 ? (fields[idIndex]?.trim() ?? '') : '';
    const id = own === '' ? String(line.number) : JSON.stringify(own);
    setId(id);
    if (fields.length !== header.length) {
      throw new InvalidInputError(`the row has ${fields.length} fields but the header has ${header.length}`);
    }
    const values = features.map((i) => csvValue(fields[i] as string, header[i] as string, spec.datatype));
    const data = jsonToTensorData(where, spec.datatype, values);
    const shape = batched || rank === 1 ? [values.length] : [1, values.length];
    const source = () => JSON.stringify(Object.fromEntries(header.map((h, i) => [h, fields[i]])));
    const tensor: InferInput = { name: spec.name, datatype: spec.datatype, shape, data };
    return finish(line.number, id, [tensor], options, batched, source);
  };
}

function csvValue(raw: string, column: string, datatype: Datatype): unknown {
  const cell = raw.trim();
  if (cell === '') throw new InvalidInputError(`column '${printable(column)}' is empty`);
  if (NON_FINITE.has(cell)) return cell;
  if (cell === '+Infinity') return 'Infinity';
  if (!NUMBER.test(cell)) {
    throw new InvalidInputError(`column '${printable(column)}': '${printable(cell)}' is not a number`);
  }
  // 64-bit integers keep every digit as text; jsonToTensorData reads digit strings exactly.
  if ((datatype === 'INT64' || datatype === 'UINT64') && INTEGER.test(cell)) return cell.replace(/^\+/, '');
  return Number(cell);
}
