/**
 * Part 4, dynamic batching: the HTTP server (the bundled container entry point, dist/server/index.js, in
 * its own process) under 64 concurrent clients from autocannon on loopback, for a fixed time, with
 * dynamic batching on and off, and on with the sessions in worker threads (`ENGINE_THREAD=worker`); small
 * models on CPU. Three servers run side by side (idle while another is measured) and the runs rotate
 * between them. The batch run time comes from the server's own
 * Prometheus metrics (/metrics), read before and after each run.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { benchInput, elements } from '../lib/input';
import { type BenchModel, type ModelSpec, prepareModel } from '../lib/models';
import { type PartOptions, type PartResult, type Target, target, verdict } from '../lib/part';
import { publishToFolder, startServerProcess } from '../lib/server-process';
import { type Summary, summarize } from '../lib/stats';
import { formatSummary, type Table } from '../lib/table';

const CONNECTIONS = 64;
const THROUGHPUT_LIMIT = 3;
/** The model's config.json `dynamicBatching`: the delay is what the p99 target is measured against. */
const DYNAMIC_BATCHING = { maxBatchSize: 64, maxQueueDelayMs: 5, maxQueueSize: 256 } as const;

/** The small part of autocannon's API used here (the package ships no typings). */
interface AutocannonResult {
  readonly duration: number;
  readonly '2xx': number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly latency: { readonly p50: number; readonly p99: number; readonly max: number };
}
type Autocannon = (options: {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string;
  connections: number;
  duration: number;
}) => Promise<AutocannonResult>;

/** Batching on or off with sessions on the event loop; `worker`: batching on, sessions in worker threads. */
type Mode = 'on' | 'off' | 'worker';
const MODES: readonly Mode[] = ['on', 'off', 'worker'];
const MODE_LABEL: Readonly<Record<Mode, string>> = { on: 'on', off: 'off', worker: 'on + worker' };

interface RunFigures {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly failures: number;
  /** Mean engine run time and rows per batch in the run (batching on), from /metrics. */
  readonly batchRunMs?: number;
  readonly rowsPerBatch?: number;
}

export interface DynamicBatchingRow {
  readonly mode: Mode;
  readonly requestsPerSecond: Summary;
  readonly p50Ms: Summary;
  readonly p99Ms: Summary;
  readonly batchRunMs?: Summary;
  readonly rowsPerBatch?: Summary;
  readonly runs: readonly RunFigures[];
}

/**
 * The models: the sample repository's tiny linear model, where a run costs microseconds, and a small MLP
 * whose matrix products gain from stacked rows (the pair docs/containers.md measures).
 */
const MODELS: readonly ModelSpec[] = [
  { kind: 'linear' },
  { kind: 'mlp-layers', inputSize: 256, hidden: [2048, 2048], outputSize: 10 },
];

export async function runDynamicBatching(options: PartOptions): Promise<PartResult> {
  const { root, workDir, log, quick } = options;
  const serverBundle = join(root, 'dist/server/index.js');
  if (!existsSync(serverBundle)) throw new Error(`${serverBundle} is missing: run 'node tools/build.mjs'`);
  const autocannon = require('autocannon') as Autocannon;
  const repository = join(workDir, 'repository');
  const models: BenchModel[] = [];
  for (const spec of MODELS) {
    const model = await prepareModel(workDir, spec);
    await publishToFolder(repository, model, {
      maxBatchSize: DYNAMIC_BATCHING.maxBatchSize,
      dynamicBatching: DYNAMIC_BATCHING,
    });
    models.push(model);
  }
  const durationS = quick ? 1 : 5;
  const start = (mode: Mode) =>
    startServerProcess(serverBundle, repository, models, mode, {
      ONNX_SERVE_DYNAMIC_BATCHING: mode === 'off' ? 'off' : 'on',
      ONNX_SERVE_ENGINE_THREAD: mode === 'worker' ? 'worker' : 'main',
    });
  const servers = { on: await start('on'), off: await start('off'), worker: await start('worker') };
  try {
    const results: ModelFigures[] = [];
    for (const model of models) {
      const path = `/v2/models/${model.name}/infer`;
      const body = JSON.stringify({
        inputs: [
          {
            name: model.input.name,
            datatype: 'FP32',
            shape: model.input.shape,
            data: Array.from(benchInput(elements(model.input.shape))),
          },
        ],
      });
      const answers = await Promise.all(MODES.map((mode) => infer(servers[mode].url + path, body)));
      if (answers.some((a) => a !== answers[0])) {
        throw new Error(`${model.name}: on, off and worker answer differently: ${answers.join(' vs ')}`);
      }
      const load = async (mode: Mode, seconds: number): Promise<RunFigures> => {
        const before = await batchMetrics(servers[mode].url, model.name);
        const result = await autocannon({
          url: servers[mode].url + path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          connections: CONNECTIONS,
          duration: seconds,
        });
        const after = await batchMetrics(servers[mode].url, model.name);
        const batches = after.count - before.count;
        return {
          requestsPerSecond: result['2xx'] / result.duration,
          p50Ms: result.latency.p50,
          p99Ms: result.latency.p99,
          failures: result.non2xx + result.errors + result.timeouts,
          ...(batches > 0
            ? {
                batchRunMs: ((after.seconds - before.seconds) * 1000) / batches,
                rowsPerBatch: (after.rows - before.rows) / batches,
              }
            : {}),
        };
      };
      // Warm both: the first second pays JIT and allocator growth.
      for (const mode of MODES) await load(mode, 1);
      const runs: Record<Mode, RunFigures[]> = { on: [], off: [], worker: [] };
      for (let run = 0; run < options.runs; run++) {
        const order = MODES.map((_, i) => MODES[(i + run) % MODES.length] as Mode);
        for (const mode of order) runs[mode].push(await load(mode, durationS));
      }
      log(`dynamic: ${model.name} done`);
      results.push(figures(model, runs));
    }
    return report(results, durationS);
  } finally {
    await Promise.all(MODES.map((mode) => servers[mode].stop()));
  }
}

/** Both modes of one model, and its targets. */
export interface ModelFigures {
  readonly model: string;
  readonly description: string;
  readonly on: DynamicBatchingRow;
  readonly off: DynamicBatchingRow;
  /** Batching on with the sessions in worker threads. */
  readonly worker: DynamicBatchingRow;
  /** Per run, requests/s with batching on over off. */
  readonly speedup: Summary;
  /** Per run, requests/s with batching on and the worker engine over off (not a target). */
  readonly workerSpeedup: Summary;
  /** The configured queue delay plus two batch runs (the median mean batch run time). */
  readonly p99BoundMs: number;
  readonly failures: number;
  readonly targets: readonly Target[];
}

function figures(model: BenchModel, runs: Record<Mode, RunFigures[]>): ModelFigures {
  const row = (mode: Mode): DynamicBatchingRow => {
    const list = runs[mode];
    const batchRuns = list.flatMap((r) => (r.batchRunMs === undefined ? [] : [r.batchRunMs]));
    const rows = list.flatMap((r) => (r.rowsPerBatch === undefined ? [] : [r.rowsPerBatch]));
    return {
      mode,
      requestsPerSecond: summarize(list.map((r) => r.requestsPerSecond)),
      p50Ms: summarize(list.map((r) => r.p50Ms)),
      p99Ms: summarize(list.map((r) => r.p99Ms)),
      ...(batchRuns.length > 0 ? { batchRunMs: summarize(batchRuns) } : {}),
      ...(rows.length > 0 ? { rowsPerBatch: summarize(rows) } : {}),
      runs: list,
    };
  };
  const on = row('on');
  const off = row('off');
  const worker = row('worker');
  const overOff = (mode: Mode) =>
    summarize(runs[mode].map((r, i) => r.requestsPerSecond / (runs.off[i] as RunFigures).requestsPerSecond));
  const speedup = overOff('on');
  const p99BoundMs = DYNAMIC_BATCHING.maxQueueDelayMs + 2 * (on.batchRunMs?.median ?? 0);
  return {
    model: model.name,
    description: model.description,
    on,
    off,
    worker,
    speedup,
    workerSpeedup: overOff('worker'),
    p99BoundMs,
    failures: [...runs.on, ...runs.off, ...runs.worker].reduce((sum, r) => sum + r.failures, 0),
    targets: [
      target(
        `${model.name}: throughput, batching on / off`,
        speedup.median,
        '>=',
        THROUGHPUT_LIMIT,
        'throughput',
      ),
      target(
        `${model.name}: p99 (ms) with batching on, within queue delay + 2 batch runs`,
        on.p99Ms.median,
        '<=',
        p99BoundMs,
        'p99',
      ),
    ],
  };
}

function report(results: readonly ModelFigures[], durationS: number): PartResult {
  const table: Table = {
    title: `Dynamic batching: HTTP server, ${CONNECTIONS} concurrent clients (autocannon, ${durationS} s per run), CPU (median (min–max) over runs)`,
    columns: [
      'model',
      'batching',
      'requests/s',
      'p50 ms',
      'p99 ms',
      'batch run ms',
      'rows/batch',
      'over off',
      'p99 bound ms',
      'target',
    ],
    rows: results.flatMap((m) =>
      [m.on, m.off, m.worker].map((r) => [
        m.model,
        MODE_LABEL[r.mode],
        formatSummary(r.requestsPerSecond),
        formatSummary(r.p50Ms, 1),
        formatSummary(r.p99Ms, 1),
        formatSummary(r.batchRunMs, 2),
        formatSummary(r.rowsPerBatch, 1),
        r.mode === 'on'
          ? formatSummary(m.speedup, 2)
          : r.mode === 'worker'
            ? formatSummary(m.workerSpeedup, 2)
            : '',
        r.mode === 'on' ? m.p99BoundMs.toFixed(1) : '',
        r.mode === 'on' ? verdict(m.targets) : '',
      ]),
    ),
    notes: [
      `Targets: throughput on/off >= ${THROUGHPUT_LIMIT}; p99 (on) <= maxQueueDelayMs (${DYNAMIC_BATCHING.maxQueueDelayMs}) + 2 x the mean batch run time (from /metrics).`,
      `config.json dynamicBatching: ${JSON.stringify(DYNAMIC_BATCHING)}; one-row JSON requests, keep-alive connections.`,
      ...results.map(
        (m) =>
          `${m.model}: ${m.description}; failed requests (non-2xx, errors, timeouts) over all runs: ${m.failures}.`,
      ),
      'on + worker: batching on, each session in its own worker thread (ONNX_SERVE_ENGINE_THREAD=worker); its ratio is over off and not a target.',
      'The load generator (autocannon, in the bench process) shares the 2 cores with the server.',
    ],
  };
  return {
    part: 'dynamic',
    available: true,
    tables: [table],
    targets: results.flatMap((m) => m.targets),
    data: { connections: CONNECTIONS, durationS, dynamicBatching: DYNAMIC_BATCHING, models: results },
  };
}

async function infer(url: string, body: string): Promise<string> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}: ${text}`);
  return JSON.stringify((JSON.parse(text) as { outputs: unknown }).outputs);
}

/** The dynamic batcher's histograms of `model` on /metrics: batches, rows and run seconds so far. */
async function batchMetrics(
  url: string,
  model: string,
): Promise<{ count: number; rows: number; seconds: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sum = (name: string) =>
    text
      .split('\n')
      .filter((line) => line.startsWith(`${name}{`) && line.includes(`model="${model}"`))
      .reduce((total, line) => total + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
  return {
    count: sum('onnx_serve_batch_duration_seconds_count'),
    rows: sum('onnx_serve_batch_size_sum'),
    seconds: sum('onnx_serve_batch_duration_seconds_sum'),
  };
}
