import { PrometheusTelemetry } from '../../shared/adapters/prometheus-telemetry';
import { combineTelemetry } from '../../shared/core/metrics/combine-telemetry';
import type { ServingEvent, Telemetry } from '../../shared/core/ports';
import { RecordingTelemetry } from '../support/fakes';

function render(...events: ServingEvent[]): string {
  const telemetry = new PrometheusTelemetry();
  for (const event of events) telemetry.emit(event);
  return telemetry.registry.render();
}

describe('PrometheusTelemetry', () => {
  it('counts requests and their latency per model and outcome', () => {
    const text = render(
      { type: 'request', model: 'linear', outcome: 'success', status: 200, ms: 3 },
      { type: 'request', model: 'linear', outcome: 'success', status: 200, ms: 20 },
      { type: 'request', model: 'linear', outcome: 'overloaded', status: 503, ms: 0.1 },
    );
    expect(text).toContain('onnx_serve_requests_total{model="linear",outcome="success"} 2');
    expect(text).toContain('onnx_serve_requests_total{model="linear",outcome="overloaded"} 1');
    expect(text).toContain(
      'onnx_serve_request_duration_seconds_bucket{model="linear",outcome="success",le="0.005"} 1',
    );
    expect(text).toContain(
      'onnx_serve_request_duration_seconds_bucket{model="linear",outcome="success",le="0.025"} 2',
    );
    expect(text).toContain('onnx_serve_request_duration_seconds_sum{model="linear",outcome="success"} 0.023');
  });

  it('does not let clients mint a series per unknown model name', () => {
    const text = render(
      { type: 'request', model: 'no-such-1', outcome: 'model_not_found', status: 404, ms: 1 },
      { type: 'request', model: 'no-such-2', outcome: 'model_not_found', status: 404, ms: 1 },
    );
    expect(text).toContain('onnx_serve_requests_total{model="",outcome="model_not_found"} 2');
    expect(text).not.toContain('no-such');
  });

  it('counts default warm-up runs that failed while the model served', () => {
    const text = render(
      { type: 'warmup-failed', model: 'vad', version: '1', error: new Error('Pad reflect') },
      { type: 'warmup-failed', model: 'vad', version: '2', error: new Error('Pad reflect') },
    );
    expect(text).toContain('onnx_serve_warmup_failures_total{model="vad"} 2');
  });

  it('records queue depth, batch sizes, cold starts, load time, providers and fallbacks', () => {
    const text = render(
      { type: 'queue', model: 'linear', version: '1', depth: 5 },
      { type: 'queue', model: 'linear', version: '1', depth: 2 },
      { type: 'batch', model: 'linear', version: '1', rows: 12, requests: 5, ms: 2 },
      {
        type: 'provider-fallback',
        model: 'linear',
        version: '1',
        provider: 'cuda',
        variant: 'fp16',
        error: new Error('no CUDA'),
      },
      {
        type: 'model-loaded',
        model: 'linear',
        version: '1',
        format: 'onnx',
        source: 'store',
        bytes: 100,
        downloadMs: 100,
        verifyMs: 10,
        createMs: 300,
        warmupMs: 90,
        provider: 'cpu',
      },
      { type: 'model-load-failed', model: 'other', version: '1', error: new Error('x') },
      { type: 'cache', model: 'linear', version: '1', hit: true },
    );
    expect(text).toContain('onnx_serve_queue_depth{model="linear",version="1"} 2');
    expect(text).toContain('onnx_serve_batch_size_bucket{model="linear",le="8"} 0');
    expect(text).toContain('onnx_serve_batch_size_bucket{model="linear",le="16"} 1');
    expect(text).toContain('onnx_serve_model_cold_starts_total{model="linear",source="store"} 1');
    expect(text).toContain('onnx_serve_model_load_duration_seconds_sum{model="linear"} 0.5');
    expect(text).toContain('onnx_serve_model_load_duration_seconds_bucket{model="linear",le="0.5"} 1');
    expect(text).toContain(
      'onnx_serve_model_provider_info{model="linear",version="1",provider="cpu",variant=""} 1',
    );
    expect(text).toContain('onnx_serve_provider_fallbacks_total{model="linear",provider="cuda"} 1');
    expect(text).toContain('onnx_serve_model_load_failures_total{model="other"} 1');
    expect(text).toContain('onnx_serve_cache_lookups_total{model="linear",result="hit"} 1');
  });
});

describe('combineTelemetry', () => {
  it('hands each event to every sink, even past one that throws', () => {
    const first = new RecordingTelemetry();
    const failing: Telemetry = {
      emit: () => {
        throw new Error('sink down');
      },
    };
    const last = new RecordingTelemetry();
    const event: ServingEvent = { type: 'queue', model: 'm', version: '1', depth: 1 };
    combineTelemetry(first, failing, last).emit(event);
    expect(first.events).toEqual([event]);
    expect(last.events).toEqual([event]);
  });
});
