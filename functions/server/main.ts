/**
 * server door: `npm start` locally (models from ./models), the container entry point elsewhere (Cloud Run,
 * ECS). Configured by ONNX_SERVE_* variables (see the README and docs/containers.md).
 *
 * Lifecycle: listen at once (liveness answers while models load), preload the models listed in
 * ONNX_SERVE_PRELOAD, then report ready. A preload that fails keeps the server not ready, is logged, and
 * is retried with backoff; the platform's startup probe decides when to give up and restart the
 * container. SIGTERM (or SIGINT) turns readiness off, stops accepting, drains in-flight requests within
 * ONNX_SERVE_SHUTDOWN_GRACE_MS, releases the sessions and exits 0.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServingConfig } from '../../shared/core/config';
import { ModelLoadBackoffError } from '../../shared/core/errors';
import { PROMETHEUS_CONTENT_TYPE } from '../../shared/core/metrics/registry';
import { configFromEnv, createRuntime, type Runtime, type RuntimeParts } from '../../shared/runtime/runtime';
import { type RunningServer, startHttpServer } from './http-server';

export interface ServerInstance {
  readonly url: string;
  readonly runtime: Runtime;
  readonly server: RunningServer;
  /** Preloaded models are loaded and warm, and no shutdown has begun (`/v2/health/ready`). */
  isReady(): boolean;
  /** Settles once the preload is done (or abandoned by a shutdown). */
  readonly preloaded: Promise<void>;
  /** Stops accepting, drains in-flight requests within the grace period, then releases the sessions. */
  shutdown(): Promise<void>;
}

export interface StartServerOptions {
  /** Backoff between preload attempts of a model that failed to load: doubles from `initialMs` to `maxMs`. */
  readonly preloadRetry?: { readonly initialMs: number; readonly maxMs: number };
}

/** Builds the runtime with Prometheus metrics and the dynamic batcher, listens, and starts preloading. */
export async function startServer(
  config: ServingConfig,
  parts: RuntimeParts = {},
  options: StartServerOptions = {},
): Promise<ServerInstance> {
  let preloaded = config.preload.length === 0;
  let stopping = false;
  const isReady = () => preloaded && !stopping;
  const runtime = createRuntime(config, {
    withPrometheus: true,
    queueing: true,
    dynamicBatching: config.dynamicBatching,
    workerEngine: true,
    isReady,
    ...parts,
  });
  const { logger, prometheus } = runtime;
  const server = await startHttpServer({
    app: runtime.app,
    host: config.server.host,
    port: config.server.port,
    maxBodyBytes: config.limits.maxBodyBytes,
    maxInflightBytes: config.server.maxInflightBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    shutdownGraceMs: config.server.shutdownGraceMs,
    gate: runtime.gate,
    onUnexpectedError: (error) => logger.error('request failed', { error: error as Error }),
    onClientGone: (details) => logger.info('client disconnected mid-upload', { ...details }),
    ...(prometheus === undefined
      ? {}
      : { metrics: { contentType: PROMETHEUS_CONTENT_TYPE, render: () => prometheus.registry.render() } }),
  });
  logger.info('listening', {
    url: server.url,
    repository: runtime.registry.location,
    model: config.pinnedModel,
    dynamicBatching: config.dynamicBatching ? 'on' : 'off',
    maxQueueSize: config.server.maxQueueSize,
    maxInflightMb: config.server.maxInflightBytes / 2 ** 20,
    engineThread: config.engineThread,
    preload: config.preload,
  });

  const stopPreload = new AbortController();
  const retry = options.preloadRetry ?? { initialMs: 1000, maxMs: 30_000 };
  const preload = async (): Promise<void> => {
    for (const name of config.preload) {
      for (let delay = retry.initialMs; ; delay = Math.min(delay * 2, retry.maxMs)) {
        if (stopPreload.signal.aborted) return;
        try {
          await runtime.service.load(name);
          logger.info('preloaded', { model: name });
          break;
        } catch (error) {
          // A failure still in its backoff was logged when it happened: wait for the backoff to end.
          const remembered = error instanceof ModelLoadBackoffError;
          const wait = remembered ? Math.max(delay, error.retryInMs) : delay;
          if (!remembered) {
            logger.error('preload failed: not ready, retrying', {
              model: name,
              retryInMs: wait,
              error: error as Error,
            });
          }
          await sleep(wait, undefined, { signal: stopPreload.signal }).catch(() => undefined);
        }
      }
    }
    if (!stopPreload.signal.aborted) preloaded = true;
  };

  let stopped: Promise<void> | undefined;
  return {
    url: server.url,
    runtime,
    server,
    isReady,
    preloaded: preload(),
    shutdown: () => {
      stopped ??= (async () => {
        stopping = true;
        stopPreload.abort();
        await server.close();
        await runtime.cache.clear();
      })();
      return stopped;
    },
  };
}

async function main(): Promise<void> {
  const instance = await startServer(configFromEnv());
  const { logger } = instance.runtime;
  const shutdown = (signal: string) => {
    logger.info('shutting down', { signal, inFlight: instance.server.inFlight() });
    instance.shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error('shutdown failed', { error: error as Error });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  await instance.preloaded;
  if (instance.isReady()) logger.info('ready', { preloaded: instance.runtime.config.preload });
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
