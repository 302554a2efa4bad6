/**
 * Open Inference Protocol (KServe v2) requests and responses as the core sees them: decoded, with each
 * tensor's data in the typed array of tensor.ts. Transport details (`binary_data_size`,
 * `binary_data_output`, `binary_data`) are consumed by the codec and do not appear in `parameters`.
 */
import type { Datatype, TensorData } from '../tensor';

/** One input tensor of a request; structurally a `Tensor`, so it can be fed to the engine as it is. */
export interface InferInput {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: TensorData;
  readonly parameters?: Readonly<Record<string, unknown>>;
}

/** An output the client asked for by name; `binaryData` is its `parameters.binary_data`, when given. */
export interface RequestedOutput {
  readonly name: string;
  readonly binaryData?: boolean;
}

export interface InferRequest {
  readonly id?: string;
  readonly parameters?: Readonly<Record<string, unknown>>;
  readonly inputs: InferInput[];
  /** Absent: every output of the model, in the model's order. */
  readonly outputs?: RequestedOutput[];
  /** The request's `parameters.binary_data_output`: outputs not named in `outputs` go binary when true. */
  readonly binaryOutputDefault: boolean;
}

/** One output tensor of a response. */
export interface InferOutput {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

export interface InferResponse {
  readonly modelName: string;
  readonly modelVersion: string;
  readonly id?: string;
  readonly parameters?: Readonly<Record<string, unknown>>;
  readonly outputs: readonly InferOutput[];
}

/** Caps checked on the declared shapes, before any tensor is allocated. */
export interface CodecLimits {
  /** The most elements one tensor may hold. */
  readonly maxTensorElements: number;
  /** The most elements all the tensors of one message may hold together; unlimited when absent. */
  readonly maxTotalElements?: number;
}

/** A body and the headers that describe it (lower-case names). */
export interface EncodedMessage {
  readonly body: Uint8Array;
  readonly headers: Record<string, string>;
}

/** The header of the binary tensor extension: the byte length of the JSON part of the body. */
export const INFERENCE_HEADER_CONTENT_LENGTH = 'inference-header-content-length';
