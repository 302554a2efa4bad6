/**
 * Tensor data in the OIP binary tensor extension: little-endian elements back to back, BOOL one byte
 * (0 or 1), FP16 raw half bits, BYTES each element a 4-byte little-endian length and its UTF-8 bytes.
 */
import { InvalidInputError } from '../errors';
import { type Datatype, ELEMENT_BYTES, type TensorData } from '../tensor';

// Typed arrays use the host's byte order; every Lambda and Cloud Run machine is little-endian.
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/**
 * The data of one tensor from its bytes in the body. Fixed-size datatypes get a typed-array view on
 * `bytes`' buffer when the offset is aligned for the element size (no copy: keep the body alive and
 * unchanged while the tensor is used) and a copy otherwise.
 *
 * @param where - what the messages name, e.g. `input 'x'`
 * @param count - the element count of the declared shape
 * @param shapeText - the declared shape as text, for messages
 * @throws {@link InvalidInputError} when the byte count does not fit the shape, a BOOL byte is not 0 or 1,
 *   or BYTES elements are truncated, too few, too many or not UTF-8
 */
export function readBinaryTensor(
  where: string,
  datatype: Datatype,
  count: number,
  shapeText: string,
  bytes: Uint8Array,
): TensorData {
  if (datatype === 'BYTES') return readStrings(where, count, shapeText, bytes);
  if (!LITTLE_ENDIAN_HOST) throw new Error('the binary tensor extension needs a little-endian host');
  const size = ELEMENT_BYTES[datatype];
  if (bytes.byteLength !== count * size) {
    throw new InvalidInputError(
      `${where}: binary_data_size is ${bytes.byteLength} but shape ${shapeText} of ${datatype} takes ${count * size} bytes`,
    );
  }
  let buffer = bytes.buffer;
  let offset = bytes.byteOffset;
  if (offset % size !== 0) {
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    buffer = copy.buffer;
    offset = 0;
  }
  const data = view(datatype, buffer, offset, count);
  if (datatype === 'BOOL') {
    const bools = data as Uint8Array;
    for (let i = 0; i < bools.length; i++) {
      if ((bools[i] as number) > 1) {
        throw new InvalidInputError(`${where}: BOOL element ${i} is the byte ${bools[i]}, not 0 or 1`);
      }
    }
  }
  return data;
}

/**
 * The bytes of one tensor's data. Fixed-size datatypes give a view on the data's buffer (no copy).
 */
export function writeBinaryTensor(datatype: Datatype, data: TensorData): Uint8Array {
  if (Array.isArray(data)) return writeStrings(data);
  if (!LITTLE_ENDIAN_HOST) throw new Error('the binary tensor extension needs a little-endian host');
  const expected = ELEMENT_BYTES[datatype as Exclude<Datatype, 'BYTES'>];
  if (data.BYTES_PER_ELEMENT !== expected) {
    throw new Error(`${datatype} data must have ${expected}-byte elements, got ${data.BYTES_PER_ELEMENT}`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Joins byte arrays into one. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.byteLength;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

function readStrings(where: string, count: number, shapeText: string, bytes: Uint8Array): string[] {
  const out: string[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  while (p < bytes.byteLength) {
    if (out.length === count) {
      throw new InvalidInputError(
        `${where}: binary BYTES data holds more than the ${count} elements of shape ${shapeText}`,
      );
    }
    if (p + 4 > bytes.byteLength) {
      throw new InvalidInputError(
        `${where}: BYTES element ${out.length} has a truncated 4-byte length prefix`,
      );
    }
    const length = view.getUint32(p, true);
    p += 4;
    if (length > bytes.byteLength - p) {
      throw new InvalidInputError(
        `${where}: BYTES element ${out.length} declares ${length} bytes but ${bytes.byteLength - p} remain`,
      );
    }
    try {
      out.push(utf8Decoder.decode(bytes.subarray(p, p + length)));
    } catch (error) {
      throw new InvalidInputError(`${where}: BYTES element ${out.length} is not valid UTF-8`, {
        cause: error,
      });
    }
    p += length;
  }
  if (out.length !== count) {
    throw new InvalidInputError(
      `${where}: binary BYTES data holds ${out.length} elements but shape ${shapeText} holds ${count}`,
    );
  }
  return out;
}

function writeStrings(strings: readonly string[]): Uint8Array {
  const encoded = strings.map((s) => utf8Encoder.encode(s));
  let total = 0;
  for (const e of encoded) total += 4 + e.byteLength;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let p = 0;
  for (const e of encoded) {
    dv.setUint32(p, e.byteLength, true);
    out.set(e, p + 4);
    p += 4 + e.byteLength;
  }
  return out;
}

function view(datatype: Datatype, buffer: ArrayBufferLike, offset: number, length: number): TensorData {
  switch (datatype) {
    case 'BOOL':
    case 'UINT8':
      return new Uint8Array(buffer, offset, length);
    case 'INT8':
      return new Int8Array(buffer, offset, length);
    case 'UINT16':
    case 'FP16':
      return new Uint16Array(buffer, offset, length);
    case 'INT16':
      return new Int16Array(buffer, offset, length);
    case 'UINT32':
      return new Uint32Array(buffer, offset, length);
    case 'INT32':
      return new Int32Array(buffer, offset, length);
    case 'UINT64':
      return new BigUint64Array(buffer, offset, length);
    case 'INT64':
      return new BigInt64Array(buffer, offset, length);
    case 'FP32':
      return new Float32Array(buffer, offset, length);
    case 'FP64':
      return new Float64Array(buffer, offset, length);
    case 'BYTES':
      throw new Error('BYTES data has no fixed-size view');
  }
}
