/**
 * The onnxruntime-node adapter of the {@link InferenceEngine} port: sessions from bytes, the model's
 * signature from onnxruntime's metadata, and tensors converted both ways.
 */
import type * as ort from 'onnxruntime-node';
import { InputRejectedError, ModelLoadError } from '../core/errors';
import { printable } from '../core/names';
import type {
  ArtifactFormat,
  EngineSessionOptions,
  GraphOptimizationLevel,
  InferenceEngine,
  LoadedModel,
} from '../core/ports';
import type { Datatype, ModelSignature, Tensor, TensorData, TensorSpec } from '../core/tensor';
import { onnxruntime, prepareOnnxruntime } from './onnxruntime-module';
import { missingProviderLibrary, ortBinaryFolder } from './provider-libraries';

/** onnxruntime's element type of each OIP datatype. */
export const ORT_TYPE_OF: Readonly<Record<Datatype, ort.Tensor.Type>> = {
  BOOL: 'bool',
  UINT8: 'uint8',
  UINT16: 'uint16',
  UINT32: 'uint32',
  UINT64: 'uint64',
  INT8: 'int8',
  INT16: 'int16',
  INT32: 'int32',
  INT64: 'int64',
  FP16: 'float16',
  FP32: 'float32',
  FP64: 'float64',
  BYTES: 'string',
};

const DATATYPE_OF: ReadonlyMap<string, Datatype> = new Map(
  Object.entries(ORT_TYPE_OF).map(([datatype, type]) => [type, datatype as Datatype]),
);

/** A provider that was tried before the one that loaded, and why it failed. */
export interface ProviderFallback {
  readonly provider: string;
  readonly error: Error;
}

/** A {@link LoadedModel} that also says which providers failed before {@link LoadedModel.provider} loaded. */
export interface OrtLoadedModel extends LoadedModel {
  readonly fallbacks: readonly ProviderFallback[];
  /** Bytes of the model file this session keeps alive: the file's size when used in place, else 0. */
  readonly retainedBytes: number;
}

export interface OrtEngineOptions {
  /** Intra-op threads when a model asks for 0, e.g. `os.availableParallelism()`. */
  readonly defaultIntraOpThreads: number;
}

/**
 * Creates onnxruntime-node sessions. One engine serves every model of an instance.
 *
 * @example
 * const engine = new OrtEngine({ defaultIntraOpThreads: os.availableParallelism() });
 * const model = await engine.load({ bytes, format: 'onnx' }, options);
 * const { y } = await model.run({ x: { datatype: 'FP32', shape: [1, 10], data: new Float32Array(10) } });
 */
export class OrtEngine implements InferenceEngine {
  readonly #defaultIntraOpThreads: number;

  constructor(options: OrtEngineOptions) {
    if (!Number.isSafeInteger(options.defaultIntraOpThreads) || options.defaultIntraOpThreads < 1) {
      throw new RangeError(`'defaultIntraOpThreads' must be a positive integer`);
    }
    this.#defaultIntraOpThreads = options.defaultIntraOpThreads;
  }

  /**
   * Creates a session with the first of `options.executionProviders` that loads. Throws
   * {@link ModelLoadError} when none does, or when the model has an input or output that is not a tensor.
   * With format `ort` and `useModelBytesDirectly`, onnxruntime reads the model from `bytes` for as long as
   * the session lives: the model keeps a reference, and the caller must not modify them.
   */
  async load(
    artifact: { bytes: Uint8Array; format: ArtifactFormat },
    options: EngineSessionOptions,
  ): Promise<OrtLoadedModel> {
    const providers = options.executionProviders;
    if (providers.length === 0) throw new ModelLoadError('no execution provider configured');
    const base = ortSessionOptions(artifact.format, options, this.#defaultIntraOpThreads);
    const fallbacks: ProviderFallback[] = [];
    for (const provider of providers) {
      let session: ort.InferenceSession;
      try {
        // One provider per attempt: onnxruntime-common would otherwise drop unavailable ones with a
        // console.warn, and onnxruntime keeps CPU behind any provider for the nodes it cannot run.
        session = await onnxruntime().InferenceSession.create(artifact.bytes, {
          ...base,
          executionProviders: [provider],
        });
      } catch (error) {
        fallbacks.push({ provider, error: toError(error) });
        continue;
      }
      let signature: ModelSignature;
      try {
        signature = readSignature(session);
      } catch (error) {
        await session.release();
        throw error;
      }
      // Only a session that reads its weights from the fetched bytes needs them kept; an `.onnx` session
      // holds its own copy, so dropping ours frees as much memory as the file is large.
      const zeroCopy = artifact.format === 'ort' && options.useModelBytesDirectly;
      return new OrtModel(session, signature, provider, fallbacks, zeroCopy ? artifact.bytes : undefined);
    }
    const reasons = fallbacks.map((f) => `${f.provider}: ${withoutNativeDetail(f.error.message)}`).join('; ');
    throw new ModelLoadError(`onnxruntime could not create the session (${reasons})`, {
      cause: fallbacks.at(-1)?.error,
    });
  }

  /** Loads onnxruntime-node on the next turn of the event loop, while the caller's download runs. */
  prepare(): Promise<void> {
    return prepareOnnxruntime();
  }

  /**
   * Whether `provider` can create a session here, found by creating one for a 69-byte Identity model,
   * once per process per provider. `listSupportedBackends()` cannot tell: it lists `cuda` on a host
   * without the CUDA libraries (`bundled: false`), and only registration says whether they load (1-2 ms
   * when they do not).
   */
  providerUnavailable(provider: string): Promise<Error | undefined> {
    return probeProvider(provider);
  }
}

/** `x [1] float -> Identity -> y`, opset 17: the smallest model any provider can run. */
const PROBE_MODEL = Buffer.from(
  'CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAR',
  'base64',
);

const probes = new Map<string, Promise<Error | undefined>>();

/** See {@link OrtEngine.providerUnavailable}; shared by every engine of the process. */
export function probeProvider(provider: string): Promise<Error | undefined> {
  let probe = probes.get(provider);
  const missing = probe === undefined ? missingProviderLibrary(provider, ortBinaryFolder()) : undefined;
  if (missing !== undefined) {
    // Known without asking onnxruntime, which would print its own error line about the library.
    probe = Promise.resolve(
      new Error(
        `execution provider '${provider}' is not available on this host: onnxruntime-node has no ${missing} here (a CPU-only install; ONNXRUNTIME_NODE_INSTALL=cuda12 installs the GPU providers)`,
      ),
    );
    probes.set(provider, probe);
  }
  if (probe === undefined) {
    probe = (async () =>
      onnxruntime().InferenceSession.create(PROBE_MODEL, { executionProviders: [provider] }))().then(
      async (session) => {
        await session.release();
        return undefined;
      },
      (error: unknown) =>
        new Error(
          `execution provider '${provider}' is not available on this host: ${withoutNativeDetail(toError(error).message)}`,
        ),
    );
    probes.set(provider, probe);
  }
  return probe;
}

/**
 * onnxruntime session options for serving options: the zero-copy config entries for ORT files used in
 * place, prepacking, threads (0: `defaultIntraOpThreads`) and the optimisation level. Shared with the model
 * tool, which measures sessions exactly as they will be served.
 */
export function ortSessionOptions(
  format: ArtifactFormat,
  options: EngineSessionOptions,
  defaultIntraOpThreads: number,
): ort.InferenceSession.SessionOptions {
  const session: Record<string, string> = {};
  if (format === 'ort' && options.useModelBytesDirectly) {
    session.use_ort_model_bytes_directly = '1';
    session.use_ort_model_bytes_for_initializers = '1';
    // Prepacking copies the weights into new buffers, which would undo the zero-copy load.
    if (options.disablePrepacking !== false) session.disable_prepacking = '1';
  } else if (options.disablePrepacking) {
    session.disable_prepacking = '1';
  }
  return {
    executionMode: 'sequential',
    graphOptimizationLevel: ORT_OPTIMIZATION_LEVEL[options.graphOptimizationLevel],
    intraOpNumThreads: options.intraOpThreads === 0 ? defaultIntraOpThreads : options.intraOpThreads,
    interOpNumThreads: options.interOpThreads,
    // The Node binding flattens nested keys with '.', e.g. `session.disable_prepacking`.
    extra: { session },
  };
}

const ORT_OPTIMIZATION_LEVEL: Readonly<
  Record<GraphOptimizationLevel, NonNullable<ort.InferenceSession.SessionOptions['graphOptimizationLevel']>>
> = { disabled: 'disabled', basic: 'basic', extended: 'extended', all: 'all' };

class OrtModel implements OrtLoadedModel {
  readonly signature: ModelSignature;
  readonly provider: string;
  readonly fallbacks: readonly ProviderFallback[];
  readonly #session: ort.InferenceSession;
  readonly #outputNames: readonly string[];
  // With `use_ort_model_bytes_directly` onnxruntime reads the model and its weights from these bytes for
  // the life of the session: holding them here keeps the garbage collector off them.
  #bytes: Uint8Array | undefined;
  #released: Promise<void> | undefined;

  constructor(
    session: ort.InferenceSession,
    signature: ModelSignature,
    provider: string,
    fallbacks: readonly ProviderFallback[],
    bytes: Uint8Array | undefined,
  ) {
    this.#session = session;
    this.signature = signature;
    this.provider = provider;
    this.fallbacks = fallbacks;
    this.#bytes = bytes;
    this.#outputNames = signature.outputs.map((o) => o.name);
  }

  async run(
    feeds: Readonly<Record<string, Tensor>>,
    outputs?: readonly string[],
  ): Promise<Record<string, Tensor>> {
    if (this.#released !== undefined) throw new Error('the session was released');
    const fetches = outputs ?? this.#outputNames;
    // Null prototypes: a tensor named like an Object.prototype member must stay a plain entry.
    const ortFeeds: Record<string, ort.Tensor> = Object.create(null);
    let results: ort.InferenceSession.ReturnType;
    try {
      for (const [name, tensor] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(tensor);
      results = await this.#session.run(ortFeeds, fetches);
    } catch (error) {
      // What onnxruntime rejects at run time is the request's data (a shape or value the graph refuses).
      // Its text names C++ files and functions: clients get our wording, logs get the original (cause).
      throw new InputRejectedError(runErrorMessage(toError(error).message), { cause: error });
    } finally {
      for (const tensor of Object.values(ortFeeds)) tensor.dispose();
    }
    const converted: Record<string, Tensor> = Object.create(null);
    for (const name of fetches) {
      const value = results[name];
      if (value === undefined) continue;
      converted[name] = fromOrtTensor(name, value as ort.Tensor);
      value.dispose();
    }
    return converted;
  }

  get retainedBytes(): number {
    return this.#bytes?.byteLength ?? 0;
  }

  release(): Promise<void> {
    this.#released ??= this.#session.release().finally(() => {
      this.#bytes = undefined;
    });
    return this.#released;
  }
}

function readSignature(session: ort.InferenceSession): ModelSignature {
  return {
    inputs: session.inputMetadata.map((m) => toTensorSpec(m, 'input')),
    outputs: session.outputMetadata.map((m) => toTensorSpec(m, 'output')),
  };
}

function toTensorSpec(metadata: ort.InferenceSession.ValueMetadata, kind: 'input' | 'output'): TensorSpec {
  if (!metadata.isTensor) {
    throw new ModelLoadError(
      `${kind} '${metadata.name}' is not a tensor (sequences and maps are not supported)`,
    );
  }
  const datatype = DATATYPE_OF.get(metadata.type);
  if (datatype === undefined) {
    throw new ModelLoadError(
      `${kind} '${metadata.name}' has element type '${metadata.type}', which is not supported`,
    );
  }
  const shape = metadata.shape.map((d) => (typeof d === 'number' ? d : -1));
  const dynamic = metadata.shape.some((d) => typeof d === 'string');
  if (!dynamic) return { name: metadata.name, datatype, shape };
  // An unnamed dynamic dim comes back as ''.
  const dims = metadata.shape.map((d) => (d === '' ? -1 : d));
  return { name: metadata.name, datatype, shape, dims };
}

function toOrtTensor(tensor: Tensor): ort.Tensor {
  const type = ORT_TYPE_OF[tensor.datatype];
  // The union is checked by onnxruntime at construction (type against typed array, length against shape).
  const { Tensor: OrtTensor } = onnxruntime();
  return new OrtTensor(type, tensor.data as Exclude<TensorData, BigUint64Array>, tensor.shape);
}

function fromOrtTensor(name: string, value: ort.Tensor): Tensor {
  const datatype = DATATYPE_OF.get(value.type);
  if (datatype === undefined) {
    throw new Error(`output '${name}' has element type '${value.type}', which is not supported`);
  }
  let data = value.data as TensorData;
  if (datatype === 'FP16' && !(data instanceof Uint16Array)) {
    // Where a global Float16Array exists onnxruntime returns one; our FP16 tensors carry the half bits.
    const view = data as unknown as ArrayBufferView & { length: number };
    data = new Uint16Array(view.buffer, view.byteOffset, view.length);
  }
  return { datatype, shape: [...value.dims], data };
}

const NODE_FAILURE =
  /^Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message: ([\s\S]*)$/;
// `/onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 `
const SOURCE_LOCATION = /(?:[A-Za-z]:)?[\w./\\-]*\.(?:cc|cpp|cxx|c|h|hpp|cu|cuh|inc):\d+\s*/g;
// `void onnxruntime::BroadcastIterator::Append(ptrdiff_t, ptrdiff_t) `
const CXX_SIGNATURE = /(?:[\w<>,&*]+\s+)?[\w~]+(?:::[\w~]+)+(?:<[^()]*>)?\([^()]*\)(?:\s*const)?\s*/g;
// `input_shape_size == requested_shape_size was false. `: the failed C++ check itself
const FAILED_CHECK = /[^.]*?\bwas false\.\s*/g;
const NATIVE_DETAIL = /::|\.(?:cc|cpp|cxx|h|hpp|cu|cuh)\b|onnxruntime_src|\/onnxruntime\//;

/**
 * onnxruntime's message without its native detail (source paths and lines, C++ signatures, failed
 * checks), on one line and at most 300 characters; `undefined` when nothing safe is left.
 */
export function withoutNativeDetail(message: string): string {
  const text = message
    .replace(SOURCE_LOCATION, '')
    .replace(CXX_SIGNATURE, '')
    .replace(FAILED_CHECK, '')
    .replace(/\s+/g, ' ')
    .trim();
  if (text === '' || NATIVE_DETAIL.test(text)) return 'onnxruntime refused it (details are in the logs)';
  return printable300(text);
}

/** The client's message for a run onnxruntime refused: the node and op that refused, and why. */
export function runErrorMessage(message: string): string {
  const node = NODE_FAILURE.exec(message);
  if (node === null) return `the model cannot run on these inputs: ${withoutNativeDetail(message)}`;
  const [, op = '', name = '', status = ''] = node;
  return `the model cannot run on these inputs: its ${printable(op)} node '${printable(name)}' refused them: ${withoutNativeDetail(status)}`;
}

function printable300(text: string): string {
  const cleaned = text.replace(/[^\x20-\x7e]/g, '?');
  return cleaned.length > 300 ? `${cleaned.slice(0, 297)}...` : cleaned;
}

function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  // An Error of another realm (a test runner's, a worker's) fails instanceof but has its message.
  const message = (value as { message?: unknown } | null)?.message;
  return new Error(typeof message === 'string' ? message : String(value), { cause: value });
}
