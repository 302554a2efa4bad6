/**
 * An {@link InferenceEngine} that runs each onnxruntime session in its own worker thread. onnxruntime-node
 * runs `session.run` synchronously on the calling thread (its backend only defers the call with
 * `setImmediate`), so with {@link OrtEngine} the server cannot read, parse or validate requests while a
 * batch runs; here the run blocks the worker and the event loop stays free. The HTTP server's default
 * (`ONNX_SERVE_ENGINE_THREAD=worker`); Lambda serves one request at a time, where a worker only adds copies.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ModelLoadError } from '../core/errors';
import type {
  ArtifactFormat,
  EngineSessionOptions,
  InferenceEngine,
  LoadedModel,
  ProviderFailure,
} from '../core/ports';
import type { ModelSignature, Tensor } from '../core/tensor';
import { probeProvider } from './ort-engine';
import { fromWireError, packTensors, type WorkerReply, type WorkerRequest } from './ort-worker-protocol';

/** The worker's bundle beside the bundle that holds this module (`dist/server/ort-worker.js`). */
export const ORT_WORKER_FILE = 'ort-worker.js';

export interface WorkerOrtEngineOptions {
  /** Intra-op threads when a model asks for 0, e.g. `os.availableParallelism()`. */
  readonly defaultIntraOpThreads: number;
  /**
   * The worker's bundle (`node tools/build.mjs server` writes it). Default: {@link ORT_WORKER_FILE} in
   * this module's directory, which is right once bundled; tests from TypeScript build it and pass it here.
   */
  readonly workerFile?: string;
  /** Starts a worker on `file` (default `new Worker(file)`); tests inject one to make it crash. */
  readonly createWorker?: (file: string) => Worker;
}

/**
 * Creates one worker thread per session and runs the session there, with the same session options,
 * conversions and error classes as {@link OrtEngine} (the worker uses one).
 *
 * - `load` copies the model bytes to the worker (the caller keeps its own; a zero-copy ORT session reads
 *   the worker's copy, which lives as long as the session).
 * - `run` transfers each input typed array that is the whole of its `ArrayBuffer`: the caller gives it up.
 *   Views into a larger buffer (a binary request body) are copied. Outputs come back transferred.
 * - A worker that exits unexpectedly fails its pending and later runs with {@link ModelLoadError}; the
 *   next `load` starts a new worker.
 * - A worker is only ever ended idle (`release` waits for the session's release first): ending one while
 *   onnxruntime runs inside it can abort the whole process, since the binding then throws into a torn-down
 *   environment (seen in tests with `Worker.terminate()` during a run).
 *
 * @example
 * const engine = new WorkerOrtEngine({ defaultIntraOpThreads: os.availableParallelism() });
 * const model = await engine.load({ bytes, format: 'onnx' }, options);
 * const { y } = await model.run({ x: { datatype: 'FP32', shape: [1, 10], data: new Float32Array(10) } });
 * await model.release(); // ends the worker
 */
export class WorkerOrtEngine implements InferenceEngine {
  readonly #defaultIntraOpThreads: number;
  readonly #workerFile: string;
  readonly #createWorker: (file: string) => Worker;

  constructor(options: WorkerOrtEngineOptions) {
    if (!Number.isSafeInteger(options.defaultIntraOpThreads) || options.defaultIntraOpThreads < 1) {
      throw new RangeError(`'defaultIntraOpThreads' must be a positive integer`);
    }
    this.#defaultIntraOpThreads = options.defaultIntraOpThreads;
    this.#workerFile = options.workerFile ?? join(__dirname, ORT_WORKER_FILE);
    this.#createWorker = options.createWorker ?? ((file) => new Worker(file));
  }

  /** As {@link OrtEngine.providerUnavailable}, probed on this thread: the workers load the same library. */
  providerUnavailable(provider: string): Promise<Error | undefined> {
    return probeProvider(provider);
  }

  async load(
    artifact: { bytes: Uint8Array; format: ArtifactFormat },
    options: EngineSessionOptions,
  ): Promise<LoadedModel> {
    let worker: Worker;
    try {
      worker = this.#createWorker(this.#workerFile);
    } catch (error) {
      throw new ModelLoadError(`could not start the onnxruntime worker (${this.#workerFile})`, {
        cause: error,
      });
    }
    const channel = new WorkerChannel(worker);
    // A copy of exactly the artifact's bytes, transferred: structured clone of a view would copy the
    // whole buffer behind it, and the loader still writes the caller's bytes to the disk cache. (Not
    // `slice()`: on a Node Buffer that returns a view of the caller's memory.)
    const bytes = new Uint8Array(artifact.bytes);
    let reply: WorkerReply;
    try {
      reply = await channel.call(
        {
          op: 'load',
          bytes,
          format: artifact.format,
          options,
          defaultIntraOpThreads: this.#defaultIntraOpThreads,
        },
        [bytes.buffer],
      );
      if (reply.type !== 'loaded') throw new Error(`unexpected answer '${reply.type}' to load`);
    } catch (error) {
      await channel.terminate();
      throw error instanceof ModelLoadError
        ? error
        : new ModelLoadError(`onnxruntime could not create the session (${String(error)})`, { cause: error });
    }
    const fallbacks = reply.fallbacks.map((f) => ({ provider: f.provider, error: fromWireError(f.error) }));
    return new WorkerModel(channel, reply.signature, reply.provider, fallbacks);
  }
}

/** A request without its id, per member of the union. */
type RequestBody = WorkerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

/** Request and answer over one worker, matched by id; every pending call fails if the worker exits. */
class WorkerChannel {
  readonly #worker: Worker;
  readonly #pending = new Map<
    number,
    { resolve: (reply: WorkerReply) => void; reject: (e: Error) => void }
  >();
  #nextId = 1;
  #lastError: Error | undefined;
  #exited: ModelLoadError | undefined;
  #terminated = false;

  constructor(worker: Worker) {
    this.#worker = worker;
    // An idle worker must not keep the process alive; one with work pending must (see #settle).
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#settle(reply.id);
      if (reply.type === 'failed') pending.reject(fromWireError(reply.error));
      else pending.resolve(reply);
    });
    worker.on('error', (error) => {
      this.#lastError = error;
    });
    worker.on('exit', (code) => {
      const reason = this.#terminated ? 'was released' : `exited with code ${code}`;
      this.#exited = new ModelLoadError(`the onnxruntime worker ${reason}`, { cause: this.#lastError });
      for (const [id, pending] of [...this.#pending]) {
        this.#settle(id);
        pending.reject(this.#exited);
      }
    });
  }

  call(body: RequestBody, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.#exited !== undefined) return Promise.reject(this.#exited);
    const id = this.#nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) this.#worker.ref();
      try {
        this.#worker.postMessage({ ...body, id } as WorkerRequest, transfer);
      } catch (error) {
        this.#settle(id);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  get exited(): boolean {
    return this.#exited !== undefined;
  }

  async terminate(): Promise<void> {
    this.#terminated = true;
    await this.#worker.terminate();
  }

  #settle(id: number): void {
    this.#pending.delete(id);
    if (this.#pending.size === 0 && this.#exited === undefined) this.#worker.unref();
  }
}

class WorkerModel implements LoadedModel {
  readonly signature: ModelSignature;
  readonly provider: string;
  readonly fallbacks: readonly ProviderFailure[];
  readonly #channel: WorkerChannel;
  #released: Promise<void> | undefined;

  constructor(
    channel: WorkerChannel,
    signature: ModelSignature,
    provider: string,
    fallbacks: readonly ProviderFailure[],
  ) {
    this.#channel = channel;
    this.signature = signature;
    this.provider = provider;
    this.fallbacks = fallbacks;
  }

  async run(
    feeds: Readonly<Record<string, Tensor>>,
    outputs?: readonly string[],
  ): Promise<Record<string, Tensor>> {
    if (this.#released !== undefined) throw new Error('the session was released');
    const packed = packTensors(feeds);
    const reply = await this.#channel.call({ op: 'run', feeds: packed.tensors, outputs }, packed.transfer);
    if (reply.type !== 'outputs') throw new Error(`unexpected answer '${reply.type}' to run`);
    return reply.outputs;
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      try {
        if (!this.#channel.exited) await this.#channel.call({ op: 'release' });
      } finally {
        await this.#channel.terminate();
      }
    })();
    return this.#released;
  }
}
