/**
 * Turns a resolved version into a live session: the bytes come from the local-disk tier or the store,
 * their sha256 is checked against config.json before anything else sees them, the session is created
 * from the bytes in memory (never from a file), and an optional warm-up run pays the first-run costs
 * before a request does. The disk write of freshly downloaded bytes happens off the critical path.
 */
import { createHash } from 'node:crypto';
import { IntegrityError, ModelLoadError, ServingError } from './errors';
import type { ResolvedModel } from './model-registry';
import type {
  ArtifactCache,
  Clock,
  EngineSessionOptions,
  InferenceEngine,
  LoadedModel,
  ModelStore,
  Telemetry,
} from './ports';
import { NO_TELEMETRY } from './ports';
import { synthesizeInputs } from './warmup';

export interface ModelLoaderOptions {
  readonly store: ModelStore;
  readonly engine: InferenceEngine;
  readonly diskCache?: ArtifactCache | undefined;
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
}

export class ModelLoader {
  readonly #store: ModelStore;
  readonly #engine: InferenceEngine;
  readonly #diskCache: ArtifactCache | undefined;
  readonly #telemetry: Telemetry;
  readonly #clock: Clock;
  readonly #pendingWrites = new Set<Promise<void>>();

  constructor(options: ModelLoaderOptions) {
    this.#store = options.store;
    this.#engine = options.engine;
    this.#diskCache = options.diskCache;
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#clock = options.clock ?? performanceNow;
  }

  async load(resolved: ResolvedModel): Promise<LoadedModel> {
    const { config, version, format, sha256, size } = resolved;
    const name = config.name;
    try {
      const t0 = this.#clock();
      let bytes = await this.#diskCache?.get(sha256, size);
      const source = bytes === undefined ? 'store' : 'disk';
      bytes ??= await this.#store.readArtifact(name, version, format, size);
      const t1 = this.#clock();
      const actual = sha256Hex(bytes);
      if (actual !== sha256) {
        throw new IntegrityError(
          `model '${name}' version ${version}: ${format} file failed its integrity check (sha256 ${actual.slice(0, 12)}… does not match config.json)`,
        );
      }
      const t2 = this.#clock();
      if (source === 'store') this.#writeToDisk(sha256, bytes);
      const model = await this.#engine.load({ bytes, format }, engineOptions(resolved));
      const t3 = this.#clock();
      if (config.session.warmup) await this.#warmUp(model, name, version);
      const t4 = this.#clock();
      this.#telemetry.emit({
        type: 'model-loaded',
        model: name,
        version,
        format,
        source,
        bytes: size,
        downloadMs: t1 - t0,
        verifyMs: t2 - t1,
        createMs: t3 - t2,
        warmupMs: t4 - t3,
        provider: model.provider,
      });
      return model;
    } catch (error) {
      const failure =
        error instanceof ServingError
          ? error
          : new ModelLoadError(`model '${name}' version ${version} could not be loaded`, { cause: error });
      this.#telemetry.emit({ type: 'model-load-failed', model: name, version, error: failure });
      throw failure;
    }
  }

  /** Resolves when the background disk writes started so far have finished (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.#pendingWrites]);
  }

  async #warmUp(model: LoadedModel, name: string, version: string): Promise<void> {
    try {
      await model.run(synthesizeInputs(model.signature));
    } catch (error) {
      await model.release();
      throw new ModelLoadError(`model '${name}' version ${version} failed its warm-up run`, { cause: error });
    }
  }

  #writeToDisk(sha256: string, bytes: Uint8Array): void {
    const cache = this.#diskCache;
    if (cache === undefined) return;
    const write = cache
      .put(sha256, bytes)
      .catch((error: unknown) => {
        this.#telemetry.emit({ type: 'disk-cache-write-failed', sha256, error: asError(error) });
      })
      .finally(() => this.#pendingWrites.delete(write));
    this.#pendingWrites.add(write);
  }
}

function engineOptions(resolved: ResolvedModel): EngineSessionOptions {
  const s = resolved.config.session;
  const direct = resolved.format === 'ort' && s.useModelBytesDirectly;
  return {
    graphOptimizationLevel: s.graphOptimizationLevel,
    intraOpThreads: s.intraOpThreads,
    interOpThreads: s.interOpThreads,
    executionProviders: s.executionProviders,
    useModelBytesDirectly: direct,
    // Prepacking copies the weights into new buffers, which defeats using the fetched bytes directly.
    disablePrepacking: s.disablePrepacking ?? direct,
  };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function performanceNow(): number {
  return performance.now();
}
