/**
 * Tensors as the core sees them: an Open Inference Protocol datatype, a shape and the data in the typed
 * array onnxruntime takes for that datatype. No onnxruntime import here: the engine adapter converts.
 */

/** Every OIP datatype that ONNX Runtime can take. */
export const DATATYPES = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
] as const;

export type Datatype = (typeof DATATYPES)[number];

/**
 * Data layout per datatype. BOOL is one byte per element (0 or 1), FP16 holds IEEE half bits, 64-bit
 * integers are bigint arrays and BYTES are strings (ONNX string tensors).
 */
export type TensorData =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigUint64Array
  | BigInt64Array
  | Float32Array
  | Float64Array
  | string[];

export interface Tensor {
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

/**
 * A model's declared input or output. `shape` uses -1 for a dynamic dim; `dims` keeps the symbolic names
 * (e.g. `batch`) where the model has them, for metadata and tooling.
 */
export interface TensorSpec {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly dims?: readonly (string | number)[];
}

export interface ModelSignature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

/** Bytes per element in the binary tensor extension; BYTES elements are length-prefixed instead. */
export const ELEMENT_BYTES: Readonly<Record<Exclude<Datatype, 'BYTES'>, number>> = {
  BOOL: 1,
  UINT8: 1,
  INT8: 1,
  UINT16: 2,
  INT16: 2,
  FP16: 2,
  UINT32: 4,
  INT32: 4,
  FP32: 4,
  UINT64: 8,
  INT64: 8,
  FP64: 8,
};

export function isDatatype(value: unknown): value is Datatype {
  return typeof value === 'string' && (DATATYPES as readonly string[]).includes(value);
}

/**
 * The most dims a request's tensor may have before the model is known (a model's own rank decides after).
 * ONNX sets no limit; 32 is numpy's classic one, and a shape of 20,000 dims is a denial of service.
 */
export const MAX_RANK = 32;

/**
 * The element count `shape` would hold with its zero dims taken as 1: what the size caps check, so that
 * `[0, 2 ** 40]` is refused as the huge tensor it describes, not passed on as an empty one.
 */
export function boundingCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d === 0 ? 1 : d;
  return n;
}

/** The element count of a shape (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A zero-filled buffer of the typed array that holds `datatype`. */
export function allocateData(datatype: Datatype, length: number): TensorData {
  switch (datatype) {
    case 'BOOL':
    case 'UINT8':
      return new Uint8Array(length);
    case 'INT8':
      return new Int8Array(length);
    case 'UINT16':
    case 'FP16':
      return new Uint16Array(length);
    case 'INT16':
      return new Int16Array(length);
    case 'UINT32':
      return new Uint32Array(length);
    case 'INT32':
      return new Int32Array(length);
    case 'UINT64':
      return new BigUint64Array(length);
    case 'INT64':
      return new BigInt64Array(length);
    case 'FP32':
      return new Float32Array(length);
    case 'FP64':
      return new Float64Array(length);
    case 'BYTES':
      return new Array<string>(length).fill('');
  }
}
