/**
 * The application service every door calls: resolve a model, lease its session from the warm cache
 * (loading it on first use), validate the request against the session's signature, run, and shape the
 * answer. It knows nothing of HTTP or Lambda.
 */
import { admitRun, type Deadline } from './deadline';
import { InputRejectedError, IntegrityError, ModelLoadBackoffError, ModelLoadError } from './errors';
import type { Lease, ModelCache } from './model-cache';
import type { ModelConfig } from './model-config';
import type { ModelLoader } from './model-loader';
import type { ModelRegistry, ResolvedModel } from './model-registry';
import type { ArtifactFormat, Clock, LoadedModel, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';
import type { InferInput, InferOutput, InferRequest, InferResponse } from './protocol/infer-types';
import { RunTimeEstimator, shapeKey } from './run-time-estimator';
import type { ModelSignature, Tensor, TensorSpec } from './tensor';
import { type CodecLimits, validateInputs, validateOutputs } from './validate-inputs';

/**
 * How a validated request reaches the engine: directly, or through a dynamic batcher (containers).
 * `signal` aborts when the client is gone: a runner may then drop work it has not started.
 */
export type Runner = (
  model: LoadedModel,
  resolved: ResolvedModel,
  feeds: Record<string, Tensor>,
  outputs: readonly string[] | undefined,
  signal?: AbortSignal,
) => Promise<Record<string, Tensor>>;

export const DIRECT_RUNNER: Runner = (model, _resolved, feeds, outputs) => model.run(feeds, outputs);

export interface ModelMetadata {
  readonly name: string;
  readonly versions: readonly string[];
  readonly platform: 'onnx_onnxv1';
  readonly inputs: readonly { name: string; datatype: string; shape: readonly number[] }[];
  readonly outputs: readonly { name: string; datatype: string; shape: readonly number[] }[];
  /**
   * Which file of the version answers: a precision variant's name (`int8`, `fp16`, ...) or `default`
   * (the version's own model.onnx or its ORT copy); see docs/models.md "Smaller models".
   */
  readonly variant: string;
  /** The execution provider the session runs on, e.g. `cpu`. */
  readonly provider: string;
}

export interface InferenceServiceOptions {
  readonly registry: ModelRegistry;
  readonly cache: ModelCache;
  readonly loader: ModelLoader;
  readonly limits: CodecLimits;
  readonly runner?: Runner;
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
  /**
   * Run times per model version and shapes: every run is recorded, and a request with a deadline is
   * refused before its run when the estimate says it cannot end in time. Share it with the loader so
   * warm-up runs count.
   */
  readonly runTimes?: RunTimeEstimator;
}

export class InferenceService {
  readonly #registry: ModelRegistry;
  readonly #cache: ModelCache;
  readonly #loader: ModelLoader;
  readonly #limits: CodecLimits;
  readonly #runner: Runner;
  readonly #telemetry: Telemetry;
  readonly #clock: Clock;
  readonly #runTimes: RunTimeEstimator;
  /** Per route (`model`, or `model@version`), the artifact that last served it. */
  readonly #serving = new Map<string, ResolvedModel>();
  /** `route#sha256` of held rollouts already reported, so a failure not remembered is reported once. */
  readonly #held = new Set<string>();

  constructor(options: InferenceServiceOptions) {
    this.#registry = options.registry;
    this.#cache = options.cache;
    this.#loader = options.loader;
    this.#limits = options.limits;
    this.#runner = options.runner ?? DIRECT_RUNNER;
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#clock = options.clock ?? (() => performance.now());
    this.#runTimes = options.runTimes ?? new RunTimeEstimator();
  }

  get limits(): CodecLimits {
    return this.#limits;
  }

  /**
   * Runs `use` with a leased session of the resolved version; the lease is returned whatever happens.
   *
   * A warm route keeps serving through a bad rollout: when config.json names a new artifact for a route
   * (the model's default, or an explicit version whose file was replaced) and it cannot load, the artifact
   * that last served that route keeps serving it (a `rollout-held` event) until the new one loads; its
   * failure is remembered with a backoff by the cache, so later requests do not wait on it. A route that
   * never served answers the failure itself.
   */
  async withModel<T>(
    name: string,
    version: string | undefined,
    use: (model: LoadedModel, resolved: ResolvedModel) => Promise<T>,
  ): Promise<T> {
    const route = version === undefined ? name : `${name}@${version}`;
    let resolved = await this.#registry.resolve(name, version);
    let lease: Lease;
    try {
      lease = await this.#acquire(resolved);
    } catch (error) {
      const previous = this.#serving.get(route);
      if (previous === undefined || previous.sha256 === resolved.sha256) throw error;
      const held = `${route}#${resolved.sha256}`;
      if (!(error instanceof ModelLoadBackoffError) && !this.#held.has(held)) {
        this.#held.add(held);
        this.#telemetry.emit({
          type: 'rollout-held',
          model: name,
          version: resolved.version,
          sha256: resolved.sha256,
          serving: previous.version,
          error: error instanceof Error ? error : new Error(String(error)),
        });
      }
      resolved = previous;
      lease = await this.#acquire(previous);
    }
    const before = this.#serving.get(route);
    this.#serving.set(route, resolved);
    if (before !== undefined && before.sha256 !== resolved.sha256) {
      for (const held of this.#held) if (held.startsWith(`${route}#`)) this.#held.delete(held);
    }
    try {
      return await use(lease.model, resolved);
    } catch (error) {
      // A run failing with a load error means the session itself is broken (e.g. its worker died):
      // the next request loads it afresh instead of meeting the same dead session.
      if (error instanceof ModelLoadError) lease.discard();
      throw error;
    } finally {
      lease.release();
    }
  }

  /** A lease on the session of `resolved`, loading it if needed; an integrity failure distrusts its config. */
  async #acquire(resolved: ResolvedModel): Promise<Lease> {
    const name = resolved.config.name;
    try {
      return await this.#cache.acquire(
        {
          model: name,
          version: resolved.version,
          sha256: resolved.sha256,
          ...(resolved.configEtag === undefined ? {} : { config: resolved.configEtag }),
        },
        estimateSessionBytes(resolved, this.#loader.firstFile(resolved)),
        () => this.#loader.load(resolved),
      );
    } catch (error) {
      // The bytes may be right and config.json wrong (e.g. other content served under its real ETag, which
      // every conditional re-read would confirm): read it again, unconditionally, before the next attempt.
      if (error instanceof IntegrityError) this.#registry.distrust(name);
      throw error;
    }
  }

  /** Loads the model if needed; resolves when it is ready to serve. */
  async load(name: string, version?: string): Promise<void> {
    await this.withModel(name, version, async () => undefined);
  }

  async metadata(name: string, version?: string): Promise<ModelMetadata> {
    return this.withModel(name, version, async (model, resolved) => ({
      name,
      versions: Object.keys(resolved.config.versions),
      platform: 'onnx_onnxv1',
      inputs: model.signature.inputs.map(publicSpec),
      outputs: model.signature.outputs.map(publicSpec),
      variant: model.variant ?? 'default',
      provider: model.provider,
    }));
  }

  /** Whether the version can serve: it loads on first ask, so a ready answer means a real session. */
  async ready(name: string, version?: string): Promise<boolean> {
    try {
      await this.load(name, version);
      return true;
    } catch (error) {
      if (error instanceof ModelLoadError) return false;
      throw error;
    }
  }

  async signature(name: string, version?: string): Promise<ModelSignature> {
    return this.withModel(name, version, async (model) => model.signature);
  }

  /**
   * Validates and runs a decoded request; `signal` aborts when the client is gone. With a `deadline`, the
   * run starts only if it is expected to end before it ({@link admitRun}), else a 504 is thrown unrun.
   */
  async infer(
    name: string,
    version: string | undefined,
    request: InferRequest,
    signal?: AbortSignal,
    deadline?: Deadline,
  ): Promise<InferResponse> {
    return this.withModel(name, version, async (model, resolved) => {
      const outputs = await this.#run(
        model,
        resolved,
        request.inputs,
        request.outputs?.map((o) => o.name),
        signal,
        deadline,
      );
      return {
        modelName: name,
        modelVersion: resolved.version,
        ...(request.id === undefined ? {} : { id: request.id }),
        outputs,
      };
    });
  }

  /** Like {@link infer} for inputs built against the signature by the caller (predict, batch). */
  async inferWith(
    name: string,
    version: string | undefined,
    build: (signature: ModelSignature, config: ModelConfig) => InferInput[],
    signal?: AbortSignal,
    deadline?: Deadline,
  ): Promise<{ version: string; outputs: InferOutput[] }> {
    return this.withModel(name, version, async (model, resolved) => ({
      version: resolved.version,
      outputs: await this.#run(
        model,
        resolved,
        build(model.signature, resolved.config),
        undefined,
        signal,
        deadline,
      ),
    }));
  }

  async #run(
    model: LoadedModel,
    resolved: ResolvedModel,
    inputs: InferInput[],
    requested: readonly string[] | undefined,
    signal: AbortSignal | undefined,
    deadline: Deadline | undefined,
  ): Promise<InferOutput[]> {
    const feeds = validateInputs(inputs, model.signature, resolved.config, this.#limits);
    // An empty list means every output, as an absent one does (OIP); onnxruntime refuses empty fetches.
    const fetches = validateOutputs(requested, model.signature);
    const name = resolved.config.name;
    if (deadline !== undefined) {
      admitRun(
        this.#runTimes.estimate(name, resolved.version, feeds),
        deadline,
        this.#clock(),
        () => `model '${name}' version ${resolved.version} on ${shapeKey(feeds)}`,
      );
    }
    const started = this.#clock();
    let results: Record<string, Tensor>;
    try {
      results = await this.#runner(model, resolved, feeds, fetches, signal);
    } catch (error) {
      if (error instanceof InputRejectedError) {
        this.#telemetry.emit({ type: 'input-rejected', model: name, version: resolved.version, error });
      }
      throw error;
    }
    const ms = this.#clock() - started;
    this.#runTimes.observe(name, resolved.version, feeds, ms);
    this.#telemetry.emit({
      type: 'inference',
      model: name,
      version: resolved.version,
      ms,
      batch: batchOf(feeds),
    });
    const names = fetches ?? model.signature.outputs.map((o) => o.name);
    return names.flatMap((name) => {
      const tensor = results[name];
      return tensor === undefined
        ? []
        : [{ name, datatype: tensor.datatype, shape: [...tensor.shape], data: tensor.data }];
    });
  }
}

/**
 * Resident bytes of a session, estimated from the file it is created from (`file`: the version's own by
 * default, a precision variant's when the deployment serves one). Measured on a 245 MB MLP (FACTS.md): an
 * `.onnx` session holds about 2.3x its file (the bytes, the copied initialisers and prepacked weights); an
 * ORT file used in place about 1.3x.
 */
export function estimateSessionBytes(
  resolved: ResolvedModel,
  file: { readonly format: ArtifactFormat; readonly size: number } = resolved,
): number {
  const direct = file.format === 'ort' && resolved.config.session.useModelBytesDirectly;
  return Math.ceil(file.size * (direct ? 1.3 : 2.5));
}

function publicSpec(spec: TensorSpec): { name: string; datatype: string; shape: readonly number[] } {
  return { name: spec.name, datatype: spec.datatype, shape: spec.shape };
}

function batchOf(feeds: Record<string, Tensor>): number {
  for (const tensor of Object.values(feeds)) return tensor.shape[0] ?? 1;
  return 0;
}
