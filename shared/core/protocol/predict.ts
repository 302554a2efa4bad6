/**
 * The plain predict endpoint, for clients that know nothing of the Open Inference Protocol: nested JSON
 * arrays in, nested JSON arrays out. Shapes come from the nesting, datatypes from the model.
 *
 * Request bodies, for a model with inputs `x` (and `y`):
 * - `[[1, 2], [3, 4]]`: the one input of a single-input model;
 * - `{"x": [[1, 2]], "y": [3]}`: inputs by name (a bare value is a scalar, shape `[]`);
 * - `{"inputs": <either of the above>}`: the same, wrapped, when `inputs` is the only key (unless the model
 *   has an input named `inputs` and the wrapped value is an array: then it is that input).
 *
 * Response body: `{"outputs": {"<name>": <nested array>, ...}}`, one entry per output in the order given,
 * nested per the output's shape (a scalar output is a bare value), with the JSON value rules of
 * {@link tensorDataToJson} (NaN/±Infinity as strings, INT64 as exact literals).
 */
import { InvalidInputError, PayloadTooLargeError } from '../errors';
import { printable } from '../names';
import { nestedShape } from '../nested';
import { boundingCount, type Datatype, elementCount, type ModelSignature, type TensorData } from '../tensor';
import type { CodecLimits, InferInput, InferOutput } from './infer-types';
import { shapeText } from './oip-codec';
import { nestedJsonToTensorData, parseJsonBytes, tensorDataToJson } from './oip-json';

const utf8 = new TextEncoder();

/**
 * Decodes a predict request body into inputs for `signature`'s model. Inputs the model lacks are refused
 * here (the datatype would be unknown); missing inputs and shape rules are left to `validateInputs`.
 *
 * @param limits - optional caps; the body is already parsed, so they only bound the typed arrays
 * @throws {@link InvalidInputError} for malformed JSON, ragged nesting, unknown inputs and bad values
 * @throws {@link PayloadTooLargeError} when a tensor holds more elements than `limits` allow
 * @example
 * decodePredictRequest(new TextEncoder().encode('[[1, 2, 3]]'), signature);
 * // [{ name: 'x', datatype: 'FP32', shape: [1, 3], data: Float32Array [1, 2, 3] }]
 */
export function decodePredictRequest(
  body: Uint8Array,
  signature: ModelSignature,
  limits?: CodecLimits,
): InferInput[] {
  let payload = parseJsonBytes(body, 'the request body');
  const names = signature.inputs.map((s) => s.name);
  if (isObject(payload)) {
    const keys = Object.keys(payload);
    const wrapped = payload.inputs;
    if (keys.length === 1 && keys[0] === 'inputs' && (isObject(wrapped) || !names.includes('inputs'))) {
      payload = wrapped;
    }
  }
  const named: [string, unknown][] = [];
  if (isObject(payload)) {
    named.push(...Object.entries(payload));
  } else if (payload === null) {
    throw new InvalidInputError(
      'the request body must be a nested array or an object of input name -> nested array',
    );
  } else if (signature.inputs.length === 1) {
    named.push([names[0] as string, payload]);
  } else {
    throw new InvalidInputError(
      `the model has ${names.length} inputs (${names.join(', ')}): send an object of input name -> nested array`,
    );
  }
  let total = 0;
  return named.map(([name, value]): InferInput => {
    const where = `input '${printable(name)}'`;
    const spec = signature.inputs.find((s) => s.name === name);
    if (spec === undefined) {
      throw new InvalidInputError(
        `the model has no input '${printable(name)}' (inputs: ${names.join(', ')})`,
      );
    }
    const rank = spec.shape.length;
    // Bounded by the model's rank before anything walks the nesting recursively.
    const shape = nestedShape(value, rank);
    if (shape.length > rank) {
      throw new InvalidInputError(
        `${where}: data is nested deeper than the model's rank ${rank} (shape ${shapeText(spec.shape)})`,
      );
    }
    const count = boundingCount(shape);
    total += count;
    if (limits !== undefined && count > limits.maxTensorElements) {
      throw new PayloadTooLargeError(
        `${where}: shape ${shapeText(shape)} holds ${elementCount(shape)} elements, over the limit of ${limits.maxTensorElements}`,
      );
    }
    if (limits?.maxTotalElements !== undefined && total > limits.maxTotalElements) {
      throw new PayloadTooLargeError(
        `the inputs hold more than ${limits.maxTotalElements} elements together (the limit)`,
      );
    }
    const data = nestedJsonToTensorData(where, spec.datatype, value, shape);
    return { name, datatype: spec.datatype, shape, data };
  });
}

/**
 * Encodes outputs as the predict response body `{"outputs": {"<name>": <nested array>}}`.
 *
 * @throws Error when an output's data length does not match its shape (an engine bug, not the client's)
 * @example
 * encodePredictResponse([{ name: 'y', datatype: 'FP32', shape: [1, 2], data: new Float32Array([1, 2]) }]);
 * // '{"outputs":{"y":[[1,2]]}}' as UTF-8
 */
export function encodePredictResponse(outputs: readonly InferOutput[]): Uint8Array {
  const entries = outputs.map((o) => {
    const count = elementCount(o.shape);
    if (o.data.length !== count) {
      throw new Error(
        `output '${o.name}': shape ${shapeText(o.shape)} holds ${count} elements but data has ${o.data.length}`,
      );
    }
    return `${JSON.stringify(o.name)}:${nestedJson(o.datatype, o.data, o.shape)}`;
  });
  return utf8.encode(`{"outputs":{${entries.join(',')}}}`);
}

function nestedJson(datatype: Datatype, data: TensorData, shape: readonly number[]): string {
  if (shape.length === 0) return tensorDataToJson(datatype, data, 0, 1).slice(1, -1);
  const strides = shape.map((_, d) => elementCount(shape.slice(d + 1)));
  const build = (dim: number, offset: number): string => {
    const size = shape[dim] as number;
    if (dim === shape.length - 1) return tensorDataToJson(datatype, data, offset, offset + size);
    const stride = strides[dim] as number;
    const rows: string[] = new Array(size);
    for (let i = 0; i < size; i++) rows[i] = build(dim + 1, offset + i * stride);
    return `[${rows.join(',')}]`;
  };
  return build(0, 0);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
