/**
 * The messages between {@link WorkerOrtEngine} and its worker (`ort-worker.ts`), and the two things both
 * sides do to them: tensors packed for transfer, errors flattened to plain objects and rebuilt.
 */
import { InputRejectedError, InvalidInputError, ModelLoadError } from '../core/errors';
import type { ArtifactFormat, EngineSessionOptions } from '../core/ports';
import type { ModelSignature, Tensor, TensorData } from '../core/tensor';

/** An error as it crosses the thread boundary; `kind` picks the class it is rebuilt as. */
export interface WireError {
  readonly kind: 'input-rejected' | 'invalid-input' | 'model-load' | 'other';
  readonly name: string;
  readonly message: string;
  readonly cause?: WireError;
}

export type WorkerRequest =
  | {
      readonly id: number;
      readonly op: 'load';
      readonly bytes: Uint8Array;
      readonly format: ArtifactFormat;
      readonly options: EngineSessionOptions;
      readonly defaultIntraOpThreads: number;
    }
  | {
      readonly id: number;
      readonly op: 'run';
      readonly feeds: Record<string, Tensor>;
      readonly outputs: readonly string[] | undefined;
    }
  | { readonly id: number; readonly op: 'release' };

export type WorkerReply =
  | {
      readonly id: number;
      readonly type: 'loaded';
      readonly signature: ModelSignature;
      readonly provider: string;
      readonly fallbacks: readonly { readonly provider: string; readonly error: WireError }[];
    }
  | { readonly id: number; readonly type: 'outputs'; readonly outputs: Record<string, Tensor> }
  | { readonly id: number; readonly type: 'released' }
  | { readonly id: number; readonly type: 'failed'; readonly error: WireError };

type NumericData = Exclude<TensorData, string[]>;

// %TypedArray%.prototype.slice always copies; a Node Buffer's own `slice` returns a view instead.
const copyTypedArray = Object.getPrototypeOf(Uint8Array.prototype).slice as (
  this: NumericData,
) => NumericData;

/**
 * Tensors ready for `postMessage`, and the buffers to transfer. A typed array that is the whole of its
 * `ArrayBuffer` is transferred as it is (the sender gives it up); a view into a larger buffer (a binary
 * request body, a pooled Buffer) or into a SharedArrayBuffer is copied first, because structured clone
 * would copy the whole buffer behind it and transferring it would take it from its other users. BYTES
 * (string arrays) are cloned.
 */
export function packTensors(tensors: Readonly<Record<string, Tensor>>): {
  tensors: Record<string, Tensor>;
  transfer: ArrayBuffer[];
} {
  const packed: Record<string, Tensor> = Object.create(null);
  const transfer = new Set<ArrayBuffer>();
  for (const [name, tensor] of Object.entries(tensors)) {
    let data = tensor.data;
    if (!Array.isArray(data)) {
      const view = data as NumericData;
      const whole =
        view.buffer instanceof ArrayBuffer &&
        view.byteOffset === 0 &&
        view.byteLength === view.buffer.byteLength &&
        !transfer.has(view.buffer);
      const owned = whole ? view : copyTypedArray.call(view);
      transfer.add(owned.buffer as ArrayBuffer);
      data = owned;
    }
    packed[name] = { datatype: tensor.datatype, shape: tensor.shape, data };
  }
  return { tensors: packed, transfer: [...transfer] };
}

/** Flattens an error (and its causes) into a plain object that survives structured clone. */
export function toWireError(error: unknown, depth = 0): WireError {
  const e = error instanceof Error ? error : new Error(String(error));
  // Classes are told apart here, where `instanceof` works: bundlers may rename them, so no `name` tests.
  const kind =
    e instanceof InputRejectedError
      ? 'input-rejected'
      : e instanceof InvalidInputError
        ? 'invalid-input'
        : e instanceof ModelLoadError
          ? 'model-load'
          : 'other';
  const wire = { kind, name: e.name, message: e.message } as const;
  return e.cause === undefined || depth >= 4 ? wire : { ...wire, cause: toWireError(e.cause, depth + 1) };
}

/** Rebuilds a {@link WireError} as the class it was thrown as. */
export function fromWireError(wire: WireError): Error {
  const options = wire.cause === undefined ? undefined : { cause: fromWireError(wire.cause) };
  if (wire.kind === 'input-rejected') return new InputRejectedError(wire.message, options);
  if (wire.kind === 'invalid-input') return new InvalidInputError(wire.message, options);
  if (wire.kind === 'model-load') return new ModelLoadError(wire.message, options);
  const error = new Error(wire.message, options);
  error.name = wire.name;
  return error;
}
