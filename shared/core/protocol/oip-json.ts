/**
 * Tensor data in JSON: checking and converting JSON values to typed arrays, and writing typed arrays as
 * JSON text. Shared by the OIP codec and the plain predict endpoint.
 *
 * JSON has no literal for NaN or ±Infinity. Floating-point data (FP16, FP32, FP64) writes them as the
 * strings `"NaN"`, `"Infinity"` and `"-Infinity"` and accepts those strings back; a number that is not
 * finite after parsing (`1e999`) or that overflows the datatype is refused. Binary data is always exact.
 */
import { InvalidInputError } from '../errors';
import { fromHalfArray, HALF_MAX, toHalfBits } from '../fp16';
import { printable } from '../names';
import { forEachRow } from '../nested';
import { allocateData, type Datatype, elementCount, type TensorData } from '../tensor';

const INTEGER_RANGE = {
  INT8: [-128, 127],
  UINT8: [0, 255],
  INT16: [-32768, 32767],
  UINT16: [0, 65535],
  INT32: [-2147483648, 2147483647],
  UINT32: [0, 4294967295],
} as const;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const DIGITS = /^-?[0-9]{1,20}$/;

// A Map, not an object literal: a client's string must never reach Object.prototype ("constructor",
// "__proto__", "toString" would otherwise be found there and decode as NaN).
const NON_FINITE: ReadonlyMap<string, number> = new Map([
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-Infinity', Number.NEGATIVE_INFINITY],
]);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses a UTF-8 JSON body.
 *
 * @param what - what the message names, e.g. `request body`
 * @throws {@link InvalidInputError} when the bytes are not UTF-8 or not JSON
 */
export function parseJsonBytes(bytes: Uint8Array, what: string): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (error) {
    throw new InvalidInputError(`${what} is not valid UTF-8`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? `: ${printable(error.message)}` : '';
    throw new InvalidInputError(`${what} is not valid JSON${reason}`, { cause: error });
  }
}

/** A short, single-line rendering of a JSON value for an error message. */
export function describeJsonValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return `"${printable(value)}"`;
    case 'number':
    case 'boolean':
      return String(value);
    case 'undefined':
      return 'nothing';
    default:
      return 'an object';
  }
}

/**
 * Converts flat, row-major JSON values to the typed array of `datatype` (tensor.ts layout), checking each.
 *
 * Rules: BOOL takes `true`/`false`; BYTES takes strings; 8- to 32-bit integers take integral numbers in
 * range; INT64/UINT64 take safe integers (|n| <= 2^53 - 1) or strings of decimal digits (any value of the
 * type); FP16/FP32/FP64 take finite numbers that do not overflow the type, or `"NaN"`, `"Infinity"`,
 * `"-Infinity"`.
 *
 * @param where - what the messages name, e.g. `input 'x'`
 * @throws {@link InvalidInputError} naming the element index, its value and the rule
 * @example
 * jsonToTensorData("input 'x'", 'INT64', [1, '9007199254740993']); // BigInt64Array [1n, 9007199254740993n]
 */
export function jsonToTensorData(where: string, datatype: Datatype, values: readonly unknown[]): TensorData {
  const data = allocateData(datatype, values.length);
  writeJsonValues(where, datatype, values, data, 0);
  return data;
}

/**
 * Converts JSON values nested exactly as `shape` says (`[[1, 2], [3, 4]]` for `[2, 2]`) to the typed array
 * of `datatype`, by the rules of {@link jsonToTensorData}, row by row straight into the result: no flat
 * copy of the values is made, so nested data costs about what flat data costs. Element indices in
 * messages are row-major, as for flat data. Bound the rank of `shape` before calling (the walk recurses
 * once per dim).
 *
 * @throws {@link InvalidInputError} for nesting that does not match `shape` (see {@link forEachRow}) and
 *   for values the datatype does not take
 */
export function nestedJsonToTensorData(
  where: string,
  datatype: Datatype,
  value: unknown,
  shape: readonly number[],
): TensorData {
  const data = allocateData(datatype, elementCount(shape));
  forEachRow(value, shape, where, (row, offset) => writeJsonValues(where, datatype, row, data, offset));
  return data;
}

function writeJsonValues(
  where: string,
  datatype: Datatype,
  values: readonly unknown[],
  data: TensorData,
  offset: number,
): void {
  const n = values.length;
  switch (datatype) {
    case 'BOOL': {
      const out = data as Uint8Array;
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (v === true) out[offset + i] = 1;
        else if (v !== false) throw bad(where, offset + i, v, 'is not true or false for BOOL');
      }
      return;
    }
    case 'BYTES': {
      const out = data as string[];
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'string') throw bad(where, offset + i, v, 'is not a string for BYTES');
        out[offset + i] = v;
      }
      return;
    }
    case 'FP64': {
      const out = data as Float64Array;
      for (let i = 0; i < n; i++) out[offset + i] = readFloat(where, offset + i, values[i]);
      return;
    }
    case 'FP32': {
      const out = data as Float32Array;
      for (let i = 0; i < n; i++) {
        const v = readFloat(where, offset + i, values[i]);
        const f = Math.fround(v);
        if (f - f !== 0 && v - v === 0)
          throw bad(where, offset + i, v, 'overflows FP32 (max 3.4028234663852886e+38)');
        out[offset + i] = f;
      }
      return;
    }
    case 'FP16': {
      const out = data as Uint16Array;
      for (let i = 0; i < n; i++) {
        const v = readFloat(where, offset + i, values[i]);
        const bits = toHalfBits(v);
        if ((bits & 0x7c00) === 0x7c00 && v - v === 0) {
          throw bad(where, offset + i, v, `overflows FP16 (max ${HALF_MAX})`);
        }
        out[offset + i] = bits;
      }
      return;
    }
    case 'INT64':
    case 'UINT64': {
      const out = data as BigInt64Array | BigUint64Array;
      const min = datatype === 'INT64' ? INT64_MIN : 0n;
      const max = datatype === 'INT64' ? INT64_MAX : UINT64_MAX;
      for (let i = 0; i < n; i++) {
        const v = values[i];
        let big: bigint;
        if (typeof v === 'number') {
          checkInteger(where, offset + i, v, datatype);
          if (!Number.isSafeInteger(v)) {
            throw bad(
              where,
              offset + i,
              v,
              'is beyond 2^53 and may have lost precision: send it as a string of digits',
            );
          }
          big = BigInt(v);
        } else if (typeof v === 'string' && DIGITS.test(v)) {
          big = BigInt(v);
        } else {
          throw bad(where, offset + i, v, `is not an integer for ${datatype}`);
        }
        if (big < min || big > max) {
          throw bad(where, offset + i, v, `is out of range for ${datatype} (${min} to ${max})`);
        }
        out[offset + i] = big;
      }
      return;
    }
    default: {
      const [min, max] = INTEGER_RANGE[datatype];
      const out = data as Exclude<TensorData, string[] | BigInt64Array | BigUint64Array>;
      for (let i = 0; i < n; i++) {
        const v = values[i];
        checkInteger(where, offset + i, v, datatype);
        if ((v as number) < min || (v as number) > max) {
          throw bad(where, offset + i, v, `is out of range for ${datatype} (${min} to ${max})`);
        }
        out[offset + i] = v as number;
      }
      return;
    }
  }
}

/**
 * JSON text (an array) of the flat elements `start` to `end` of `data`. BOOL becomes `true`/`false`, FP16
 * its values, non-finite floats the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, and INT64/UINT64 exact
 * decimal literals (a JavaScript client's `JSON.parse` rounds those beyond 2^53; binary data does not).
 * Floats are written as the shortest text of their double value, so FP32 `0.1` reads `0.10000000149011612`
 * and parses back to the same float32.
 */
export function tensorDataToJson(datatype: Datatype, data: TensorData, start = 0, end = data.length): string {
  if (Array.isArray(data)) {
    return JSON.stringify(start === 0 && end === data.length ? data : data.slice(start, end));
  }
  const part = (data as Uint8Array).subarray(start, end) as Exclude<TensorData, string[]>;
  switch (datatype) {
    case 'INT64':
    case 'UINT64':
      return `[${part.join(',')}]`;
    case 'BOOL':
      return JSON.stringify(Array.from(part as Uint8Array, (v) => v !== 0));
    case 'FP16':
      return floatsToJson(fromHalfArray(part as Uint16Array));
    case 'FP32':
    case 'FP64':
      return floatsToJson(part as Float32Array | Float64Array);
    default:
      // JSON.stringify of a plain array beats typed-array join() about 2x on a million elements (Node 20).
      return JSON.stringify(Array.from(part as ArrayLike<number>));
  }
}

function floatsToJson(data: Float32Array | Float64Array): string {
  let finite = true;
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (v - v !== 0) {
      finite = false;
      break;
    }
  }
  if (finite) return JSON.stringify(Array.from(data));
  return JSON.stringify(Array.from(data, (v) => (v - v === 0 ? v : String(v))));
}

function readFloat(where: string, index: number, v: unknown): number {
  if (typeof v === 'number') {
    // JSON.parse turns 1e999 into Infinity: an overflow, not a value the client meant.
    if (v - v !== 0) throw bad(where, index, v, 'is not a finite number');
    return v;
  }
  if (typeof v === 'string') {
    const special = NON_FINITE.get(v);
    if (special !== undefined) return special;
  }
  throw bad(where, index, v, 'is not a finite number');
}

function checkInteger(where: string, index: number, v: unknown, datatype: Datatype): void {
  if (typeof v !== 'number' || v - v !== 0) throw bad(where, index, v, 'is not a finite number');
  if (!Number.isInteger(v)) throw bad(where, index, v, `is not an integer for ${datatype}`);
}

function bad(where: string, index: number, value: unknown, rule: string): InvalidInputError {
  return new InvalidInputError(`${where}: element ${index} (${describeJsonValue(value)}) ${rule}`);
}
