/**
 * In-memory fakes of the core's ports, for unit tests of the core only. Integration tests use the real
 * adapters (s3rver, the file system, onnxruntime-node).
 */
import { createHash } from 'node:crypto';
import { ModelNotFoundError } from '../../shared/core/errors';
import type {
  ArtifactCache,
  ArtifactFormat,
  ConfigDocument,
  EngineSessionOptions,
  InferenceEngine,
  LoadedModel,
  ModelStore,
  ServingEvent,
  Telemetry,
} from '../../shared/core/ports';
import type { ModelSignature, Tensor } from '../../shared/core/tensor';

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A repository in memory: `model -> config.json text` and `model/version/format -> bytes`. */
export class FakeStore implements ModelStore {
  readonly location = 'memory://';
  readonly configs = new Map<string, string>();
  readonly artifacts = new Map<string, Uint8Array>();
  readonly calls: string[] = [];
  failNext: Error | undefined;

  /** Adds a version with bytes and writes a matching config.json (merging `extra`). */
  addVersion(model: string, version: string, bytes: Uint8Array, extra: Record<string, unknown> = {}): void {
    const existing = this.configs.get(model);
    const config = existing === undefined ? { versions: {} } : JSON.parse(existing);
    config.versions[version] = { sha256: sha256(bytes), size: bytes.byteLength };
    this.configs.set(model, JSON.stringify({ ...config, ...extra }));
    this.artifacts.set(`${model}/${version}/onnx`, bytes);
  }

  async readConfig(model: string, etag?: string): Promise<ConfigDocument | 'not-modified' | undefined> {
    this.calls.push(`config:${model}`);
    this.#maybeFail();
    const text = this.configs.get(model);
    if (text === undefined) return undefined;
    const current = sha256(Buffer.from(text)).slice(0, 16);
    return etag === current ? 'not-modified' : { text, etag: current };
  }

  async readArtifact(
    model: string,
    version: string,
    format: ArtifactFormat,
    _size: number,
    variant?: string,
  ): Promise<Uint8Array> {
    // A precision variant's file is keyed `model/version/format.variant` (e.g. `m/1/onnx.int8`).
    const key = `${model}/${version}/${format}${variant === undefined ? '' : `.${variant}`}`;
    this.calls.push(`artifact:${key}`);
    this.#maybeFail();
    const bytes = this.artifacts.get(key);
    if (bytes === undefined) throw new ModelNotFoundError(`model '${model}' has no version '${version}'`);
    return bytes;
  }

  async listModels(): Promise<string[]> {
    return [...this.configs.keys()];
  }

  count(prefix: string): number {
    return this.calls.filter((c) => c.startsWith(prefix)).length;
  }

  #maybeFail(): void {
    const error = this.failNext;
    this.failNext = undefined;
    if (error !== undefined) throw error;
  }
}

/** A model that doubles its FP32 input `x` into `y`, shape [batch, 2]. */
export const DOUBLER_SIGNATURE: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 2] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
};

export class FakeModel implements LoadedModel {
  readonly provider = 'cpu';
  released = false;
  runs = 0;
  /** The feeds of every run, in order. */
  readonly feeds: Readonly<Record<string, Tensor>>[] = [];
  failRuns: Error | undefined;
  constructor(
    readonly signature: ModelSignature,
    readonly bytes: Uint8Array,
    private readonly gate?: Promise<void>,
  ) {}

  async run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    if (this.released) throw new Error('run on a released session');
    this.runs += 1;
    this.feeds.push(feeds);
    if (this.failRuns !== undefined) throw this.failRuns;
    await this.gate;
    const x = feeds.x;
    if (x === undefined) throw new Error('missing x');
    const data = Float32Array.from(x.data as Float32Array, (v) => v * 2);
    return { y: { datatype: 'FP32', shape: x.shape, data } };
  }

  async release(): Promise<void> {
    this.released = true;
  }
}

export class FakeEngine implements InferenceEngine {
  readonly loaded: FakeModel[] = [];
  readonly options: EngineSessionOptions[] = [];
  failNext: Error | undefined;
  /** Every run of the models this engine loads rejects with it (e.g. a warm-up the model refuses). */
  failRuns: Error | undefined;
  /** Holds every load until released, to line up concurrent callers. */
  loadGate: Promise<void> | undefined;

  constructor(private readonly signature: ModelSignature = DOUBLER_SIGNATURE) {}

  async load(
    artifact: { bytes: Uint8Array; format: ArtifactFormat },
    options: EngineSessionOptions,
  ): Promise<LoadedModel> {
    this.options.push(options);
    await this.loadGate;
    const error = this.failNext;
    this.failNext = undefined;
    if (error !== undefined) throw error;
    const model = new FakeModel(this.signature, artifact.bytes);
    model.failRuns = this.failRuns;
    this.loaded.push(model);
    return model;
  }
}

export class MemoryArtifactCache implements ArtifactCache {
  readonly files = new Map<string, Uint8Array>();
  async get(sha: string, size: number): Promise<Uint8Array | undefined> {
    const bytes = this.files.get(sha);
    return bytes?.byteLength === size ? bytes : undefined;
  }
  async put(sha: string, bytes: Uint8Array): Promise<void> {
    this.files.set(sha, bytes);
  }
  async delete(sha: string): Promise<void> {
    this.files.delete(sha);
  }
}

export class RecordingTelemetry implements Telemetry {
  readonly events: ServingEvent[] = [];
  emit(event: ServingEvent): void {
    this.events.push(event);
  }
  ofType<T extends ServingEvent['type']>(type: T): Extract<ServingEvent, { type: T }>[] {
    return this.events.filter((e): e is Extract<ServingEvent, { type: T }> => e.type === type);
  }
}

/** A promise with its resolve function, to hold work at a known point. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
