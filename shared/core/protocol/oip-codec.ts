/**
 * The Open Inference Protocol (KServe v2) REST codec, with the binary tensor extension: requests and
 * responses between bytes and {@link InferRequest} / {@link InferResponse}.
 *
 * With an `Inference-Header-Content-Length` of N, the first N bytes of a body are the JSON header and the
 * tensors whose `parameters.binary_data_size` is set follow it, back to back, in the order they are listed.
 */
import { InvalidInputError, PayloadTooLargeError } from '../errors';
import { printable } from '../names';
import { nestedShape } from '../nested';
import {
  boundingCount,
  DATATYPES,
  type Datatype,
  ELEMENT_BYTES,
  elementCount,
  isDatatype,
  MAX_RANK,
  type ModelSignature,
  type TensorData,
} from '../tensor';
import type {
  CodecLimits,
  EncodedMessage,
  InferInput,
  InferOutput,
  InferRequest,
  InferResponse,
  RequestedOutput,
} from './infer-types';
import { INFERENCE_HEADER_CONTENT_LENGTH } from './infer-types';
import { concatBytes, readBinaryTensor, writeBinaryTensor } from './oip-binary';
import {
  describeJsonValue,
  jsonToTensorData,
  nestedJsonToTensorData,
  parseJsonBytes,
  tensorDataToJson,
} from './oip-json';

type Json = Record<string, unknown>;
type Role = 'input' | 'output';

const NO_LIMITS: CodecLimits = { maxTensorElements: Number.POSITIVE_INFINITY };
const utf8 = new TextEncoder();

/**
 * Decodes an inference request body (OIP v2 REST JSON, optionally with the binary tensor extension).
 *
 * Every input is checked before any tensor is allocated: names unique, datatype known, dims non-negative
 * integers, element counts within `limits`. Then JSON data (flat row-major, or nested exactly as `shape`)
 * is converted per {@link jsonToTensorData}, and binary data is viewed in place when aligned.
 *
 * @param body - the whole request body
 * @param headerContentLength - the `Inference-Header-Content-Length` header, when the request has one
 * @throws {@link InvalidInputError} (400) naming the input and the rule it breaks
 * @throws {@link PayloadTooLargeError} (413) when a shape holds more elements than `limits` allow
 * @example
 * const body = new TextEncoder().encode('{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]}]}');
 * decodeInferRequest(body, undefined, { maxTensorElements: 1 << 24 }).inputs[0]?.data; // Float32Array [1, 2]
 */
export function decodeInferRequest(
  body: Uint8Array,
  headerContentLength: string | undefined,
  limits: CodecLimits,
): InferRequest {
  const { header, binaryStart } = splitBody(body, headerContentLength, 'request');
  if (header.id !== undefined && typeof header.id !== 'string') {
    throw new InvalidInputError(`'id' must be a string`);
  }
  const parameters = readParameters(header.parameters, `request 'parameters'`);
  const binaryOutputDefault = readFlag(
    parameters,
    'binary_data_output',
    `request parameters.binary_data_output`,
  );
  if (header.inputs === undefined) throw new InvalidInputError(`the request has no 'inputs'`);
  const inputs = decodeTensors(
    header.inputs,
    'input',
    body,
    binaryStart,
    headerContentLength !== undefined,
    limits,
  );
  const outputs = header.outputs === undefined ? undefined : readRequestedOutputs(header.outputs);
  return {
    ...(header.id === undefined ? {} : { id: header.id }),
    ...withParameters(parameters, 'binary_data_output'),
    inputs,
    ...(outputs === undefined ? {} : { outputs }),
    binaryOutputDefault: binaryOutputDefault ?? false,
  };
}

/**
 * Whether `Inference-Header-Content-Length` says "raw binary request": 0, no JSON header, the whole body
 * is the data of the model's one input (Triton's binary tensor data extension).
 */
export function isRawBinaryRequest(headerContentLength: string | undefined): boolean {
  return headerContentLength !== undefined && /^0{1,15}$/.test(headerContentLength);
}

/**
 * Decodes a raw binary request (see {@link isRawBinaryRequest}) for a model, as Triton does: the model
 * has one input; a dynamic batch dim (dim 0 when `maxBatchSize` > 0) is 1; at most one other dim is
 * dynamic, and it is what the byte count makes it; BYTES data is one element, the whole body (UTF-8).
 * Every output of such a request is answered as binary data.
 *
 * @throws {@link InvalidInputError} when the shape cannot be decided from the model and the body, or the
 *   bytes do not fit it
 * @throws {@link PayloadTooLargeError} when the shape holds more elements than `limits` allow
 */
export function decodeRawBinaryRequest(
  body: Uint8Array,
  signature: ModelSignature,
  maxBatchSize: number,
  limits: CodecLimits,
): InferInput[] {
  const raw = 'a raw binary request (Inference-Header-Content-Length: 0)';
  const [spec, ...others] = signature.inputs;
  if (spec === undefined || others.length > 0) {
    const names = signature.inputs.map((s) => s.name).join(', ');
    throw new InvalidInputError(
      `${raw} needs a model with one input; this one has ${signature.inputs.length} (${names}): send the JSON header`,
    );
  }
  const where = `input '${printable(spec.name)}'`;
  const shape = [...spec.shape];
  if (maxBatchSize > 0 && (shape[0] ?? 0) < 0) shape[0] = 1;
  const open = shape.flatMap((d, i) => (d < 0 ? [i] : []));
  if (spec.datatype === 'BYTES') {
    for (const i of open) shape[i] = 1;
    if (elementCount(shape) !== 1) {
      throw new InvalidInputError(
        `${raw} carries one BYTES element, but ${where} has shape ${shapeText(spec.shape)}: send the JSON header`,
      );
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    } catch (error) {
      throw new InvalidInputError(`${where}: the raw BYTES body is not valid UTF-8`, { cause: error });
    }
    return [{ name: spec.name, datatype: 'BYTES', shape, data: [text] }];
  }
  if (open.length > 1) {
    throw new InvalidInputError(
      `${raw} cannot tell the shape of ${where} ${shapeText(spec.shape)}: dims ${open.join(' and ')} are both dynamic; send the JSON header with the shape`,
    );
  }
  const elementBytes = ELEMENT_BYTES[spec.datatype];
  const fixedBytes = boundingCount(shape.filter((d) => d >= 0)) * elementBytes;
  const dim = open[0];
  if (dim !== undefined) {
    if (shape.some((d) => d === 0) || body.byteLength % fixedBytes !== 0) {
      throw new InvalidInputError(
        `${where}: a raw body of ${body.byteLength} bytes is not a whole number of ${shapeText(spec.shape)} ${spec.datatype} rows of ${fixedBytes} bytes`,
      );
    }
    shape[dim] = body.byteLength / fixedBytes;
  }
  if (boundingCount(shape) > limits.maxTensorElements) {
    throw new PayloadTooLargeError(
      `${where}: shape ${shapeText(shape)} holds ${elementCount(shape)} elements, over the limit of ${limits.maxTensorElements}`,
    );
  }
  const data = readBinaryTensor(where, spec.datatype, elementCount(shape), shapeText(shape), body);
  return [{ name: spec.name, datatype: spec.datatype, shape, data }];
}

/**
 * Decodes a list of OIP input tensors that is already parsed JSON (e.g. the `inputs` of a batch record),
 * by the rules of {@link decodeInferRequest}; binary data is not possible without a body.
 */
export function decodeJsonInputs(list: unknown, limits: CodecLimits): InferInput[] {
  return decodeTensors(list, 'input', new Uint8Array(0), 0, false, limits);
}

/**
 * Encodes an inference response. All-JSON (`content-type: application/json`) when no output is binary;
 * otherwise the JSON header, then the binary outputs' bytes in order, with
 * `inference-header-content-length` and `content-type: application/octet-stream`.
 *
 * JSON data is flat row-major; see {@link tensorDataToJson} for NaN/±Infinity (strings), INT64 (exact
 * literals) and FP16 (numbers). Binary outputs are exact.
 *
 * @param binaryOutputs - whether an output goes binary, or the decoded request to derive that from (see
 *   {@link binaryOutputSelector})
 * @throws Error when an output's data length does not match its shape (an engine bug, not the client's)
 * @example
 * const request = decodeInferRequest(body, headers['inference-header-content-length'], limits);
 * const { body, headers } = encodeInferResponse(response, request);
 */
export function encodeInferResponse(
  response: InferResponse,
  binaryOutputs: ((name: string) => boolean) | Pick<InferRequest, 'outputs' | 'binaryOutputDefault'>,
): EncodedMessage {
  const isBinary = typeof binaryOutputs === 'function' ? binaryOutputs : binaryOutputSelector(binaryOutputs);
  let head = `{"model_name":${JSON.stringify(response.modelName)},"model_version":${JSON.stringify(response.modelVersion)}`;
  if (response.id !== undefined) head += `,"id":${JSON.stringify(response.id)}`;
  if (response.parameters !== undefined) head += `,"parameters":${JSON.stringify(response.parameters)}`;
  const { json, blobs } = encodeTensors(response.outputs, 'output', isBinary);
  return assemble(`${head},"outputs":${json}}`, blobs);
}

/**
 * Which outputs of a response go binary for `request`: an output's own `binary_data` when the request
 * names it with one, else the request's `binary_data_output`.
 */
export function binaryOutputSelector(
  request: Pick<InferRequest, 'outputs' | 'binaryOutputDefault'>,
): (name: string) => boolean {
  const own = new Map<string, boolean>();
  for (const output of request.outputs ?? []) {
    if (output.binaryData !== undefined) own.set(output.name, output.binaryData);
  }
  return (name) => own.get(name) ?? request.binaryOutputDefault;
}

/**
 * Encodes an inference request, for clients (the CLI, benchmarks, tests): inputs as JSON data, or all as
 * binary data when `binaryInputs` is set.
 */
export function encodeInferRequest(
  request: InferRequest,
  options: { binaryInputs?: boolean } = {},
): EncodedMessage {
  const parameters = { ...request.parameters };
  if (request.binaryOutputDefault) parameters.binary_data_output = true;
  let head = '{';
  if (request.id !== undefined) head += `"id":${JSON.stringify(request.id)},`;
  if (Object.keys(parameters).length > 0) head += `"parameters":${JSON.stringify(parameters)},`;
  const binary = options.binaryInputs === true;
  const { json, blobs } = encodeTensors(request.inputs, 'input', () => binary);
  head += `"inputs":${json}`;
  if (request.outputs !== undefined) {
    const outputs = request.outputs.map((o) =>
      o.binaryData === undefined
        ? { name: o.name }
        : { name: o.name, parameters: { binary_data: o.binaryData } },
    );
    head += `,"outputs":${JSON.stringify(outputs)}`;
  }
  return assemble(`${head}}`, blobs);
}

/**
 * Decodes an inference response body, for clients (the CLI, benchmarks, tests). The same rules as
 * {@link decodeInferRequest}; a JSON INT64 beyond 2^53 is refused, since `JSON.parse` already rounded it.
 */
export function decodeInferResponse(
  body: Uint8Array,
  headerContentLength: string | undefined,
  limits: CodecLimits = NO_LIMITS,
): InferResponse {
  const { header, binaryStart } = splitBody(body, headerContentLength, 'response');
  if (typeof header.model_name !== 'string') throw new InvalidInputError(`the response has no 'model_name'`);
  const modelVersion = header.model_version === undefined ? '' : header.model_version;
  if (typeof modelVersion !== 'string') throw new InvalidInputError(`'model_version' must be a string`);
  if (header.id !== undefined && typeof header.id !== 'string') {
    throw new InvalidInputError(`'id' must be a string`);
  }
  const parameters = readParameters(header.parameters, `response 'parameters'`);
  if (header.outputs === undefined) throw new InvalidInputError(`the response has no 'outputs'`);
  const outputs = decodeTensors(
    header.outputs,
    'output',
    body,
    binaryStart,
    headerContentLength !== undefined,
    limits,
  );
  return {
    modelName: header.model_name,
    modelVersion,
    ...(header.id === undefined ? {} : { id: header.id }),
    ...withParameters(parameters),
    outputs: outputs.map(({ name, datatype, shape, data }) => ({ name, datatype, shape, data })),
  };
}

function splitBody(
  body: Uint8Array,
  headerContentLength: string | undefined,
  what: string,
): { header: Json; binaryStart: number } {
  let headerEnd = body.byteLength;
  if (headerContentLength !== undefined) {
    if (!/^[0-9]{1,15}$/.test(headerContentLength)) {
      throw new InvalidInputError(
        `Inference-Header-Content-Length '${printable(headerContentLength)}' is not a non-negative integer`,
      );
    }
    headerEnd = Number(headerContentLength);
    if (headerEnd > body.byteLength) {
      throw new InvalidInputError(
        `the ${what} body (${body.byteLength} bytes) is shorter than its Inference-Header-Content-Length ${headerEnd}`,
      );
    }
  }
  const header = parseJsonBytes(body.subarray(0, headerEnd), `the ${what}'s JSON`);
  if (!isObject(header)) throw new InvalidInputError(`the ${what}'s JSON must be an object`);
  return { header, binaryStart: headerEnd };
}

interface TensorHeader {
  readonly where: string;
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: number[];
  readonly count: number;
  readonly parameters: Json | undefined;
  readonly data: unknown;
  readonly binarySize: number | undefined;
}

function decodeTensors(
  list: unknown,
  role: Role,
  body: Uint8Array,
  binaryStart: number,
  binaryAllowed: boolean,
  limits: CodecLimits,
): InferInput[] {
  if (!Array.isArray(list)) throw new InvalidInputError(`'${role}s' must be an array of tensors`);
  // First every header, so that nothing is allocated for a request that a later input makes invalid.
  const headers: TensorHeader[] = [];
  const names = new Set<string>();
  let total = 0;
  for (let i = 0; i < list.length; i++) {
    const tensor = readTensorHeader(list[i], role, i, binaryAllowed, limits);
    if (names.has(tensor.name)) throw new InvalidInputError(`${tensor.where} appears more than once`);
    names.add(tensor.name);
    total += tensor.count;
    if (limits.maxTotalElements !== undefined && total > limits.maxTotalElements) {
      throw new PayloadTooLargeError(
        `the ${role}s hold more than ${limits.maxTotalElements} elements together (the limit)`,
      );
    }
    headers.push(tensor);
  }
  let offset = binaryStart;
  const tensors = headers.map((t): InferInput => {
    let data: TensorData;
    if (t.binarySize === undefined) {
      data = jsonData(t);
    } else {
      if (t.binarySize > body.byteLength - offset) {
        throw new InvalidInputError(
          `${t.where}: binary_data_size ${t.binarySize} runs past the end of the body (${body.byteLength - offset} bytes left)`,
        );
      }
      const bytes = body.subarray(offset, offset + t.binarySize);
      offset += t.binarySize;
      data = readBinaryTensor(t.where, t.datatype, t.count, shapeText(t.shape), bytes);
    }
    const parameters = withParameters(t.parameters, 'binary_data_size');
    return { name: t.name, datatype: t.datatype, shape: t.shape, data, ...parameters };
  });
  if (offset < body.byteLength) {
    throw new InvalidInputError(
      `${body.byteLength - offset} bytes are left over after the JSON header and the binary ${role}s`,
    );
  }
  return tensors;
}

function readTensorHeader(
  raw: unknown,
  role: Role,
  index: number,
  binaryAllowed: boolean,
  limits: CodecLimits,
): TensorHeader {
  if (!isObject(raw)) throw new InvalidInputError(`${role}s[${index}] must be an object`);
  if (typeof raw.name !== 'string' || raw.name.length === 0) {
    throw new InvalidInputError(`${role}s[${index}]: 'name' must be a non-empty string`);
  }
  const name = raw.name;
  const where = `${role} '${printable(name)}'`;
  if (raw.datatype === undefined) {
    throw new InvalidInputError(`${where}: 'datatype' is missing (one of ${DATATYPES.join(', ')})`);
  }
  if (!isDatatype(raw.datatype)) {
    const got =
      typeof raw.datatype === 'string' ? `'${printable(raw.datatype)}'` : describeJsonValue(raw.datatype);
    throw new InvalidInputError(`${where}: datatype ${got} is not one of ${DATATYPES.join(', ')}`);
  }
  const datatype = raw.datatype;
  if (!Array.isArray(raw.shape)) {
    throw new InvalidInputError(
      `${where}: 'shape' must be an array of dims, got ${describeJsonValue(raw.shape)}`,
    );
  }
  if (raw.shape.length > MAX_RANK) {
    throw new InvalidInputError(
      `${where}: shape has ${raw.shape.length} dims, more than the ${MAX_RANK} a tensor may have`,
    );
  }
  const shape: number[] = [];
  for (let d = 0; d < raw.shape.length; d++) {
    const dim: unknown = raw.shape[d];
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0) {
      throw new InvalidInputError(
        `${where}: dim ${d} of shape is ${describeJsonValue(dim)}, not a non-negative integer`,
      );
    }
    shape.push(dim);
  }
  const count = elementCount(shape);
  const bound = boundingCount(shape);
  if (bound > limits.maxTensorElements) {
    const holds =
      count === bound ? `holds ${count} elements` : `spans ${bound} elements (its empty dims aside)`;
    throw new PayloadTooLargeError(
      `${where}: shape ${shapeText(shape)} ${holds}, over the limit of ${limits.maxTensorElements}`,
    );
  }
  const parameters = readParameters(raw.parameters, `${where}: 'parameters'`);
  const size = parameters?.binary_data_size;
  let binarySize: number | undefined;
  if (size !== undefined) {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new InvalidInputError(`${where}: parameters.binary_data_size must be a non-negative integer`);
    }
    if (!binaryAllowed) {
      throw new InvalidInputError(
        `${where} has parameters.binary_data_size but there is no Inference-Header-Content-Length header`,
      );
    }
    if (raw.data !== undefined) {
      throw new InvalidInputError(`${where} has both 'data' and parameters.binary_data_size`);
    }
    binarySize = size;
  } else if (raw.data === undefined) {
    throw new InvalidInputError(`${where} has neither 'data' nor parameters.binary_data_size`);
  }
  return { where, name, datatype, shape, count, parameters, data: raw.data, binarySize };
}

/** JSON data, flat row-major or nested exactly as the shape says, converted to the datatype's array. */
function jsonData(t: TensorHeader): TensorData {
  const data = t.data;
  if (!Array.isArray(data)) throw new InvalidInputError(`${t.where}: 'data' must be an array`);
  if (data.length > 0 && Array.isArray(data[0])) {
    // Read no deeper than one level past the declared rank (at most MAX_RANK): enough to tell a mismatch.
    const nested = nestedShape(data, t.shape.length);
    if (!sameShape(nested, t.shape)) {
      throw new InvalidInputError(
        `${t.where}: nested data has shape ${shapeText(nested)} but 'shape' is ${shapeText(t.shape)}`,
      );
    }
    return nestedJsonToTensorData(t.where, t.datatype, data, t.shape);
  }
  if (data.length !== t.count) {
    throw new InvalidInputError(
      `${t.where}: shape ${shapeText(t.shape)} holds ${t.count} elements but data has ${data.length}`,
    );
  }
  return jsonToTensorData(t.where, t.datatype, data);
}

function readRequestedOutputs(raw: unknown): RequestedOutput[] {
  if (!Array.isArray(raw)) throw new InvalidInputError(`'outputs' must be an array`);
  const seen = new Set<string>();
  return raw.map((entry: unknown, i): RequestedOutput => {
    if (!isObject(entry)) throw new InvalidInputError(`outputs[${i}] must be an object`);
    if (typeof entry.name !== 'string' || entry.name.length === 0) {
      throw new InvalidInputError(`outputs[${i}]: 'name' must be a non-empty string`);
    }
    const where = `output '${printable(entry.name)}'`;
    if (seen.has(entry.name)) throw new InvalidInputError(`${where} is requested more than once`);
    seen.add(entry.name);
    const parameters = readParameters(entry.parameters, `${where}: 'parameters'`);
    const binaryData = readFlag(parameters, 'binary_data', `${where}: parameters.binary_data`);
    return binaryData === undefined ? { name: entry.name } : { name: entry.name, binaryData };
  });
}

function encodeTensors(
  tensors: readonly InferOutput[],
  role: Role,
  isBinary: (name: string) => boolean,
): { json: string; blobs: Uint8Array[] } {
  const blobs: Uint8Array[] = [];
  const parts = tensors.map((t) => {
    const count = elementCount(t.shape);
    if (t.data.length !== count) {
      throw new Error(
        `${role} '${t.name}': shape ${shapeText(t.shape)} holds ${count} elements but data has ${t.data.length}`,
      );
    }
    const head = `{"name":${JSON.stringify(t.name)},"datatype":"${t.datatype}","shape":${shapeText(t.shape)}`;
    const given = (t as InferInput).parameters;
    if (isBinary(t.name)) {
      const bytes = writeBinaryTensor(t.datatype, t.data);
      blobs.push(bytes);
      return `${head},"parameters":${JSON.stringify({ ...given, binary_data_size: bytes.byteLength })}}`;
    }
    const parameters = given === undefined ? '' : `,"parameters":${JSON.stringify(given)}`;
    return `${head}${parameters},"data":${tensorDataToJson(t.datatype, t.data)}}`;
  });
  return { json: `[${parts.join(',')}]`, blobs };
}

function assemble(json: string, blobs: readonly Uint8Array[]): EncodedMessage {
  if (blobs.length === 0) return { body: utf8.encode(json), headers: { 'content-type': 'application/json' } };
  // Trailing spaces (valid JSON whitespace) end the header on an 8-byte boundary, so the receiver can use
  // the first binary tensor in place instead of copying it to an aligned buffer.
  const bytes = utf8.encode(json);
  const header =
    bytes.byteLength % 8 === 0 ? bytes : utf8.encode(json + ' '.repeat(8 - (bytes.byteLength % 8)));
  return {
    body: concatBytes([header, ...blobs]),
    headers: {
      'content-type': 'application/octet-stream',
      [INFERENCE_HEADER_CONTENT_LENGTH]: String(header.byteLength),
    },
  };
}

function readParameters(raw: unknown, where: string): Json | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw new InvalidInputError(`${where} must be an object`);
  return raw;
}

function readFlag(parameters: Json | undefined, key: string, where: string): boolean | undefined {
  const value = parameters?.[key];
  if (value !== undefined && typeof value !== 'boolean') {
    throw new InvalidInputError(`${where} must be true or false`);
  }
  return value as boolean | undefined;
}

/** `{ parameters }` without the transport key, or nothing when none is left. */
function withParameters(parameters: Json | undefined, transportKey?: string): { parameters?: Json } {
  if (parameters === undefined) return {};
  const kept = Object.fromEntries(Object.entries(parameters).filter(([key]) => key !== transportKey));
  return Object.keys(kept).length === 0 ? {} : { parameters: kept };
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** `[2,3]`, as messages and the JSON header write a shape. */
export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}
