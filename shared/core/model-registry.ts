/**
 * Resolves a model name and an optional version to one immutable artifact, reading `config.json` through
 * the store. A config is re-read at most every `configTtlMs`, with a conditional request (ETag), so a new
 * default version reaches warm instances cheaply; when that re-read fails, or reads a document that does
 * not parse, the last good config is kept (a flaky bucket must not take a warm instance down). A config
 * whose artifact failed its integrity check is distrusted: the next read is unconditional, since an answer
 * with other content under the real ETag would otherwise be confirmed by every later 304. A config.json
 * that does not parse, with nothing cached to serve instead, is remembered with the load backoff (1 s
 * doubling to 60 s): until it ends, requests for the model are answered with its reason and `Retry-After`
 * ({@link ModelLoadBackoffError}) without a store request, so a flood of requests is not a flood of GETs.
 */
import { ModelLoadBackoffError, ModelLoadError, ModelNotFoundError, ServingError } from './errors';
import { DEFAULT_LOAD_BACKOFF, type LoadBackoff } from './model-cache';
import { type ModelConfig, parseModelConfig, resolveVersion } from './model-config';
import { assertModelName, assertVersion } from './names';
import type { ArtifactFormat, Clock, ModelStore, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';

export interface ResolvedModel {
  readonly config: ModelConfig;
  readonly version: string;
  readonly format: ArtifactFormat;
  readonly sha256: string;
  readonly size: number;
  /**
   * The ETag of the config.json this was resolved from: a load that failed under one config.json (a wrong
   * `emptyDims`, a session setting) is not held against the next one.
   */
  readonly configEtag?: string;
}

interface CachedConfig {
  readonly config: ModelConfig;
  readonly etag: string;
  checkedAt: number;
  /** Read again before the next use, without the ETag ({@link ModelRegistry.distrust}). */
  distrusted: boolean;
}

export interface ModelRegistryOptions {
  readonly store: ModelStore;
  readonly configTtlMs: number;
  readonly clock?: Clock;
  /** Hears of re-read configs that could not be used (`config-rejected`). */
  readonly telemetry?: Telemetry;
  /** How long a config.json that does not parse is remembered; default {@link DEFAULT_LOAD_BACKOFF}. */
  readonly loadBackoff?: LoadBackoff;
}

/** A config.json that did not parse (nothing cached), remembered until `until`. */
interface ConfigFailure {
  readonly error: ServingError;
  readonly count: number;
  readonly until: number;
}

/** How {@link ModelRegistry.resolve} reads config.json. */
export interface ReadOptions {
  /** Read it now, past the TTL and the missing-name cache. */
  readonly fresh?: boolean;
}

export class ModelRegistry {
  readonly #store: ModelStore;
  readonly #ttlMs: number;
  readonly #clock: Clock;
  readonly #telemetry: Telemetry;
  readonly #configs = new Map<string, CachedConfig>();
  /** Single flight for config reads: concurrent requests share one GET. */
  readonly #reads = new Map<string, Promise<ModelConfig>>();
  /**
   * Names found missing, with when: within the TTL they are answered 404 without a store request, so a
   * client asking for made-up names cannot turn each request into a GET. Bounded, oldest dropped first.
   */
  readonly #missing = new Map<string, number>();
  /** Models whose config.json did not parse, with nothing cached; bounded as {@link #missing}. */
  readonly #failures = new Map<string, ConfigFailure>();
  readonly #backoff: LoadBackoff;

  constructor(options: ModelRegistryOptions) {
    this.#store = options.store;
    this.#ttlMs = options.configTtlMs;
    this.#clock = options.clock ?? Date.now;
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#backoff = options.loadBackoff ?? DEFAULT_LOAD_BACKOFF;
  }

  /**
   * Marks the cached config.json of `model` as not to be trusted (its artifact failed its integrity
   * check): the next use reads it again at once, unconditionally (no If-None-Match).
   */
  distrust(model: string): void {
    const cached = this.#configs.get(model);
    if (cached !== undefined) cached.distrusted = true;
  }

  get location(): string {
    return this.#store.location;
  }

  /**
   * The version a request for `model` (and `version`, if given) is served from. `fresh` reads config.json
   * now (conditionally, when one is cached), past the TTL and the missing-name cache: for a caller that
   * must tell a model that is missing from one that was missing a moment ago (batch jobs).
   */
  async resolve(model: string, version?: string, options: ReadOptions = {}): Promise<ResolvedModel> {
    assertModelName(model);
    if (version !== undefined) assertVersion(model, version);
    const config = await this.getConfig(model, options);
    const chosen = resolveVersion(config, version);
    const info = chosen === undefined ? undefined : config.versions[chosen];
    if (chosen === undefined || info === undefined) {
      throw new ModelNotFoundError(`model '${model}' has no version '${version ?? ''}'`);
    }
    const etag = this.#configs.get(model)?.etag;
    const tag = etag === undefined ? {} : { configEtag: etag };
    if (config.session.preferOrtFormat && info.ort !== undefined) {
      return { config, version: chosen, format: 'ort', sha256: info.ort.sha256, size: info.ort.size, ...tag };
    }
    return { config, version: chosen, format: 'onnx', sha256: info.sha256, size: info.size, ...tag };
  }

  /** The parsed config.json of `model`, fresh within the TTL (or read now, with `fresh`). */
  async getConfig(model: string, options: ReadOptions = {}): Promise<ModelConfig> {
    assertModelName(model);
    const cached = this.#configs.get(model);
    const fresh = options.fresh === true;
    if (
      !fresh &&
      cached !== undefined &&
      !cached.distrusted &&
      this.#clock() - cached.checkedAt < this.#ttlMs
    )
      return cached.config;
    const missingSince = this.#missing.get(model);
    if (!fresh && missingSince !== undefined && this.#clock() - missingSince < this.#ttlMs)
      throw notFound(model);
    const failure = this.#failures.get(model);
    const waitMs = failure === undefined ? 0 : failure.until - this.#clock();
    if (!fresh && failure !== undefined && waitMs > 0) throw new ModelLoadBackoffError(failure.error, waitMs);
    let read = this.#reads.get(model);
    if (read === undefined) {
      read = this.#read(model, cached).finally(() => this.#reads.delete(model));
      this.#reads.set(model, read);
    }
    return read;
  }

  /** Names of the models in the repository. */
  async listModels(): Promise<string[]> {
    return (await this.#store.listModels()).sort();
  }

  async #read(model: string, cached: CachedConfig | undefined): Promise<ModelConfig> {
    let document: Awaited<ReturnType<ModelStore['readConfig']>>;
    try {
      document = await this.#store.readConfig(model, cached?.distrusted === true ? undefined : cached?.etag);
    } catch (error) {
      if (cached !== undefined) {
        // Keep serving what we have; try again after another TTL.
        cached.checkedAt = this.#clock();
        return cached.config;
      }
      if (error instanceof ServingError) throw error;
      throw new ModelLoadError(`model '${model}': config.json could not be read`, { cause: error });
    }
    if (document === 'not-modified' && cached !== undefined) {
      cached.checkedAt = this.#clock();
      return cached.config;
    }
    if (document === undefined || document === 'not-modified') {
      this.#configs.delete(model);
      this.#failures.delete(model);
      this.#remember(model);
      throw notFound(model);
    }
    this.#missing.delete(model);
    let config: ModelConfig;
    try {
      config = parseModelConfig(model, document.text);
    } catch (error) {
      if (!(error instanceof ServingError)) throw error;
      if (cached === undefined) {
        // Nothing to serve instead: the next requests are answered from memory until the backoff ends.
        this.#rememberFailure(model, error);
        throw error;
      }
      // A config that does not parse never replaces one that serves; it is read again after another TTL
      // (unconditionally if the cached one is distrusted, or with the cached ETag, which no longer matches).
      cached.checkedAt = this.#clock();
      this.#telemetry.emit({ type: 'config-rejected', model, error });
      return cached.config;
    }
    this.#failures.delete(model);
    this.#configs.set(model, { config, etag: document.etag, checkedAt: this.#clock(), distrusted: false });
    return config;
  }

  #rememberFailure(model: string, error: ServingError): void {
    const count = (this.#failures.get(model)?.count ?? 0) + 1;
    const { initialMs, maxMs } = this.#backoff;
    const delay = Math.min(maxMs, initialMs * 2 ** Math.min(count - 1, 30));
    this.#failures.delete(model);
    this.#failures.set(model, { error, count, until: this.#clock() + delay });
    if (this.#failures.size > MAX_MISSING) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
  }

  #remember(model: string): void {
    this.#missing.delete(model);
    this.#missing.set(model, this.#clock());
    if (this.#missing.size > MAX_MISSING) {
      const oldest = this.#missing.keys().next().value;
      if (oldest !== undefined) this.#missing.delete(oldest);
    }
  }
}

const MAX_MISSING = 1024;

function notFound(model: string): ModelNotFoundError {
  return new ModelNotFoundError(`model '${model}' not found`);
}
