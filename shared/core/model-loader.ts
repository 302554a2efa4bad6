/**
 * Turns a resolved version into a live session: the bytes come from the local-disk tier or the store,
 * their sha256 is checked against config.json before anything else sees them, the session is created
 * from the bytes in memory (never from a file), and an optional warm-up run pays the first-run costs
 * before a request does. The disk write of freshly downloaded bytes happens off the critical path.
 */
import { createHash } from 'node:crypto';
import { IntegrityError, ModelConfigError, ModelLoadError, ServingError } from './errors';
import { assertEmptyDimsMatch, type VariantInfo } from './model-config';
import type { ResolvedModel } from './model-registry';
import type {
  ArtifactCache,
  ArtifactFormat,
  Clock,
  EngineSessionOptions,
  InferenceEngine,
  LoadedModel,
  ModelStore,
  Telemetry,
} from './ports';
import { NO_TELEMETRY } from './ports';
import type { RunTimeEstimator } from './run-time-estimator';
import { runWarmup } from './warmup';

export interface ModelLoaderOptions {
  readonly store: ModelStore;
  readonly engine: InferenceEngine;
  readonly diskCache?: ArtifactCache | undefined;
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
  /** Records the warm-up run's time: a model's first estimate (see {@link RunTimeEstimator}). */
  readonly runTimes?: RunTimeEstimator | undefined;
  /**
   * The precision variant this deployment serves (`ONNX_SERVE_VARIANT`, e.g. `int8`), tried first with
   * the providers it runs on; a version without it, or where it cannot load, serves its default plan.
   */
  readonly variant?: string | undefined;
}

export class ModelLoader {
  readonly #store: ModelStore;
  readonly #engine: InferenceEngine;
  readonly #diskCache: ArtifactCache | undefined;
  readonly #telemetry: Telemetry;
  readonly #clock: Clock;
  readonly #runTimes: RunTimeEstimator | undefined;
  readonly #pendingWrites = new Set<Promise<void>>();
  readonly #variant: string | undefined;

  constructor(options: ModelLoaderOptions) {
    this.#variant = options.variant;
    this.#store = options.store;
    this.#engine = options.engine;
    this.#diskCache = options.diskCache;
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#clock = options.clock ?? performanceNow;
    this.#runTimes = options.runTimes;
  }

  /**
   * Loads `resolved` with the first execution provider of its config that loads (see {@link loadPlan} for
   * precision variants). A provider that fails is reported as a `provider-fallback` event, not an error;
   * only when the last one fails too does the load fail.
   */
  async load(resolved: ResolvedModel): Promise<LoadedModel> {
    const { config, version } = resolved;
    const name = config.name;
    try {
      const plan = servingPlan(resolved, this.#variant, await this.#unavailable(resolved));
      for (const skip of plan.skipped) this.#fallback(name, version, skip.provider, skip, skip.error);
      if (plan.variantFallback !== undefined) this.#variantFallback(resolved, plan.variantFallback);
      const { attempts } = plan;
      if (attempts.length === 0) {
        const reasons = plan.skipped.map((s) => `${s.provider}: ${s.error.message}`).join('; ');
        throw new ModelLoadError(
          `model '${name}' version ${version}: no execution provider of the model is available here (${reasons})`,
        );
      }
      for (const [i, attempt] of attempts.entries()) {
        try {
          return await this.#loadAttempt(resolved, attempt);
        } catch (error) {
          // A config.json that does not fit the model is wrong whichever provider runs it.
          if (i === attempts.length - 1 || error instanceof ModelConfigError) throw error;
          for (const provider of attempt.providers) this.#fallback(name, version, provider, attempt, error);
          if (attempt.chosen) {
            this.#variantFallback(resolved, { reason: 'it could not be loaded', error: asError(error) });
          }
        }
      }
      throw new ModelLoadError(`model '${name}' version ${version}: no execution provider configured`);
    } catch (error) {
      const failure =
        error instanceof ServingError
          ? error
          : new ModelLoadError(`model '${name}' version ${version} could not be loaded`, { cause: error });
      this.#telemetry.emit({ type: 'model-load-failed', model: name, version, error: failure });
      throw failure;
    }
  }

  /**
   * The providers of the model that cannot create a session on this host, with why, asked of the engine
   * (once per process per provider there) so that a file only they would run is never downloaded. The CPU
   * provider is always there.
   */
  /**
   * The file this deployment tries first for `resolved`: the chosen variant's (`ONNX_SERVE_VARIANT`)
   * where the version has it and the model lists one of its providers, else the version's own file.
   * The cache sizes its estimate of the session by it.
   */
  firstFile(resolved: ResolvedModel): { readonly format: ArtifactFormat; readonly size: number } {
    const [first] = servingPlan(resolved, this.#variant).attempts;
    return first?.chosen === true ? first : resolved;
  }

  async #unavailable(resolved: ResolvedModel): Promise<ReadonlyMap<string, Error>> {
    const unavailable = new Map<string, Error>();
    const probe = this.#engine.providerUnavailable?.bind(this.#engine);
    if (probe === undefined) return unavailable;
    for (const provider of resolved.config.session.executionProviders) {
      if (provider === 'cpu') continue;
      const reason = await probe(provider);
      if (reason !== undefined) unavailable.set(provider, reason);
    }
    return unavailable;
  }

  #variantFallback(resolved: ResolvedModel, why: { reason: string; error?: Error | undefined }): void {
    const variant = this.#variant;
    if (variant === undefined) return;
    this.#telemetry.emit({
      type: 'variant-fallback',
      model: resolved.config.name,
      version: resolved.version,
      variant,
      reason: why.reason,
      ...(why.error === undefined ? {} : { error: why.error }),
    });
  }

  async #loadAttempt(resolved: ResolvedModel, attempt: LoadAttempt): Promise<LoadedModel> {
    const { config, version } = resolved;
    const { format, sha256, size, variant } = attempt;
    const name = config.name;
    const t0 = this.#clock();
    let bytes = await this.#diskCache?.get(sha256, size);
    let hashed = bytes === undefined ? undefined : sha256Hex(bytes);
    if (hashed !== undefined && hashed !== sha256) {
      // The disk tier only ever holds verified bytes, so a file that no longer hashes to its name was
      // damaged after the write (another process, the disk): drop it and download, never fail on it.
      await this.#diskCache?.delete(sha256);
      bytes = hashed = undefined;
    }
    const source = bytes === undefined ? 'store' : 'disk';
    // A store that hashes while the bytes arrive (S3: part by part, in order) leaves only a comparison.
    if (bytes === undefined && this.#store.readArtifactHashed !== undefined) {
      ({ bytes, sha256: hashed } = await this.#store.readArtifactHashed(
        name,
        version,
        format,
        size,
        variant,
        // The engine's library (onnxruntime-node) loads while the bytes are on their way.
        () => void this.#engine.prepare?.(),
      ));
    }
    bytes ??= await this.#store.readArtifact(name, version, format, size, variant);
    const t1 = this.#clock();
    const actual = hashed ?? sha256Hex(bytes);
    if (actual !== sha256) {
      const file = variant === undefined ? `${format} file` : `${variant} variant`;
      throw new IntegrityError(
        `model '${name}' version ${version}: ${file} failed its integrity check (sha256 ${actual.slice(0, 12)}… does not match config.json)`,
      );
    }
    const t2 = this.#clock();
    if (source === 'store') this.#writeToDisk(sha256, bytes);
    const model = await this.#engine.load({ bytes, format }, engineOptions(resolved, attempt));
    const t3 = this.#clock();
    try {
      // The model's inputs are known only now: a config.json `emptyDims` naming another input is refused.
      assertEmptyDimsMatch(`model '${name}' version ${version}`, config.emptyDims, model.signature);
    } catch (error) {
      await model.release();
      throw error;
    }
    await this.#warmUp(model, resolved);
    const t4 = this.#clock();
    for (const failed of model.fallbacks ?? []) {
      this.#fallback(name, version, failed.provider, attempt, failed.error);
    }
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
      ...(variant === undefined ? {} : { variant }),
    });
    return variant === undefined ? model : withVariant(model, variant);
  }

  #fallback(
    model: string,
    version: string,
    provider: string,
    attempt: { readonly variant: string | undefined },
    error: unknown,
  ): void {
    this.#telemetry.emit({
      type: 'provider-fallback',
      model,
      version,
      provider,
      ...(attempt.variant === undefined ? {} : { variant: attempt.variant }),
      error: asError(error),
    });
  }

  /** Resolves when the background disk writes started so far have finished (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.#pendingWrites]);
  }

  /**
   * The model's `session.warmup` (see warmup.ts). The default run is a guess at inputs, so its failure is a
   * `warmup-failed` warning and the session serves: a model that needs real-looking inputs must not answer
   * 503 to every request. Samples the config gives are the operator's word that they run, so their
   * failure fails the load, as in Triton.
   */
  async #warmUp(model: LoadedModel, resolved: ResolvedModel): Promise<void> {
    const { config, version } = resolved;
    const warmup = config.session.warmup;
    try {
      // Each warm-up run is timed: the first estimates of the model's run time (run-time-estimator.ts).
      const timed: Pick<LoadedModel, 'run' | 'signature'> = {
        signature: model.signature,
        run: async (feeds, outputs) => {
          const started = this.#clock();
          const results = await model.run(feeds, outputs);
          this.#runTimes?.observe(config.name, version, feeds, this.#clock() - started);
          return results;
        },
      };
      await runWarmup(timed, warmup);
    } catch (error) {
      if (warmup.mode === 'default') {
        this.#telemetry.emit({ type: 'warmup-failed', model: config.name, version, error: asError(error) });
        return;
      }
      await model.release();
      throw new ModelLoadError(
        `model '${config.name}' version ${version} failed its warm-up (config.json session.warmup)`,
        { cause: error },
      );
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

/** One try of {@link ModelLoader.load}: a file of the version and the providers it is tried with, in order. */
export interface LoadAttempt {
  /** A precision variant's name, or `undefined` for the version's file (`resolved.format`). */
  readonly variant: string | undefined;
  readonly format: ArtifactFormat;
  readonly sha256: string;
  readonly size: number;
  readonly providers: readonly string[];
  /** The variant the deployment chose (`ONNX_SERVE_VARIANT`), tried before the default plan. */
  readonly chosen?: true;
}

/**
 * The order in which a version is tried. Which provider will load is only known by trying, so the plan
 * walks the model's `executionProviders` in order and pairs each with the variant that lists it, else with
 * the version's file; neighbours that share a file become one engine call. E.g. providers
 * `['tensorrt', 'cuda', 'cpu']` and an `fp16` variant for `['cuda', 'tensorrt']` give: `fp16` with
 * `['tensorrt', 'cuda']`, then the default file with `['cpu']`. A variant's ORT copy is taken when
 * `session.preferOrtFormat` is on, as for the version's file.
 */
export function loadPlan(resolved: ResolvedModel): LoadAttempt[] {
  const variants = Object.entries(resolved.config.versions[resolved.version]?.variants ?? {});
  const attempts: LoadAttempt[] = [];
  for (const provider of resolved.config.session.executionProviders) {
    const found = variants.find(([, info]) => info.providers.includes(provider));
    const last = attempts.at(-1);
    if (last !== undefined && last.variant === found?.[0]) {
      attempts[attempts.length - 1] = { ...last, providers: [...last.providers, provider] };
    } else if (found === undefined) {
      const { format, sha256, size } = resolved;
      attempts.push({ variant: undefined, format, sha256, size, providers: [provider] });
    } else {
      const [variant, info] = found;
      attempts.push({ variant, ...variantFile(resolved, info), providers: [provider] });
    }
  }
  return attempts;
}

/** A provider left out of a plan before any download, and why. */
export interface SkippedProvider {
  readonly provider: string;
  readonly variant: string | undefined;
  readonly error: Error;
}

/** What {@link servingPlan} decided. */
export interface ServingPlan {
  readonly attempts: readonly LoadAttempt[];
  /** Providers of the plan that are not available on this host: never tried, their files never fetched. */
  readonly skipped: readonly SkippedProvider[];
  /** Why the chosen variant is not tried at all (missing, or no provider of it is usable here). */
  readonly variantFallback?: { readonly reason: string };
}

/**
 * The plan one deployment follows for `resolved`: the variant it chose (`variant`, e.g. `int8`) first,
 * with the providers of its `runsOn` (and `providers`) that the model lists, in the model's order; then
 * the version's default {@link loadPlan} without that variant. Providers in `unavailable` are left out
 * (and reported) before anything is downloaded; an attempt left without providers is dropped.
 */
export function servingPlan(
  resolved: ResolvedModel,
  variant: string | undefined,
  unavailable: ReadonlyMap<string, Error> = new Map(),
): ServingPlan {
  const { config, version } = resolved;
  const eps = config.session.executionProviders;
  let attempts = loadPlan(resolved);
  let variantFallback: { reason: string } | undefined;
  if (variant !== undefined) {
    const info = config.versions[version]?.variants?.[variant];
    if (info === undefined || !Object.hasOwn(config.versions[version]?.variants ?? {}, variant)) {
      variantFallback = { reason: `version ${version} has no '${variant}' variant` };
    } else {
      const providers = eps.filter((p) => info.runsOn.includes(p) || info.providers.includes(p));
      if (providers.length === 0) {
        variantFallback = {
          reason: `it runs on ${info.runsOn.join(', ')}, none of which is in the model's executionProviders (${eps.join(', ')})`,
        };
      } else {
        const chosen: LoadAttempt = { variant, ...variantFile(resolved, info), providers, chosen: true };
        attempts = [chosen, ...attempts.filter((a) => a.variant !== variant)];
      }
    }
  }
  const skipped: SkippedProvider[] = [];
  const kept: LoadAttempt[] = [];
  for (const attempt of attempts) {
    const providers = attempt.providers.filter((p) => {
      const error = unavailable.get(p);
      if (error !== undefined) skipped.push({ provider: p, variant: attempt.variant, error });
      return error === undefined;
    });
    if (providers.length > 0) kept.push({ ...attempt, providers });
    else if (attempt.chosen) {
      variantFallback = {
        reason: `none of its providers (${attempt.providers.join(', ')}) is available on this host`,
      };
    }
  }
  return { attempts: kept, skipped, ...(variantFallback === undefined ? {} : { variantFallback }) };
}

function variantFile(
  resolved: ResolvedModel,
  info: VariantInfo,
): Pick<LoadAttempt, 'format' | 'sha256' | 'size'> {
  if (resolved.config.session.preferOrtFormat && info.ort !== undefined) {
    return { format: 'ort', sha256: info.ort.sha256, size: info.ort.size };
  }
  return { format: 'onnx', sha256: info.sha256, size: info.size };
}

/** `model`, saying which variant it runs (metadata tells clients). */
function withVariant(model: LoadedModel, variant: string): LoadedModel {
  return {
    signature: model.signature,
    provider: model.provider,
    ...(model.fallbacks === undefined ? {} : { fallbacks: model.fallbacks }),
    variant,
    run: (feeds, outputs) => model.run(feeds, outputs),
    release: () => model.release(),
  };
}

function engineOptions(resolved: ResolvedModel, attempt: LoadAttempt): EngineSessionOptions {
  const s = resolved.config.session;
  const direct = attempt.format === 'ort' && s.useModelBytesDirectly;
  return {
    graphOptimizationLevel: s.graphOptimizationLevel,
    intraOpThreads: s.intraOpThreads,
    interOpThreads: s.interOpThreads,
    executionProviders: attempt.providers,
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
