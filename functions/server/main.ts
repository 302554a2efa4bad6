/**
 * server door: `npm start` locally (models from ./models), the container entry point elsewhere.
 * Configured by ONNX_SERVE_* variables (see the README); SIGTERM drains and exits.
 */
import { configFromEnv, createRuntime } from '../../shared/runtime/runtime';
import { startHttpServer } from './http-server';

async function main(): Promise<void> {
  const config = configFromEnv();
  let ready = config.preload.length === 0;
  const runtime = createRuntime(config, { isReady: () => ready });
  const { logger } = runtime;
  const server = await startHttpServer({
    app: runtime.app,
    host: config.server.host,
    port: config.server.port,
    maxBodyBytes: config.limits.maxBodyBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    shutdownGraceMs: config.server.shutdownGraceMs,
    onUnexpectedError: (error) => logger.error('request failed', { error: error as Error }),
  });
  logger.info('listening', {
    url: server.url,
    repository: runtime.registry.location,
    model: config.pinnedModel,
  });

  const shutdown = (signal: string) => {
    logger.info('shutting down', { signal, inFlight: server.inFlight() });
    void server
      .close()
      .then(() => runtime.cache.clear())
      .then(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);

  for (const name of config.preload) {
    await runtime.service.load(name);
    logger.info('preloaded', { model: name });
  }
  ready = true;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
