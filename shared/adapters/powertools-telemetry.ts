/**
 * Serving events as structured JSON logs (Powertools Logger) and CloudWatch metrics in the embedded
 * metric format (Powertools Metrics). Metrics are flushed per invocation by the Lambda door's middleware;
 * outside Lambda they are left unset and only logs are written.
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { ServingEvent, Telemetry } from '../core/ports';

export class PowertoolsTelemetry implements Telemetry {
  constructor(
    private readonly logger: Logger,
    private readonly metrics: Metrics | undefined,
  ) {}

  emit(event: ServingEvent): void {
    const m = this.metrics;
    switch (event.type) {
      case 'model-loaded':
        this.logger.info('model loaded', { ...event });
        m?.addMetric('ModelDownloadTime', MetricUnit.Milliseconds, event.downloadMs);
        m?.addMetric('SessionCreationTime', MetricUnit.Milliseconds, event.createMs);
        m?.addMetric('WarmupTime', MetricUnit.Milliseconds, event.warmupMs);
        m?.addMetric('ModelBytesLoaded', MetricUnit.Bytes, event.bytes);
        return;
      case 'model-load-failed':
        this.logger.error('model load failed', {
          model: event.model,
          version: event.version,
          error: event.error,
        });
        m?.addMetric('ModelLoadFailures', MetricUnit.Count, 1);
        return;
      case 'warmup-failed':
        // Not an error: the session serves; the default warm-up guessed inputs the model does not take.
        this.logger.warn(
          'default warm-up run failed; the model serves without it (give it inputs in config.json session.warmup)',
          { model: event.model, version: event.version, error: event.error },
        );
        m?.addMetric('WarmupFailures', MetricUnit.Count, 1);
        return;
      case 'input-rejected':
        // A client error, but the vendor's reason (C++ location and check) is only here, not in the answer.
        this.logger.warn('onnxruntime refused a request', {
          model: event.model,
          version: event.version,
          error: event.error,
        });
        return;
      case 'provider-fallback':
        // Not an error: the model still loads on a later provider (e.g. CPU where CUDA is missing).
        this.logger.warn('execution provider could not load the model, trying the next one', {
          model: event.model,
          version: event.version,
          provider: event.provider,
          variant: event.variant,
          error: event.error,
        });
        m?.addMetric('ProviderFallbacks', MetricUnit.Count, 1);
        return;
      case 'variant-fallback':
        // The deployment asked for a variant this version cannot serve with: float32 answers instead.
        this.logger.warn('precision variant not served, the default file serves instead', {
          model: event.model,
          version: event.version,
          variant: event.variant,
          reason: event.reason,
          ...(event.error === undefined ? {} : { error: event.error }),
        });
        m?.addMetric('VariantFallbacks', MetricUnit.Count, 1);
        return;
      case 'model-evicted':
        this.logger.info('model evicted', { ...event });
        m?.addMetric('ModelEvictions', MetricUnit.Count, 1);
        return;
      case 'cache':
        m?.addMetric(event.hit ? 'CacheHits' : 'CacheMisses', MetricUnit.Count, 1);
        return;
      case 'disk-cache-write-failed':
        this.logger.warn('disk cache write failed', { sha256: event.sha256, error: event.error });
        return;
      case 'inference':
        this.logger.debug('inference', { ...event });
        m?.addMetric('InferenceTime', MetricUnit.Milliseconds, event.ms);
        return;
      case 'download-retry':
        this.logger.warn('download interrupted, reading the part again', { ...event });
        m?.addMetric('DownloadRetries', MetricUnit.Count, 1);
        return;
      case 'config-rejected':
        this.logger.error('config.json re-read could not be used, keeping the last good one', {
          model: event.model,
          error: event.error,
        });
        m?.addMetric('ConfigRejections', MetricUnit.Count, 1);
        return;
      case 'rollout-held':
        this.logger.error('new default version could not load, the serving version keeps serving', {
          model: event.model,
          version: event.version,
          sha256: event.sha256,
          serving: event.serving,
          error: event.error,
        });
        m?.addMetric('RolloutFailures', MetricUnit.Count, 1);
        return;
    }
  }
}
