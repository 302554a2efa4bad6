/**
 * Serving events as Prometheus metrics, for the container door's `GET /metrics`: requests and their
 * latency per model and outcome, the dynamic batcher's queue depth and batch sizes, model loads (cold
 * starts), their duration, provider fallbacks and cache lookups. Logs stay with the Powertools telemetry;
 * the runtime combines both.
 */
import { type Counter, type Gauge, type Histogram, MetricsRegistry } from '../core/metrics/registry';
import type { ServingEvent, Telemetry } from '../core/ports';

/** Seconds; from a millisecond model run to a long queue wait. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Rows per engine run. */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/** Seconds; from a small model off the disk tier to a large one off S3 onto a GPU. */
export const LOAD_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Outcomes that name no model the repository has: their client-chosen name would be unbounded. */
const UNKNOWN_MODEL_OUTCOMES = new Set(['model_not_found', 'route_not_found']);

/**
 * Feeds a {@link MetricsRegistry} from serving events. Metric names start with `onnx_serve_`.
 *
 * @example
 * const prometheus = new PrometheusTelemetry();
 * const telemetry = combineTelemetry(powertools, prometheus);
 * // GET /metrics: prometheus.registry.render()
 */
export class PrometheusTelemetry implements Telemetry {
  readonly registry: MetricsRegistry;
  readonly #requests: Counter;
  readonly #requestSeconds: Histogram;
  readonly #queueDepth: Gauge;
  readonly #batchRows: Histogram;
  readonly #batchSeconds: Histogram;
  readonly #coldStarts: Counter;
  readonly #loadSeconds: Histogram;
  readonly #loadFailures: Counter;
  readonly #fallbacks: Counter;
  readonly #variantFallbacks: Counter;
  readonly #warmupFailures: Counter;
  readonly #provider: Gauge;
  readonly #cache: Counter;
  readonly #evictions: Counter;
  readonly #downloadRetries: Counter;
  readonly #configRejections: Counter;
  readonly #rolloutFailures: Counter;

  constructor(registry: MetricsRegistry = new MetricsRegistry()) {
    this.registry = registry;
    const r = registry;
    this.#requests = r.counter(
      'onnx_serve_requests_total',
      'Inference requests answered, by model and outcome (success or the error code).',
      ['model', 'outcome'],
    );
    this.#requestSeconds = r.histogram(
      'onnx_serve_request_duration_seconds',
      'Time to answer an inference request (decode, queue, run, encode), by model and outcome.',
      ['model', 'outcome'],
      LATENCY_BUCKETS,
    );
    this.#queueDepth = r.gauge(
      'onnx_serve_queue_depth',
      'Requests waiting in the dynamic batching queue of a model version.',
      ['model', 'version'],
    );
    this.#batchRows = r.histogram(
      'onnx_serve_batch_size',
      'Rows per engine run of the dynamic batcher.',
      ['model'],
      BATCH_SIZE_BUCKETS,
    );
    this.#batchSeconds = r.histogram(
      'onnx_serve_batch_duration_seconds',
      'Engine run time of one dynamic batch.',
      ['model'],
      LATENCY_BUCKETS,
    );
    this.#coldStarts = r.counter(
      'onnx_serve_model_cold_starts_total',
      'Model versions loaded into this instance (each load is a cold start of that model), by source.',
      ['model', 'source'],
    );
    this.#loadSeconds = r.histogram(
      'onnx_serve_model_load_duration_seconds',
      'Time to load a model: fetch, verify, create the session and warm it up.',
      ['model'],
      LOAD_BUCKETS,
    );
    this.#loadFailures = r.counter('onnx_serve_model_load_failures_total', 'Model loads that failed.', [
      'model',
    ]);
    this.#fallbacks = r.counter(
      'onnx_serve_provider_fallbacks_total',
      'Execution providers that could not load a model (the next one was tried).',
      ['model', 'provider'],
    );
    this.#variantFallbacks = r.counter(
      'onnx_serve_variant_fallbacks_total',
      'Loads where the precision variant the deployment chose could not serve (the default file did).',
      ['model', 'variant'],
    );
    this.#warmupFailures = r.counter(
      'onnx_serve_warmup_failures_total',
      'Default warm-up runs that failed; the model version serves without a warm-up.',
      ['model'],
    );
    this.#provider = r.gauge(
      'onnx_serve_model_provider_info',
      '1 for the execution provider and variant (empty: the default file) a model version was last loaded with.',
      ['model', 'version', 'provider', 'variant'],
    );
    this.#cache = r.counter(
      'onnx_serve_cache_lookups_total',
      'Session cache lookups, by result (hit or miss).',
      ['model', 'result'],
    );
    this.#evictions = r.counter(
      'onnx_serve_model_evictions_total',
      'Sessions evicted from the memory cache.',
      ['model'],
    );
    this.#downloadRetries = r.counter(
      'onnx_serve_download_retries_total',
      'Parts of model downloads (and config.json reads) read again after their body broke.',
      ['model'],
    );
    this.#configRejections = r.counter(
      'onnx_serve_config_rejections_total',
      'Re-read config.json documents that could not be used (the last good one was kept).',
      ['model'],
    );
    this.#rolloutFailures = r.counter(
      'onnx_serve_rollout_failures_total',
      'New default versions that could not load while an older one kept serving.',
      ['model'],
    );
  }

  emit(event: ServingEvent): void {
    switch (event.type) {
      case 'request': {
        const model = UNKNOWN_MODEL_OUTCOMES.has(event.outcome) ? '' : event.model;
        const labels = { model, outcome: event.outcome };
        this.#requests.inc(labels);
        this.#requestSeconds.observe(labels, event.ms / 1000);
        return;
      }
      case 'queue':
        this.#queueDepth.set({ model: event.model, version: event.version }, event.depth);
        return;
      case 'batch':
        this.#batchRows.observe({ model: event.model }, event.rows);
        this.#batchSeconds.observe({ model: event.model }, event.ms / 1000);
        return;
      case 'model-loaded': {
        const ms = event.downloadMs + event.verifyMs + event.createMs + event.warmupMs;
        this.#coldStarts.inc({ model: event.model, source: event.source });
        this.#loadSeconds.observe({ model: event.model }, ms / 1000);
        this.#provider.set(
          {
            model: event.model,
            version: event.version,
            provider: event.provider,
            variant: event.variant ?? '',
          },
          1,
        );
        return;
      }
      case 'model-load-failed':
        this.#loadFailures.inc({ model: event.model });
        return;
      case 'warmup-failed':
        this.#warmupFailures.inc({ model: event.model });
        return;
      case 'provider-fallback':
        this.#fallbacks.inc({ model: event.model, provider: event.provider });
        return;
      case 'cache':
        this.#cache.inc({ model: event.model, result: event.hit ? 'hit' : 'miss' });
        return;
      case 'model-evicted':
        this.#evictions.inc({ model: event.model });
        return;
      case 'download-retry':
        this.#downloadRetries.inc({ model: event.model });
        return;
      case 'config-rejected':
        this.#configRejections.inc({ model: event.model });
        return;
      case 'rollout-held':
        this.#rolloutFailures.inc({ model: event.model });
        return;
      case 'variant-fallback':
        this.#variantFallbacks.inc({ model: event.model, variant: event.variant });
        return;
      case 'disk-cache-write-failed':
      case 'input-rejected':
      case 'inference':
        return;
    }
  }
}
