import { type BatcherTimers, DynamicBatcher, RequestAbortedError } from '../../shared/core/dynamic-batcher';
import { InvalidInputError, OverloadedError } from '../../shared/core/errors';
import { parseModelConfig } from '../../shared/core/model-config';
import type { ResolvedModel } from '../../shared/core/model-registry';
import type { LoadedModel } from '../../shared/core/ports';
import type { ModelSignature, Tensor } from '../../shared/core/tensor';
import { deferred, RecordingTelemetry } from '../support/fakes';

/** Time that moves only when a test says so, with the timers that fire on it. */
class ManualTime implements BatcherTimers {
  now = 0;
  #timers = new Map<number, { at: number; callback: () => void }>();
  #next = 1;

  readonly clock = () => this.now;

  set(callback: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, callback });
    return id;
  }

  clear(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  get pending(): number {
    return this.#timers.size;
  }

  /** Moves the clock by `ms`, firing due timers in time order, then lets settled work run. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.#timers.entries()]
        .filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].callback();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

const DOUBLER: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1], dims: ['batch', 'features'] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, -1], dims: ['batch', 'features'] }],
};

/** Doubles `x` into `y`; records the batch of every run; holds runs at `gate`; refuses NaN as ORT might. */
class RecordingModel implements LoadedModel {
  readonly provider = 'cpu';
  readonly runs: Tensor[] = [];
  gate: Promise<void> | undefined;
  constructor(
    readonly signature: ModelSignature = DOUBLER,
    private readonly compute: (feeds: Readonly<Record<string, Tensor>>) => Record<string, Tensor> = double,
  ) {}

  async run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    this.runs.push(feeds.x as Tensor);
    await this.gate;
    return this.compute(feeds);
  }

  async release(): Promise<void> {}

  get rowsPerRun(): number[] {
    return this.runs.map((t) => t.shape[0] as number);
  }
}

function double(feeds: Readonly<Record<string, Tensor>>): Record<string, Tensor> {
  const x = feeds.x as Tensor;
  const data = x.data as Float32Array;
  if (data.some(Number.isNaN)) throw new InvalidInputError(`input 'x' holds NaN`);
  return { y: { datatype: 'FP32', shape: x.shape, data: data.map((v) => v * 2) } };
}

function resolvedFor(batching: Record<string, number> | undefined, maxBatchSize = 64): ResolvedModel {
  const text = JSON.stringify({
    maxBatchSize,
    versions: { '1': { sha256: 'a'.repeat(64), size: 10 } },
    ...(batching === undefined ? {} : { dynamicBatching: batching }),
  });
  return {
    config: parseModelConfig('m', text),
    version: '1',
    format: 'onnx',
    sha256: 'a'.repeat(64),
    size: 10,
  };
}

/** A request of `rows` rows of width `width`, values `base + i`. */
function rowsOf(rows: number, base: number, width = 2): Record<string, Tensor> {
  const data = Float32Array.from({ length: rows * width }, (_, i) => base + i);
  return { x: { datatype: 'FP32', shape: [rows, width], data } };
}

function expectDoubled(result: Record<string, Tensor>, request: Record<string, Tensor>): void {
  const x = request.x as Tensor;
  expect(result.y?.shape).toEqual(x.shape);
  expect(Array.from(result.y?.data as Float32Array)).toEqual(
    Array.from(x.data as Float32Array, (v) => v * 2),
  );
}

function expectAllDoubled(
  answers: readonly Record<string, Tensor>[],
  requests: readonly Record<string, Tensor>[],
) {
  expect(answers).toHaveLength(requests.length);
  for (const [i, answer] of answers.entries()) expectDoubled(answer, requests[i] as Record<string, Tensor>);
}

function setup(options: { maxConcurrentBatches?: number } = {}) {
  const time = new ManualTime();
  const telemetry = new RecordingTelemetry();
  const batcher = new DynamicBatcher({ telemetry, clock: time.clock, timers: time, ...options });
  return { time, telemetry, batcher, run: batcher.runner };
}

describe('DynamicBatcher', () => {
  describe('batching', () => {
    it('stacks requests that arrive within maxQueueDelayMs into one run and gives each its own rows', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const requests = [rowsOf(1, 0), rowsOf(3, 100), rowsOf(2, 200)];
      const results = requests.map((feeds) => run(model, resolved, feeds, undefined));
      await time.advance(4);
      expect(model.runs).toHaveLength(0);
      await time.advance(1);
      expect(model.rowsPerRun).toEqual([6]);
      const answers = await Promise.all(results);
      expectAllDoubled(answers, requests);
    });

    it('runs a full batch at once, without waiting for the delay', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 4, maxQueueDelayMs: 1000 });
      const results = [rowsOf(2, 0), rowsOf(2, 10)].map((feeds) => run(model, resolved, feeds, undefined));
      await flush();
      expect(model.rowsPerRun).toEqual([4]);
      await Promise.all(results);
      expect(time.pending).toBe(0);
    });

    it('never stacks requests whose non-batch shapes differ', async () => {
      const { time, run } = setup({ maxConcurrentBatches: 2 });
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const wide = [rowsOf(1, 0, 3), rowsOf(2, 10, 3)];
      const narrow = [rowsOf(1, 50, 2), rowsOf(1, 60, 2)];
      const results = [...wide, ...narrow].map((feeds) => run(model, resolved, feeds, undefined));
      await time.advance(5);
      expect(model.runs.map((t) => t.shape)).toEqual([
        [3, 3],
        [2, 2],
      ]);
      const answers = await Promise.all(results);
      expectAllDoubled(answers, [...wide, ...narrow]);
    });

    it('never stacks requests that ask for different outputs', async () => {
      const { time, run } = setup({ maxConcurrentBatches: 2 });
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const results = [
        run(model, resolved, rowsOf(1, 0), ['y']),
        run(model, resolved, rowsOf(1, 1), undefined),
        run(model, resolved, rowsOf(1, 2), ['y']),
      ];
      await time.advance(5);
      expect(model.rowsPerRun.sort()).toEqual([1, 2]);
      await Promise.all(results);
    });

    it('splits a queue longer than maxBatchSize into batches in arrival order, keeping requests whole', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 4, maxQueueDelayMs: 5 });
      const gate = deferred();
      model.gate = gate.promise;
      const results = [run(model, resolved, rowsOf(1, 0), undefined)];
      await time.advance(5);
      for (const [i, rows] of [3, 2, 1, 3].entries())
        results.push(run(model, resolved, rowsOf(rows, i * 10), undefined));
      await time.advance(100);
      expect(model.rowsPerRun).toEqual([1]); // one batch at a time: the running one holds the only slot
      model.gate = undefined;
      gate.resolve();
      await Promise.all(results);
      expect(model.rowsPerRun).toEqual([1, 3, 3, 3]);
    });

    it('runs a request larger than maxBatchSize alone', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 4, maxQueueDelayMs: 5 });
      const big = rowsOf(6, 0);
      const results = [run(model, resolved, big, undefined), run(model, resolved, rowsOf(1, 100), undefined)];
      await time.advance(5);
      await Promise.all(results);
      expect(model.rowsPerRun).toEqual([6, 1]);
      expectDoubled(await (results[0] as Promise<Record<string, Tensor>>), big);
    });

    it('keeps order and gives every request its own rows under concurrent load', async () => {
      const { time, run, telemetry } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 8, maxQueueDelayMs: 2 });
      let gate = deferred();
      model.gate = gate.promise;
      const requests: Record<string, Tensor>[] = [];
      const results: Promise<Record<string, Tensor>>[] = [];
      // 200 requests of 1-3 rows, arriving over time while earlier batches are still running.
      for (let i = 0; i < 200; i++) {
        const feeds = rowsOf((i % 3) + 1, i * 1000);
        requests.push(feeds);
        results.push(run(model, resolved, feeds, undefined));
        if (i % 7 === 6) {
          await time.advance(1);
          gate.resolve();
          gate = deferred();
          model.gate = gate.promise;
          await flush();
        }
      }
      for (let i = 0; i < 100 && model.runs.length < 200; i++) {
        gate.resolve();
        gate = deferred();
        model.gate = gate.promise;
        await time.advance(2);
      }
      gate.resolve();
      model.gate = undefined;
      const answers = await Promise.all(results);
      expectAllDoubled(answers, requests);
      // Every run is a run of whole requests in arrival order: concatenated, the runs are the requests.
      const ran = model.runs.flatMap((t) => Array.from(t.data as Float32Array));
      const sent = requests.flatMap((r) => Array.from(r.x?.data as Float32Array));
      expect(ran).toEqual(sent);
      expect(Math.max(...model.rowsPerRun)).toBeLessThanOrEqual(8);
      expect(model.runs.length).toBeLessThan(200);
      const batches = telemetry.ofType('batch');
      expect(batches.reduce((n, b) => n + b.requests, 0)).toBe(200);
      expect(telemetry.ofType('queue').at(-1)?.depth).toBe(0);
    });

    it('grows the next batch while the current one runs (one run at a time by default)', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 1 });
      const gate = deferred();
      model.gate = gate.promise;
      const results = [run(model, resolved, rowsOf(1, 0), undefined)];
      await time.advance(1);
      for (let i = 1; i <= 5; i++) results.push(run(model, resolved, rowsOf(1, i), undefined));
      await time.advance(50);
      expect(model.rowsPerRun).toEqual([1]);
      gate.resolve();
      await flush();
      expect(model.rowsPerRun).toEqual([1, 5]);
      await Promise.all(results);
    });

    it('runs a request of a model without dynamicBatching at once when its queue is idle, with no timer', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const result = run(model, resolvedFor(undefined), rowsOf(2, 0), undefined);
      expect(model.rowsPerRun).toEqual([2]);
      expectDoubled(await result, rowsOf(2, 0));
      expect(time.pending).toBe(0);
    });

    it('runs models without a batch axis on every input directly', async () => {
      const { run } = setup();
      const fixed: ModelSignature = {
        inputs: [{ name: 'x', datatype: 'FP32', shape: [2, -1] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [2, -1] }],
      };
      const model = new RecordingModel(fixed);
      const result = run(
        model,
        resolvedFor({ maxBatchSize: 8, maxQueueDelayMs: 5 }),
        rowsOf(2, 0),
        undefined,
      );
      expect(model.rowsPerRun).toEqual([2]);
      await result;
    });

    it('stacks and splits BYTES and INT64 inputs', async () => {
      const { time, run } = setup();
      const signature: ModelSignature = {
        inputs: [
          { name: 'x', datatype: 'BYTES', shape: [-1, 2] },
          { name: 'n', datatype: 'INT64', shape: [-1] },
        ],
        outputs: [
          { name: 'x_out', datatype: 'BYTES', shape: [-1, 2] },
          { name: 'n_out', datatype: 'INT64', shape: [-1] },
        ],
      };
      const echo = (feeds: Readonly<Record<string, Tensor>>) => ({
        x_out: feeds.x as Tensor,
        n_out: feeds.n as Tensor,
      });
      const model = new RecordingModel(signature, echo);
      const resolved = resolvedFor({ maxBatchSize: 8, maxQueueDelayMs: 5 });
      const a = {
        x: { datatype: 'BYTES', shape: [1, 2], data: ['a0', 'a1'] },
        n: { datatype: 'INT64', shape: [1], data: BigInt64Array.from([1n]) },
      } as const satisfies Record<string, Tensor>;
      const b = {
        x: { datatype: 'BYTES', shape: [2, 2], data: ['b0', 'b1', 'b2', 'b3'] },
        n: { datatype: 'INT64', shape: [2], data: BigInt64Array.from([2n ** 62n, -3n]) },
      } as const satisfies Record<string, Tensor>;
      const results = [run(model, resolved, { ...a }, undefined), run(model, resolved, { ...b }, undefined)];
      await time.advance(5);
      const [ra, rb] = await Promise.all(results);
      expect(model.runs).toHaveLength(1);
      expect(ra?.x_out).toEqual({ datatype: 'BYTES', shape: [1, 2], data: ['a0', 'a1'] });
      expect(rb?.x_out?.data).toEqual(['b0', 'b1', 'b2', 'b3']);
      expect(Array.from(ra?.n_out?.data as BigInt64Array)).toEqual([1n]);
      expect(Array.from(rb?.n_out?.data as BigInt64Array)).toEqual([2n ** 62n, -3n]);
      expect(rb?.n_out?.shape).toEqual([2]);
    });
  });

  describe('models that do not batch', () => {
    it('queues their requests and runs them one at a time, in arrival order, never stacked', async () => {
      const { time, telemetry, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor(undefined);
      const gate = deferred();
      model.gate = gate.promise;
      const requests = [0, 1, 2, 3].map((i) => rowsOf(1 + (i % 2), i * 10));
      const results = requests.map((feeds) => run(model, resolved, feeds, undefined));
      await time.advance(100);
      expect(model.runs.map((x) => (x.data as Float32Array)[0])).toEqual([0]);
      gate.resolve();
      expectAllDoubled(await Promise.all(results), requests);
      expect(model.runs.map((x) => (x.data as Float32Array)[0])).toEqual([0, 10, 20, 30]);
      expect(model.rowsPerRun).toEqual([1, 2, 1, 2]);
      expect(telemetry.events.filter((e) => e.type === 'batch')).toEqual([]);
      expect(
        telemetry.events.filter((e) => e.type === 'queue').map((e) => (e as { depth: number }).depth),
      ).toEqual([1, 0, 1, 2, 3, 2, 1, 0]);
    });

    it('refuses past the server-wide maxQueueSize with a Retry-After from the observed run time', async () => {
      const time = new ManualTime();
      const batcher = new DynamicBatcher({ clock: time.clock, timers: time, maxQueueSize: 2 });
      const model = new RecordingModel();
      const resolved = resolvedFor(undefined);
      let gate = deferred();
      model.gate = gate.promise;
      const first = batcher.runner(model, resolved, rowsOf(1, 0), undefined);
      await time.advance(1500); // the first run takes 1.5 s
      gate.resolve();
      await first;
      await flush();
      gate = deferred();
      model.gate = gate.promise;
      const held = [0, 1, 2].map((i) => batcher.runner(model, resolved, rowsOf(1, i), undefined));
      expect(batcher.queued).toBe(2);
      expect(batcher.refusal('m')).toBeInstanceOf(OverloadedError);
      expect(batcher.refusal('m', '1')).toBeInstanceOf(OverloadedError);
      expect(batcher.refusal('m', '2')).toBeUndefined();
      expect(batcher.refusal('other')).toBeUndefined();
      const error = await batcher.runner(model, resolved, rowsOf(1, 9), undefined).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OverloadedError);
      // Two queued runs of 1.5 s each: come back in 3 s.
      expect((error as OverloadedError).headers).toEqual({ 'retry-after': '3' });
      expect((error as OverloadedError).message).toMatch(/model 'm' has 2 requests queued, its limit/);
      gate.resolve();
      await Promise.all(held);
      expect(batcher.refusal('m')).toBeUndefined();
    });

    it('with batching off, queues models with dynamicBatching as any other: alone, under the server-wide bound', async () => {
      const time = new ManualTime();
      const batcher = new DynamicBatcher({
        clock: time.clock,
        timers: time,
        batching: false,
        maxQueueSize: 1,
      });
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 8, maxQueueDelayMs: 5, maxQueueSize: 100 });
      const gate = deferred();
      model.gate = gate.promise;
      const results = [0, 1].map((i) => batcher.runner(model, resolved, rowsOf(1, i), undefined));
      await expect(batcher.runner(model, resolved, rowsOf(1, 2), undefined)).rejects.toBeInstanceOf(
        OverloadedError,
      );
      gate.resolve();
      await Promise.all(results);
      expect(model.rowsPerRun).toEqual([1, 1]);
    });
  });

  describe('failures', () => {
    it('fails only the faulty request of a batch: the others are run again alone', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const bad = rowsOf(2, 0);
      (bad.x?.data as Float32Array)[1] = Number.NaN;
      const good = [rowsOf(1, 10), rowsOf(3, 20)];
      const results = [
        run(model, resolved, good[0] as Record<string, Tensor>, undefined),
        run(model, resolved, bad, undefined),
        run(model, resolved, good[1] as Record<string, Tensor>, undefined),
      ];
      await time.advance(5);
      const settled = await Promise.allSettled(results);
      expect(model.rowsPerRun).toEqual([6, 1, 2, 3]);
      expect(settled[1]).toMatchObject({ status: 'rejected', reason: expect.any(InvalidInputError) });
      expectDoubled((settled[0] as PromiseFulfilledResult<Record<string, Tensor>>).value, good[0] as never);
      expectDoubled((settled[2] as PromiseFulfilledResult<Record<string, Tensor>>).value, good[1] as never);
    });

    it('stops batching a model whose outputs have no batch axis, answering every request correctly', async () => {
      const { time, run } = setup();
      const sums = (feeds: Readonly<Record<string, Tensor>>) => {
        const x = feeds.x as Tensor;
        const total = (x.data as Float32Array).reduce((a, b) => a + b, 0);
        return { y: { datatype: 'FP32', shape: [1], data: Float32Array.from([total]) } } as Record<
          string,
          Tensor
        >;
      };
      // The signature claims a batch axis on `y`; the graph reduces it away.
      const model = new RecordingModel(DOUBLER, sums);
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const results = [
        run(model, resolved, rowsOf(2, 0), undefined),
        run(model, resolved, rowsOf(2, 10), undefined),
      ];
      await time.advance(5);
      const answers = await Promise.all(results);
      expect(answers.map((a) => Array.from(a.y?.data as Float32Array))).toEqual([[6], [46]]);
      expect(model.rowsPerRun).toEqual([4, 2, 2]);
      await run(model, resolved, rowsOf(1, 0), undefined); // now direct: no timer needed
      expect(model.rowsPerRun).toEqual([4, 2, 2, 1]);
    });
  });

  describe('load shedding', () => {
    it('refuses a request past maxQueueSize at once with 503 and Retry-After', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 2, maxQueueDelayMs: 5, maxQueueSize: 3 });
      model.gate = new Promise(() => {});
      void run(model, resolved, rowsOf(2, 0), undefined); // runs at once (full), holding the slot
      await flush();
      const queued = [1, 2, 3].map((i) => run(model, resolved, rowsOf(1, i), undefined));
      const refused = run(model, resolved, rowsOf(1, 9), undefined);
      const error = await refused.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OverloadedError);
      expect((error as OverloadedError).status).toBe(503);
      expect((error as OverloadedError).headers).toEqual({ 'retry-after': '1' });
      expect(time.now).toBe(0);
      void queued;
    });

    it('bounds each model version on its own', async () => {
      const { run } = setup();
      const resolved = resolvedFor({ maxBatchSize: 1, maxQueueDelayMs: 5, maxQueueSize: 1 });
      const other = { ...resolved, version: '2' };
      const model = new RecordingModel();
      model.gate = new Promise(() => {});
      void run(model, resolved, rowsOf(1, 0), undefined);
      await flush();
      void run(model, resolved, rowsOf(1, 1), undefined);
      await expect(run(model, resolved, rowsOf(1, 2), undefined)).rejects.toBeInstanceOf(OverloadedError);
      void run(model, other, rowsOf(1, 3), undefined);
      await flush();
      expect(model.rowsPerRun).toEqual([1, 1]);
    });
  });

  describe('aborts', () => {
    it('removes a request whose client is gone from the queue: it never runs', async () => {
      const { time, run, batcher, telemetry } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const gone = new AbortController();
      const kept = run(model, resolved, rowsOf(1, 0), undefined);
      const dropped = run(model, resolved, rowsOf(2, 100), undefined, gone.signal);
      expect(batcher.queued).toBe(2);
      gone.abort();
      await expect(dropped).rejects.toBeInstanceOf(RequestAbortedError);
      expect(batcher.queued).toBe(1);
      expect(telemetry.ofType('queue').at(-1)?.depth).toBe(1);
      await time.advance(5);
      expectDoubled(await kept, rowsOf(1, 0));
      expect(model.rowsPerRun).toEqual([1]);
    });

    it('never queues a request whose signal has already aborted', async () => {
      const { batcher, run } = setup();
      const signal = AbortSignal.abort();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      await expect(run(model, resolved, rowsOf(1, 0), undefined, signal)).rejects.toBeInstanceOf(
        RequestAbortedError,
      );
      expect(batcher.queued).toBe(0);
      expect(model.runs).toHaveLength(0);
    });

    it('forgets the queue once the last request is aborted (no timer left behind)', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const gone = new AbortController();
      const result = run(
        model,
        resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 50 }),
        rowsOf(1, 0),
        undefined,
        gone.signal,
      );
      expect(time.pending).toBe(1);
      gone.abort();
      await expect(result).rejects.toBeInstanceOf(RequestAbortedError);
      expect(time.pending).toBe(0);
    });

    it('drops the answer of a request aborted while its batch runs, without disturbing the others', async () => {
      const { time, run } = setup();
      const model = new RecordingModel();
      const resolved = resolvedFor({ maxBatchSize: 16, maxQueueDelayMs: 5 });
      const gate = deferred();
      model.gate = gate.promise;
      const gone = new AbortController();
      const kept = run(model, resolved, rowsOf(1, 0), undefined);
      const late = run(model, resolved, rowsOf(1, 10), undefined, gone.signal);
      await time.advance(5);
      expect(model.rowsPerRun).toEqual([2]);
      gone.abort();
      gate.resolve();
      expectDoubled(await kept, rowsOf(1, 0));
      await late; // settles (nobody reads it); the run was not repeated
      expect(model.rowsPerRun).toEqual([2]);
    });
  });
});
