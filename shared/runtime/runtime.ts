/**
 * Composition root: reads the configuration once and builds the singletons of an instance (store, engine,
 * caches, service, HTTP app, logger, metrics). The only module that reads `process.env`.
 */
import { availableParallelism, tmpdir, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { DiskArtifactCache } from '../adapters/disk-artifact-cache';
import { FileModelStore } from '../adapters/file-model-store';
import { OrtEngine } from '../adapters/ort-engine';
import { PowertoolsTelemetry } from '../adapters/powertools-telemetry';
import { PrometheusTelemetry } from '../adapters/prometheus-telemetry';
import { createS3Client } from '../adapters/s3-client';
import { type DownloadRetry, S3ModelStore } from '../adapters/s3-model-store';
import { WorkerOrtEngine } from '../adapters/worker-ort-engine';
import { zstdCompressor } from '../adapters/zstd-compressor';
import { type InstanceFacts, parseConfig, type ServingConfig } from '../core/config';
import { DynamicBatcher } from '../core/dynamic-batcher';
import { createHttpApp, type HttpApp } from '../core/http-app';
import { InferenceService, type Runner } from '../core/inference-service';
import { combineTelemetry } from '../core/metrics/combine-telemetry';
import { ModelCache } from '../core/model-cache';
import { ModelLoader } from '../core/model-loader';
import { ModelRegistry } from '../core/model-registry';
import type { Clock, InferenceEngine, ModelStore, Telemetry } from '../core/ports';
import { createRequestGate, type RequestGate } from '../core/request-gate';
import { RunTimeEstimator } from '../core/run-time-estimator';
import { SERVER_INFO } from './server-info';

export interface Runtime {
  readonly config: ServingConfig;
  readonly store: ModelStore;
  readonly registry: ModelRegistry;
  readonly cache: ModelCache;
  readonly loader: ModelLoader;
  readonly service: InferenceService;
  readonly app: HttpApp;
  readonly logger: Logger;
  readonly metrics: Metrics | undefined;
  /** Prometheus metrics (`GET /metrics` of the server), when asked for with `withPrometheus`. */
  readonly prometheus: PrometheusTelemetry | undefined;
  /** The request queues (and dynamic batcher), when asked for with `queueing` or `dynamicBatching`. */
  readonly batcher: DynamicBatcher | undefined;
  /** The clock of the service, the loader and the app: request deadlines are times on it. */
  readonly clock: Clock;
  /** What the node:http door asks before reading a body: refuses requests for a model whose queue is full. */
  readonly gate: RequestGate;
}

/** Replaceable parts, for tests and for doors that add their own (e.g. a batching runner). */
export interface RuntimeParts {
  readonly store?: ModelStore;
  readonly engine?: InferenceEngine;
  readonly telemetry?: Telemetry;
  readonly runner?: Runner;
  readonly isReady?: () => boolean;
  /** Create CloudWatch EMF metrics (Lambda). */
  readonly withMetrics?: boolean;
  /** Keep Prometheus metrics as well (the server's `GET /metrics`). */
  readonly withPrometheus?: boolean;
  /**
   * Queue every model's requests through a {@link DynamicBatcher} (the server): a first-in, first-out
   * queue per model version, one run at a time, bounded by `config.server.maxQueueSize` (503 past it).
   */
  readonly queueing?: boolean;
  /** Queue (as `queueing`) and stack the requests of models whose config.json has `dynamicBatching`. */
  readonly dynamicBatching?: boolean;
  /**
   * Honour `engineThread: 'worker'` (the server, whose bundle has the worker beside it). Lambda leaves it
   * off: one request per instance gains nothing from a free event loop, and a worker only adds copies.
   */
  readonly workerEngine?: boolean;
  /**
   * Milliseconds for timings, deadlines, config.json TTLs and failed-load backoffs (default
   * `performance.now`); tests inject their own to drive time.
   */
  readonly clock?: Clock;
}

export function createRuntime(config: ServingConfig, parts: RuntimeParts = {}): Runtime {
  const logger = new Logger({ serviceName: SERVER_INFO.name, logLevel: config.logLevel as 'INFO' });
  const metrics = parts.withMetrics
    ? new Metrics({ namespace: 'OnnxServerless', serviceName: SERVER_INFO.name })
    : undefined;
  const prometheus = parts.withPrometheus ? new PrometheusTelemetry() : undefined;
  const base = parts.telemetry ?? new PowertoolsTelemetry(logger, metrics);
  const telemetry = prometheus === undefined ? base : combineTelemetry(base, prometheus);
  const batcher =
    parts.queueing || parts.dynamicBatching
      ? new DynamicBatcher({
          telemetry,
          batching: parts.dynamicBatching ?? false,
          maxQueueSize: config.server.maxQueueSize,
        })
      : undefined;
  const runner = parts.runner ?? batcher?.runner;
  const store = parts.store ?? createStore(config, telemetry);
  const clock = parts.clock ?? (() => performance.now());
  const registry = new ModelRegistry({ store, configTtlMs: config.configTtlMs, telemetry, clock });
  const cache = new ModelCache({ maxBytes: config.cacheMemoryBytes, telemetry, clock });
  const diskCache =
    config.diskCache.maxBytes > 0
      ? new DiskArtifactCache({ dir: config.diskCache.dir, maxBytes: config.diskCache.maxBytes })
      : undefined;
  const engineOptions = { defaultIntraOpThreads: config.intraOpThreads };
  const engine =
    parts.engine ??
    (parts.workerEngine && config.engineThread === 'worker'
      ? new WorkerOrtEngine(engineOptions)
      : new OrtEngine(engineOptions));
  // One estimator for the loader's warm-up runs and the service's runs.
  const runTimes = new RunTimeEstimator();
  const loader = new ModelLoader({
    store,
    engine,
    diskCache,
    telemetry,
    clock,
    runTimes,
    variant: config.variant,
  });
  const service = new InferenceService({
    registry,
    cache,
    loader,
    limits: { maxTensorElements: config.limits.maxTensorElements },
    telemetry,
    clock,
    runTimes,
    ...(runner === undefined ? {} : { runner }),
  });
  const app = createHttpApp({
    service,
    server: SERVER_INFO,
    maxBodyBytes: config.limits.maxBodyBytes,
    pinnedModel: config.pinnedModel,
    ...(parts.isReady === undefined ? {} : { isReady: parts.isReady }),
    telemetry,
    clock,
    onUnexpectedError: (error, request) =>
      logger.error('request failed', { error: error as Error, path: request.path }),
  });
  const gate = createRequestGate({
    pinnedModel: config.pinnedModel,
    telemetry,
    clock,
    ...(batcher === undefined
      ? {}
      : { refusal: (model, version, arriving) => batcher.refusal(model, version, arriving) }),
  });
  return {
    config,
    store,
    registry,
    cache,
    loader,
    service,
    app,
    logger,
    metrics,
    prometheus,
    batcher,
    clock,
    gate,
  };
}

/** The model store of `config`; `telemetry` hears of download parts read again. */
export function createStore(config: ServingConfig, telemetry?: Telemetry): ModelStore {
  const repo = config.repository;
  if (repo.kind === 'file') return new FileModelStore(resolve(repo.root));
  const client = createS3Client({
    region: repo.region,
    ...(repo.endpoint === undefined ? {} : { endpoint: repo.endpoint, forcePathStyle: true }),
  });
  return new S3ModelStore({
    client,
    bucket: repo.bucket,
    prefix: repo.prefix,
    partSize: repo.partSizeBytes,
    concurrency: repo.concurrency,
    ...(telemetry === undefined
      ? {}
      : { onRetry: (retry: DownloadRetry) => telemetry.emit({ type: 'download-retry', ...retry }) }),
  });
}

/**
 * Starts loading the model a function is pinned to (`ONNX_SERVE_MODEL`): config.json, the download and
 * the session. Resolves when that has settled; a failure is logged as a warning, not thrown (the first
 * request meets it again, or the remembered failure's backoff).
 */
export function prefetchPinnedModel(runtime: Runtime): Promise<void> {
  const model = runtime.config.pinnedModel;
  if (model === undefined) return Promise.resolve();
  return runtime.service.load(model).catch((error: unknown) => {
    runtime.logger.warn('the pinned model could not be loaded ahead of the first request', {
      model,
      error: error as Error,
    });
  });
}

/** What {@link lambdaInit} started. */
export interface LambdaInit {
  readonly runtime: Runtime;
  /** Settles when the pinned model's load started in the init phase has (at once when none is pinned). */
  readonly prefetched: Promise<void>;
}

/**
 * For a door's module scope, which Lambda runs in its init phase: on Lambda (`AWS_LAMBDA_FUNCTION_NAME`
 * is set) builds the runtime from the environment and starts loading the pinned model, so its download
 * overlaps the rest of the start-up and the wait for the first event instead of following them; the first
 * request joins that load (loads are single-flight). `undefined` outside Lambda (tests import doors
 * without an environment) and when the configuration is bad: the first invocation reports every bad key.
 */
export function lambdaInit(
  parts: RuntimeParts,
  env: NodeJS.ProcessEnv = process.env,
): LambdaInit | undefined {
  if (env.AWS_LAMBDA_FUNCTION_NAME === undefined || env.AWS_LAMBDA_FUNCTION_NAME === '') return undefined;
  let config: ServingConfig;
  try {
    config = configFromEnv(env);
  } catch {
    return undefined;
  }
  const runtime = createRuntime(config, parts);
  return { runtime, prefetched: prefetchPinnedModel(runtime) };
}

/** Memory, cores and temp dir of this instance; cgroup-aware where Node can tell. */
export function instanceFacts(): InstanceFacts {
  const constrained = process.constrainedMemory?.() ?? 0;
  const total = totalmem();
  return {
    memoryBytes: constrained > 0 && constrained < total ? constrained : total,
    availableParallelism: availableParallelism(),
    tmpDir: tmpdir(),
    zstdCompression: zstdCompressor() !== undefined,
  };
}

/** Parses `process.env` (throws a ConfigError listing every bad key). */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServingConfig {
  return parseConfig(env, instanceFacts());
}
