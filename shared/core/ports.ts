/**
 * Ports: the small interfaces the core depends on. Adapters in `shared/adapters` implement them against
 * S3, the file system and onnxruntime-node; unit tests implement them with in-memory fakes.
 */
import type { ModelSignature, Tensor } from './tensor';

/** `config.json` as read from the repository, with the validator used for cheap conditional re-reads. */
export interface ConfigDocument {
  readonly text: string;
  readonly etag: string;
}

/** The file of a version: the portable ONNX file or its ORT-format copy. */
export type ArtifactFormat = 'onnx' | 'ort';

export const ARTIFACT_FILE: Readonly<Record<ArtifactFormat, string>> = {
  onnx: 'model.onnx',
  ort: 'model.ort',
};

/**
 * The file name of a version's artifact: `model.onnx`, `model.ort`, or for a precision variant (e.g.
 * `fp16`, listed under `versions.<v>.variants` in config.json) `model.fp16.onnx`.
 */
export function artifactFile(format: ArtifactFormat, variant?: string): string {
  return variant === undefined ? ARTIFACT_FILE[format] : `model.${variant}.${format}`;
}

/** Where models live: `<root>/<model>/config.json` and `<root>/<model>/<version>/model.onnx`. */
export interface ModelStore {
  /** Human-readable location for logs, e.g. `s3://bucket/prefix` (never credentials). */
  readonly location: string;
  /**
   * Reads `<model>/config.json`. Returns `undefined` when the model does not exist and `'not-modified'`
   * when `etag` still matches. Names reaching a store were validated by the core already.
   */
  readConfig(model: string, etag?: string): Promise<ConfigDocument | 'not-modified' | undefined>;
  /**
   * Reads one version file whose byte size is known from config.json: {@link artifactFile} of `format`
   * and `variant`. Throws {@link ModelNotFoundError} when it is missing and {@link ModelLoadError} when the
   * store fails.
   */
  readArtifact(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
  ): Promise<Uint8Array>;
  /**
   * {@link readArtifact}, returning the bytes' sha256 (hex) too, computed while they arrive rather than
   * after the last byte: the loader then only compares it. Optional: without it the loader hashes.
   * `onUnderWay`, where given, is called once when the transfer is under way (the first answer's headers
   * are in and every request read at once has been made), so that what the caller does then overlaps it.
   */
  readArtifactHashed?(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
    onUnderWay?: () => void,
  ): Promise<HashedArtifact>;
  /** Names of the models in the repository (folders or prefixes that hold a config.json). */
  listModels(): Promise<string[]>;
}

/** An artifact's bytes with their sha256, as lowercase hex. */
export interface HashedArtifact {
  readonly bytes: Uint8Array;
  readonly sha256: string;
}

/** The local-disk tier of the warm cache, keyed by content hash. */
export interface ArtifactCache {
  /** The bytes stored under `sha256`, or `undefined` on a miss (also when the size differs). */
  get(sha256: string, size: number): Promise<Uint8Array | undefined>;
  /** Stores bytes whose hash was already verified; written atomically (temporary name, then rename). */
  put(sha256: string, bytes: Uint8Array): Promise<void>;
  /** Removes the file stored under `sha256`, if any (e.g. one that no longer hashes to its name). */
  delete(sha256: string): Promise<void>;
}

export const GRAPH_OPTIMIZATION_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;
export type GraphOptimizationLevel = (typeof GRAPH_OPTIMIZATION_LEVELS)[number];

export interface EngineSessionOptions {
  readonly graphOptimizationLevel: GraphOptimizationLevel;
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  /** In order of preference, e.g. `['cuda', 'cpu']`; the engine takes the first that loads. */
  readonly executionProviders: readonly string[];
  /** ORT format only: let onnxruntime use the fetched bytes for the model and its initialisers. */
  readonly useModelBytesDirectly: boolean;
  readonly disablePrepacking: boolean;
}

/** An execution provider that was tried before the one that loaded, and why it failed. */
export interface ProviderFailure {
  readonly provider: string;
  readonly error: Error;
}

/** A live session. `run` may be called concurrently; `release` is called once, when nothing runs. */
export interface LoadedModel {
  readonly signature: ModelSignature;
  /** The execution provider that loaded, e.g. `cpu`. */
  readonly provider: string;
  /** Providers the engine tried, in order, before {@link provider} loaded. */
  readonly fallbacks?: readonly ProviderFailure[];
  /** The precision variant this session runs (e.g. `int8`); absent for the version's own file. */
  readonly variant?: string;
  run(feeds: Readonly<Record<string, Tensor>>, outputs?: readonly string[]): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

export interface InferenceEngine {
  load(
    artifact: { bytes: Uint8Array; format: ArtifactFormat },
    options: EngineSessionOptions,
  ): Promise<LoadedModel>;
  /**
   * Why `provider` cannot create a session on this host (its library is missing, no device), or
   * `undefined` when it can. Lets the loader skip a provider before downloading a file only it would run.
   * Optional: an engine without it has every provider tried with the file.
   */
  providerUnavailable?(provider: string): Promise<Error | undefined>;
  /**
   * Starts loading what creating a session needs (onnxruntime's native addon) on a later turn of the
   * event loop, and resolves when it has; never rejects (a failure is met by {@link load}). The loader
   * calls it once a download is under way, so the two overlap. Optional.
   */
  prepare?(): Promise<void>;
}

/** What the core reports; the runtime turns these into logs and metrics. */
export type ServingEvent =
  | {
      readonly type: 'model-loaded';
      readonly model: string;
      readonly version: string;
      readonly format: ArtifactFormat;
      readonly source: 'store' | 'disk';
      readonly bytes: number;
      readonly downloadMs: number;
      readonly verifyMs: number;
      readonly createMs: number;
      readonly warmupMs: number;
      readonly provider: string;
      /** The precision variant that loaded (e.g. `fp16`); absent for the version's default file. */
      readonly variant?: string;
    }
  | {
      /** A provider of the model's list could not load; the next one is tried (a warning, not a failure). */
      readonly type: 'provider-fallback';
      readonly model: string;
      readonly version: string;
      readonly provider: string;
      readonly variant?: string;
      readonly error: Error;
    }
  | {
      /**
       * The deployment chose a precision variant (`ONNX_SERVE_VARIANT`) that cannot serve this version: it
       * is missing, none of its providers is in the model's list or available here, or it failed to load.
       * The version's default plan (float32 on a CPU) serves instead: a warning, not a failure.
       */
      readonly type: 'variant-fallback';
      readonly model: string;
      readonly version: string;
      readonly variant: string;
      readonly reason: string;
      readonly error?: Error;
    }
  | {
      /**
       * The default warm-up run (session.warmup `true`) failed: a warning, the session serves. Configured
       * warm-up samples that fail fail the load instead (`model-load-failed`).
       */
      readonly type: 'warmup-failed';
      readonly model: string;
      readonly version: string;
      readonly error: Error;
    }
  | {
      /** The engine refused a validated request at run time; `error.cause` holds the vendor's text. */
      readonly type: 'input-rejected';
      readonly model: string;
      readonly version: string;
      readonly error: Error;
    }
  | {
      readonly type: 'model-load-failed';
      readonly model: string;
      readonly version: string;
      readonly error: Error;
    }
  | {
      readonly type: 'model-evicted';
      readonly model: string;
      readonly version: string;
      readonly bytes: number;
    }
  | { readonly type: 'cache'; readonly model: string; readonly version: string; readonly hit: boolean }
  | { readonly type: 'disk-cache-write-failed'; readonly sha256: string; readonly error: Error }
  | {
      readonly type: 'inference';
      readonly model: string;
      readonly version: string;
      readonly ms: number;
      readonly batch: number;
    }
  | {
      /** One HTTP inference request (infer or predict) answered; `outcome` is `success` or an error code. */
      readonly type: 'request';
      readonly model: string;
      readonly outcome: string;
      readonly status: number;
      readonly ms: number;
    }
  | {
      /** One engine run of the dynamic batcher: `rows` stacked from `requests` requests. */
      readonly type: 'batch';
      readonly model: string;
      readonly version: string;
      readonly rows: number;
      readonly requests: number;
      readonly ms: number;
    }
  | {
      /** Requests waiting in the dynamic batcher's queue of a model version, after a change. */
      readonly type: 'queue';
      readonly model: string;
      readonly version: string;
      readonly depth: number;
    }
  | {
      /** A part of a download (or a config.json read) broke mid-body and is read again after `delayMs`. */
      readonly type: 'download-retry';
      readonly model: string;
      /** `undefined` for config.json. */
      readonly version: string | undefined;
      readonly file: string;
      readonly part: number;
      readonly parts: number;
      readonly attempt: number;
      readonly reason: string;
      readonly delayMs: number;
    }
  | {
      /** A re-read config.json could not be used (it does not parse); the last good one stays in force. */
      readonly type: 'config-rejected';
      readonly model: string;
      readonly error: Error;
    }
  | {
      /**
       * The default version named by a newer config.json could not load; the version that was serving the
       * model's default route keeps serving it until the new one loads.
       */
      readonly type: 'rollout-held';
      readonly model: string;
      /** The version that failed (with the sha256 of its artifact: a changed config may keep the number). */
      readonly version: string;
      readonly sha256: string;
      readonly serving: string;
      readonly error: Error;
    };

export interface Telemetry {
  emit(event: ServingEvent): void;
}

export const NO_TELEMETRY: Telemetry = { emit: () => {} };

/** Milliseconds from an arbitrary origin; injected so tests can drive time. */
export type Clock = () => number;
