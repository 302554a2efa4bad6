/**
 * The server door over real HTTP with the real onnxruntime-node and the linear model: dynamic batching
 * under concurrent load, load shedding, client disconnects, draining, readiness and /metrics.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { ModelLoadError } from '../../shared/core/errors';
import type { ModelStore } from '../../shared/core/ports';
import type { RuntimeParts } from '../../shared/runtime/runtime';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { deferred } from '../support/fakes';
import { expectClose } from '../support/golden';
import {
  call,
  get,
  linearRequest,
  metric,
  post,
  type Reply,
  serverConfig,
  waitFor,
  writeRepository,
} from '../support/server-harness';

const INFER = '/v2/models/linear/infer';
const running: ServerInstance[] = [];
const dirs: string[] = [];

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

interface StartOptions {
  readonly batching?: Record<string, number>;
  readonly env?: Record<string, string>;
  readonly parts?: (dir: string) => RuntimeParts;
  readonly waitForPreload?: boolean;
}

async function startLinear(options: StartOptions = {}): Promise<ServerInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'server-test-'));
  dirs.push(dir);
  const config = {
    maxBatchSize: 64,
    ...(options.batching === undefined ? {} : { dynamicBatching: options.batching }),
  };
  await writeRepository(dir, [{ name: 'linear', bytes: buildLinearModel(), config }]);
  const instance = await startServer(
    serverConfig(dir, { ONNX_SERVE_PRELOAD: 'linear', ...options.env }),
    options.parts?.(dir) ?? {},
    { preloadRetry: { initialMs: 5, maxMs: 20 } },
  );
  running.push(instance);
  if (options.waitForPreload !== false) await instance.preloaded;
  return instance;
}

function metrics(server: ServerInstance): string {
  return server.runtime.prometheus?.registry.render() ?? '';
}

/** Deterministic rows of 10 features in [-2, 2). */
function rowsFor(request: number, count: number): number[][] {
  let state = (request + 1) * 2654435761;
  const next = () => {
    state = (Math.imul(state ^ (state >>> 15), 2246822519) + 0x6d2b79f5) >>> 0;
    return (state / 2 ** 32) * 4 - 2;
  };
  return Array.from({ length: count }, () => Array.from({ length: 10 }, next));
}

/** The linear model run on each request alone, in this process: the unbatched reference. */
async function unbatched(requests: readonly number[][][]): Promise<Float32Array[]> {
  const engine = new OrtEngine({ defaultIntraOpThreads: 1 });
  const model = await engine.load(
    { bytes: buildLinearModel(), format: 'onnx' },
    {
      graphOptimizationLevel: 'all',
      intraOpThreads: 1,
      interOpThreads: 1,
      executionProviders: ['cpu'],
      useModelBytesDirectly: false,
      disablePrepacking: false,
    },
  );
  try {
    const outputs: Float32Array[] = [];
    for (const rows of requests) {
      const x = { datatype: 'FP32' as const, shape: [rows.length, 10], data: Float32Array.from(rows.flat()) };
      outputs.push((await model.run({ x })).y?.data as Float32Array);
    }
    return outputs;
  } finally {
    await model.release();
  }
}

function outputOf(reply: Reply): number[] {
  expect(reply.status).toBe(200);
  return reply.json.outputs[0].data as number[];
}

describe('server door', () => {
  describe('dynamic batching', () => {
    it('answers 64 concurrent clients through batches, each with exactly its own rows, equal to unbatched runs', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 16, maxQueueDelayMs: 20, maxQueueSize: 1024 },
      });
      const requests = Array.from({ length: 64 }, (_, i) => rowsFor(i, 1 + (i % 3)));
      const replies = await Promise.all(requests.map((rows) => post(server.url, INFER, linearRequest(rows))));
      const expected = await unbatched(requests);
      for (const [i, reply] of replies.entries()) {
        expect(reply.json.outputs[0].shape).toEqual([requests[i]?.length, 2]);
        expectClose(outputOf(reply), expected[i] as Float32Array, { atol: 1e-5, rtol: 1e-5 });
      }
      const text = metrics(server);
      const rows = requests.reduce((n, r) => n + r.length, 0);
      expect(metric(text, 'onnx_serve_batch_size_sum', { model: 'linear' })).toBe(rows);
      const runs = metric(text, 'onnx_serve_batch_size_count', { model: 'linear' }) as number;
      expect(runs).toBeLessThan(64); // requests were stacked
      expect(metric(text, 'onnx_serve_batch_size_bucket', { model: 'linear', le: '16' })).toBe(runs);
      expect(metric(text, 'onnx_serve_queue_depth', { model: 'linear', version: '1' })).toBe(0);
    });

    it('fails a request whose rows fail validation alone, answering its neighbours', async () => {
      const server = await startLinear({ batching: { maxBatchSize: 64, maxQueueDelayMs: 20 } });
      const good = Array.from({ length: 6 }, (_, i) => rowsFor(i, 2));
      const bad = JSON.stringify({
        inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 9], data: Array(9).fill(1) }],
      });
      const replies = await Promise.all([
        ...good.slice(0, 3).map((rows) => post(server.url, INFER, linearRequest(rows))),
        post(server.url, INFER, bad),
        ...good.slice(3).map((rows) => post(server.url, INFER, linearRequest(rows))),
      ]);
      const expected = await unbatched(good);
      expect(replies[3]?.status).toBe(400);
      expect(replies[3]?.json.error).toMatch(/input 'x': dim 1 is 9/);
      const answered = replies.filter((_, i) => i !== 3);
      for (const [i, reply] of answered.entries()) {
        expectClose(outputOf(reply), expected[i] as Float32Array, { atol: 1e-5 });
      }
    });

    it('runs every request alone when ONNX_SERVE_DYNAMIC_BATCHING is off', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 16, maxQueueDelayMs: 20 },
        env: { ONNX_SERVE_DYNAMIC_BATCHING: 'off' },
      });
      const requests = Array.from({ length: 8 }, (_, i) => rowsFor(i, 1));
      const replies = await Promise.all(requests.map((rows) => post(server.url, INFER, linearRequest(rows))));
      const expected = await unbatched(requests);
      for (const [i, reply] of replies.entries()) {
        expectClose(outputOf(reply), expected[i] as Float32Array, { atol: 1e-5 });
      }
      expect(metric(metrics(server), 'onnx_serve_batch_size_count', { model: 'linear' })).toBeUndefined();
    });
  });

  describe('load shedding', () => {
    it('refuses a request past the queue bound at once with 503 and Retry-After, never a timeout', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 64, maxQueueDelayMs: 1000, maxQueueSize: 2 },
      });
      let queuedDone = false;
      const queued = [0, 1].map((i) => post(server.url, INFER, linearRequest(rowsFor(i, 1))));
      void Promise.all(queued).then(() => {
        queuedDone = true;
      });
      await waitFor(
        () => metric(metrics(server), 'onnx_serve_queue_depth', { model: 'linear', version: '1' }) === 2,
      );
      const refused = await post(server.url, INFER, linearRequest(rowsFor(2, 1)));
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.json.error).toMatch(/model 'linear' has 2 requests queued/);
      expect(queuedDone).toBe(false); // answered while the queue still waited
      for (const reply of await Promise.all(queued)) expect(reply.status).toBe(200);
      expect(
        metric(metrics(server), 'onnx_serve_requests_total', { model: 'linear', outcome: 'overloaded' }),
      ).toBe(1);
    });

    it('drops a request from the queue when its client disconnects: it never runs', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 64, maxQueueDelayMs: 300, maxQueueSize: 10 },
      });
      const gone = call(server.url, 'POST', INFER, linearRequest(rowsFor(0, 3)));
      const depth = () =>
        metric(metrics(server), 'onnx_serve_queue_depth', { model: 'linear', version: '1' });
      await waitFor(() => depth() === 1);
      gone.abort();
      await expect(gone.reply).rejects.toThrow();
      await waitFor(() => depth() === 0);
      const kept = await post(server.url, INFER, linearRequest(rowsFor(1, 1)));
      expectClose(outputOf(kept), (await unbatched([rowsFor(1, 1)]))[0] as Float32Array, { atol: 1e-5 });
      const text = metrics(server);
      expect(metric(text, 'onnx_serve_batch_size_count', { model: 'linear' })).toBe(1);
      expect(metric(text, 'onnx_serve_batch_size_sum', { model: 'linear' })).toBe(1);
      expect(metric(text, 'onnx_serve_requests_total', { model: 'linear', outcome: 'request_aborted' })).toBe(
        1,
      );
    });
  });

  describe('draining', () => {
    it('stops accepting, answers the requests in flight, then closes', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 64, maxQueueDelayMs: 300 },
        env: { ONNX_SERVE_SHUTDOWN_GRACE_MS: '30000' },
      });
      const requests = [0, 1, 2].map((i) => rowsFor(i, 2));
      const inFlight = requests.map((rows) => post(server.url, INFER, linearRequest(rows)));
      await waitFor(() => server.server.inFlight() === 3);
      const closed = server.shutdown();
      expect(server.isReady()).toBe(false);
      await expect(get(server.url, '/v2/health/live')).rejects.toThrow(/ECONNREFUSED/);
      const replies = await Promise.all(inFlight);
      const expected = await unbatched(requests);
      for (const [i, reply] of replies.entries()) {
        expectClose(outputOf(reply), expected[i] as Float32Array, { atol: 1e-5 });
      }
      await closed;
      expect(server.server.inFlight()).toBe(0);
    });

    it('cuts requests still queued when the grace period ends; they never run', async () => {
      const server = await startLinear({
        batching: { maxBatchSize: 64, maxQueueDelayMs: 10_000 },
        env: { ONNX_SERVE_SHUTDOWN_GRACE_MS: '50' },
      });
      const late = post(server.url, INFER, linearRequest(rowsFor(0, 1)));
      await waitFor(() => server.runtime.batcher?.queued === 1);
      await server.shutdown();
      await expect(late).rejects.toThrow(/socket hang up|ECONNRESET/);
      await waitFor(() => server.runtime.batcher?.queued === 0);
      expect(metric(metrics(server), 'onnx_serve_batch_size_count', { model: 'linear' })).toBeUndefined();
    });
  });

  describe('readiness', () => {
    it('is live at once and ready only when the preloaded model is loaded and warm', async () => {
      const gate = deferred();
      const server = await startLinear({
        waitForPreload: false,
        parts: (dir) => ({ store: gatedStore(new FileModelStore(dir), gate.promise) }),
      });
      expect(await get(server.url, '/v2/health/live')).toMatchObject({ status: 200, json: { live: true } });
      expect(await get(server.url, '/v2/health/ready')).toMatchObject({
        status: 503,
        json: { ready: false },
      });
      gate.resolve();
      await server.preloaded;
      expect(await get(server.url, '/v2/health/ready')).toMatchObject({ status: 200, json: { ready: true } });
      expect(server.runtime.cache.loadedKeys().map((k) => k.model)).toEqual(['linear']);
    });

    it('stays not ready while the preload fails, logs each failure and retries until it loads', async () => {
      const errors = jest.spyOn(Logger.prototype, 'error');
      let failures = 3;
      const gate = deferred();
      const server = await startLinear({
        waitForPreload: false,
        parts: (dir) => ({
          store: failingStore(new FileModelStore(dir), () => failures-- > 0, gate.promise),
        }),
      });
      await waitFor(
        () => metric(metrics(server), 'onnx_serve_model_load_failures_total', { model: 'linear' }) === 2,
      );
      expect(await get(server.url, '/v2/health/ready')).toMatchObject({
        status: 503,
        json: { ready: false },
      });
      expect(await get(server.url, '/v2/health/live')).toMatchObject({ status: 200 });
      gate.resolve();
      await server.preloaded;
      expect(server.isReady()).toBe(true);
      expect(metric(metrics(server), 'onnx_serve_model_load_failures_total', { model: 'linear' })).toBe(3);
      const logged = errors.mock.calls.filter(
        ([message]) => message === 'preload failed: not ready, retrying',
      );
      expect(logged).toHaveLength(3);
      expect(logged[0]?.[1]).toMatchObject({ model: 'linear' });
    });
  });

  describe('/metrics', () => {
    it('serves request counts and latency per model and outcome, cold starts and load time', async () => {
      const server = await startLinear({ batching: { maxBatchSize: 8, maxQueueDelayMs: 1 } });
      await post(server.url, INFER, linearRequest(rowsFor(0, 1)));
      await post(server.url, '/v2/models/linear/predict', JSON.stringify(rowsFor(1, 2)));
      await post(server.url, INFER, JSON.stringify({ inputs: [] }));
      await post(server.url, '/v2/models/no-such-model/infer', linearRequest(rowsFor(0, 1)));
      const reply = await get(server.url, '/metrics');
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
      const text = reply.text;
      expect(text).toContain('# TYPE onnx_serve_requests_total counter');
      expect(text).toContain('# TYPE onnx_serve_request_duration_seconds histogram');
      expect(metric(text, 'onnx_serve_requests_total', { model: 'linear', outcome: 'success' })).toBe(2);
      expect(metric(text, 'onnx_serve_requests_total', { model: 'linear', outcome: 'invalid_input' })).toBe(
        1,
      );
      expect(metric(text, 'onnx_serve_requests_total', { model: '', outcome: 'model_not_found' })).toBe(1);
      expect(
        metric(text, 'onnx_serve_request_duration_seconds_count', { model: 'linear', outcome: 'success' }),
      ).toBe(2);
      expect(
        metric(text, 'onnx_serve_request_duration_seconds_bucket', {
          model: 'linear',
          outcome: 'success',
          le: '+Inf',
        }),
      ).toBe(2);
      expect(metric(text, 'onnx_serve_model_cold_starts_total', { model: 'linear', source: 'store' })).toBe(
        1,
      );
      expect(metric(text, 'onnx_serve_model_load_duration_seconds_count', { model: 'linear' })).toBe(1);
      expect(metric(text, 'onnx_serve_queue_depth', { model: 'linear', version: '1' })).toBe(0);
      expect(metric(text, 'onnx_serve_batch_size_sum', { model: 'linear' })).toBe(3);
      expect(
        metric(text, 'onnx_serve_model_provider_info', {
          model: 'linear',
          version: '1',
          provider: 'cpu',
          variant: '',
        }),
      ).toBe(1);
      expect((await call(server.url, 'POST', '/metrics', '{}').reply).status).toBe(405);
    });
  });
});

/** A store whose artifact reads wait for `gate`. */
function gatedStore(inner: ModelStore, gate: Promise<void>): ModelStore {
  return {
    location: inner.location,
    readConfig: (model, etag) => inner.readConfig(model, etag),
    readArtifact: async (...args) => {
      await gate;
      return inner.readArtifact(...args);
    },
    listModels: () => inner.listModels(),
  };
}

/** A store whose artifact reads fail while `fail()` says so, the last failure held until `gate`. */
function failingStore(inner: ModelStore, fail: () => boolean, gate: Promise<void>): ModelStore {
  let calls = 0;
  return {
    ...gatedStore(inner, Promise.resolve()),
    readArtifact: async (...args) => {
      calls += 1;
      if (calls === 3) await gate;
      if (fail()) throw new ModelLoadError('the model store is down');
      return inner.readArtifact(...args);
    },
  };
}
