/**
 * Part 6, overload: the HTTP server (the bundled container entry point, in its own process) under 64
 * closed-loop clients sending a resnet18-sized input (1x3x224x224 FP32) to a model without dynamic
 * batching, far more than two cores serve at once. Sessions on the event loop (`main`) and in a worker
 * thread (`worker`), JSON and binary bodies; and one server whose per-model queue is bounded below the
 * number of clients, whose clients honour `Retry-After`. Fair and bounded means: every connection is
 * answered, and the p99 of the requests admitted stays within 2x their p50.
 *
 * The model: resnet18 exported from torchvision (random weights) by Debian's Python; `--quick` serves the
 * real PaddleOCR text-direction classifier at 224x224 instead (the same input, a far cheaper run, and no
 * Python needed).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../../shared/core/config';
import { encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { type ClosedLoopResult, runClosedLoop } from '../lib/closed-loop';
import { benchInput, elements } from '../lib/input';
import { type BenchModel, prepareModel } from '../lib/models';
import { type PartOptions, type PartResult, type Target, target, unavailable, verdict } from '../lib/part';
import { publishToFolder, type ServerProcess, startServerProcess } from '../lib/server-process';
import { percentile, type Summary, summarize } from '../lib/stats';
import { formatSummary, type Table } from '../lib/table';

const run = promisify(execFile);
const P99_OVER_P50_LIMIT = 2;

type Engine = 'main' | 'worker';
type Payload = 'json' | 'binary';
type ServerName = Engine | 'bounded';

interface Case {
  readonly id: string;
  readonly server: ServerName;
  readonly payload: Payload;
  /** Clients wait `Retry-After` after a 503 (the bounded server's clients). */
  readonly honourRetryAfter: boolean;
}

const CASES: readonly Case[] = [
  { id: 'main-json', server: 'main', payload: 'json', honourRetryAfter: false },
  { id: 'main-binary', server: 'main', payload: 'binary', honourRetryAfter: false },
  { id: 'worker-json', server: 'worker', payload: 'json', honourRetryAfter: false },
  { id: 'worker-binary', server: 'worker', payload: 'binary', honourRetryAfter: false },
  { id: 'bounded-binary', server: 'bounded', payload: 'binary', honourRetryAfter: true },
];

interface Sizing {
  readonly connections: number;
  readonly warmupMs: number;
  readonly warmupLimitMs: number;
  readonly windowMs: number;
  readonly drainLimitMs: number;
  /** `ONNX_SERVE_MAX_QUEUE_SIZE` of the bounded server. */
  readonly boundedQueue: number;
}

const FULL: Sizing = {
  connections: 64,
  warmupMs: 3000,
  warmupLimitMs: 15_000,
  windowMs: 6000,
  drainLimitMs: 20_000,
  boundedQueue: 16,
};
const QUICK: Sizing = {
  connections: 8,
  warmupMs: 500,
  warmupLimitMs: 5000,
  windowMs: 1500,
  drainLimitMs: 10_000,
  boundedQueue: 2,
};

/** One case in one run. Latency percentiles count requests left unanswered with their wait so far. */
export interface OverloadRunFigures {
  /** When the window opened, from the start of the load (ms). */
  readonly windowOpenedMs: number;
  readonly okPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p99OverP50: number;
  readonly maxMs: number;
  readonly admitted: number;
  readonly unanswered: number;
  readonly shed: number;
  readonly shedP50Ms: number | undefined;
  readonly errors: number;
  readonly connectionsAnswered: number;
}

export interface OverloadRow {
  readonly id: string;
  readonly server: ServerName;
  /** The engine thread the server ran (the bounded server runs the default). */
  readonly engine: Engine;
  readonly payload: Payload;
  readonly requestBytes: number;
  readonly okPerSecond: Summary;
  readonly p50Ms: Summary;
  readonly p99Ms: Summary;
  readonly p99OverP50: Summary;
  readonly connectionsAnswered: Summary;
  readonly unanswered: number;
  readonly shed: number;
  readonly errors: number;
  readonly runs: readonly OverloadRunFigures[];
}

export async function runOverload(options: PartOptions): Promise<PartResult> {
  const { root, workDir, log, quick } = options;
  const serverBundle = join(root, 'dist/server/index.js');
  if (!existsSync(serverBundle)) throw new Error(`${serverBundle} is missing: run 'node tools/build.mjs'`);
  const sizing = quick ? QUICK : FULL;
  let model: BenchModel;
  if (quick) {
    model = await prepareModel(workDir, { kind: 'text-direction', height: 224, width: 224 });
  } else {
    const exported = await exportResnet18(root, workDir);
    if (typeof exported === 'string') return unavailable('overload', exported);
    model = await prepareModel(workDir, {
      kind: 'file',
      name: 'resnet18',
      description: 'torchvision resnet18 (random weights) exported by torch 1.13, opset 13',
      file: exported.file,
      input: { name: 'input', shape: [1, 3, 224, 224] },
    });
  }
  log(`overload: model ${model.name} ready`);
  const repository = join(workDir, 'repository');
  // No dynamicBatching: the queue every model gets is what is measured.
  await publishToFolder(repository, model, { maxBatchSize: 8 });
  const defaultEngine = parseConfig({}, { memoryBytes: 2 ** 31, availableParallelism: 2, tmpDir: workDir })
    .engineThread as Engine;

  const data = benchInput(elements(model.input.shape));
  const input = { name: model.input.name, datatype: 'FP32' as const, shape: [...model.input.shape], data };
  const json = Buffer.from(JSON.stringify({ inputs: [{ ...input, data: Array.from(data) }] }));
  const binary = encodeInferRequest({ inputs: [input], binaryOutputDefault: false }, { binaryInputs: true });
  const bodies: Readonly<Record<Payload, { body: Uint8Array; headers: Record<string, string> }>> = {
    json: { body: json, headers: { 'content-type': 'application/json' } },
    binary: { body: binary.body, headers: { ...binary.headers, 'content-type': 'application/octet-stream' } },
  };

  const servers: Partial<Record<ServerName, ServerProcess>> = {};
  try {
    const start = (name: ServerName, env: Record<string, string>) =>
      startServerProcess(serverBundle, repository, [model], name, env);
    servers.main = await start('main', { ONNX_SERVE_ENGINE_THREAD: 'main' });
    servers.worker = await start('worker', { ONNX_SERVE_ENGINE_THREAD: 'worker' });
    servers.bounded = await start('bounded', { ONNX_SERVE_MAX_QUEUE_SIZE: String(sizing.boundedQueue) });
    const path = `/v2/models/${model.name}/infer`;
    const reference = await answer(servers.main.url + path, bodies.json);
    for (const name of ['worker', 'bounded'] as const) {
      const other = await answer((servers[name] as ServerProcess).url + path, bodies.binary);
      if (!sameOutputs(reference, other)) throw new Error(`${name} answers differently from main`);
    }
    const check = (body: Buffer) => body.equals(reference) || sameOutputs(reference, body);

    const runs = new Map<string, OverloadRunFigures[]>(CASES.map((c) => [c.id, []]));
    for (let round = 0; round < options.runs; round++) {
      const order = CASES.map((_, i) => CASES[(i + round) % CASES.length] as Case);
      for (const c of order) {
        const result = await runClosedLoop({
          url: (servers[c.server] as ServerProcess).url + path,
          ...bodies[c.payload],
          connections: sizing.connections,
          warmupMs: sizing.warmupMs,
          warmupLimitMs: sizing.warmupLimitMs,
          windowMs: sizing.windowMs,
          drainLimitMs: sizing.drainLimitMs,
          honourRetryAfter: c.honourRetryAfter,
          check,
        });
        if (result.errorSamples.length > 0)
          log(`overload: ${c.id} errors: ${result.errorSamples.join(' | ')}`);
        runs.get(c.id)?.push(figuresOf(c.id, result));
        log(`overload: run ${round + 1}/${options.runs} ${c.id} done`);
      }
    }
    const rows = CASES.map((c) => rowOf(c, c.server === 'bounded' ? defaultEngine : c.server, bodies, runs));
    return report(model, rows, sizing, defaultEngine);
  } finally {
    await Promise.all(Object.values(servers).map((s) => s.stop()));
  }
}

/** resnet18 exported to `<workDir>/resnet18/model.onnx`, or why it cannot be. */
async function exportResnet18(root: string, workDir: string): Promise<{ file: string } | string> {
  const python = process.env.ONNX_SERVE_PYTHON ?? '/usr/bin/python3';
  const out = join(workDir, 'resnet18');
  try {
    await run(python, [
      join(root, 'tools/export/export_model.py'),
      '--module',
      'torchvision.models:resnet18',
      '--input-shape',
      '1,3,224,224',
      '--reference-batch',
      '1',
      '--out',
      out,
    ]);
  } catch (error) {
    const detail = error instanceof Error ? error.message.split('\n').slice(-3).join(' ') : String(error);
    return `resnet18 could not be exported (install python3-torchvision, python3-torch and python3-onnx; run with ${python}): ${detail}`;
  }
  return { file: join(out, 'model.onnx') };
}

async function answer(
  url: string,
  payload: { body: Uint8Array; headers: Record<string, string> },
): Promise<Buffer> {
  const response = await fetch(url, { method: 'POST', headers: payload.headers, body: payload.body });
  const body = Buffer.from(await response.arrayBuffer());
  if (response.status !== 200)
    throw new Error(`${url} answered ${response.status}: ${body.toString('utf8')}`);
  return body;
}

/** Whether two JSON answers carry the same outputs within float tolerance. */
function sameOutputs(a: Buffer, b: Buffer): boolean {
  const outputs = (body: Buffer) =>
    (JSON.parse(body.toString('utf8')) as { outputs: { data: number[] }[] }).outputs;
  try {
    const x = outputs(a);
    const y = outputs(b);
    return (
      x.length === y.length &&
      x.every((o, i) => {
        const other = y[i]?.data ?? [];
        return (
          o.data.length === other.length &&
          o.data.every((v, j) => Math.abs(v - (other[j] as number)) <= 1e-4 + 1e-3 * Math.abs(v))
        );
      })
    );
  } catch {
    return false;
  }
}

function figuresOf(id: string, result: ClosedLoopResult): OverloadRunFigures {
  // Requests still waiting at the drain limit count with their wait so far (a lower bound).
  const admitted = [...result.okMs, ...result.unansweredMs];
  if (admitted.length === 0) {
    throw new Error(`${id}: no admitted request started in the window; lengthen it for this machine`);
  }
  const p50Ms = percentile(admitted, 50);
  const p99Ms = percentile(admitted, 99);
  return {
    windowOpenedMs: result.warmupMs,
    okPerSecond: result.okPerSecond,
    p50Ms,
    p99Ms,
    p99OverP50: p99Ms / p50Ms,
    maxMs: Math.max(...admitted),
    admitted: admitted.length,
    unanswered: result.unansweredMs.length,
    shed: result.shedMs.length,
    shedP50Ms: result.shedMs.length > 0 ? percentile(result.shedMs, 50) : undefined,
    errors: result.errors,
    connectionsAnswered: result.connectionsAnswered,
  };
}

function rowOf(
  c: Case,
  engine: Engine,
  bodies: Readonly<Record<Payload, { body: Uint8Array }>>,
  runs: ReadonlyMap<string, OverloadRunFigures[]>,
): OverloadRow {
  const list = runs.get(c.id) ?? [];
  return {
    id: c.id,
    server: c.server,
    engine,
    payload: c.payload,
    requestBytes: bodies[c.payload].body.byteLength,
    okPerSecond: summarize(list.map((r) => r.okPerSecond)),
    p50Ms: summarize(list.map((r) => r.p50Ms)),
    p99Ms: summarize(list.map((r) => r.p99Ms)),
    p99OverP50: summarize(list.map((r) => r.p99OverP50)),
    connectionsAnswered: summarize(list.map((r) => r.connectionsAnswered)),
    unanswered: list.reduce((n, r) => n + r.unanswered, 0),
    shed: list.reduce((n, r) => n + r.shed, 0),
    errors: list.reduce((n, r) => n + r.errors, 0),
    runs: list,
  };
}

function report(
  model: BenchModel,
  rows: readonly OverloadRow[],
  sizing: Sizing,
  defaultEngine: Engine,
): PartResult {
  const isDefault = (row: OverloadRow) => row.server === 'bounded' || row.engine === defaultEngine;
  const targets: Target[] = [];
  const rowTargets = new Map<string, Target[]>();
  for (const row of rows.filter(isDefault)) {
    const own = [
      target(
        `${model.name} ${row.id}: p99 / p50 of admitted requests`,
        row.p99OverP50.median,
        '<=',
        P99_OVER_P50_LIMIT,
        'p99/p50',
      ),
      target(
        `${model.name} ${row.id}: connections answered from the window on`,
        row.connectionsAnswered.min,
        '>=',
        sizing.connections,
        'fair',
      ),
    ];
    rowTargets.set(row.id, own);
    targets.push(...own);
  }
  const mainOf = (payload: Payload) => rows.find((r) => r.server === 'main' && r.payload === payload);
  const overMain = (row: OverloadRow) => {
    const main = mainOf(row.payload);
    return row.server === 'worker' && main !== undefined && main.okPerSecond.median > 0
      ? (row.okPerSecond.median / main.okPerSecond.median).toFixed(2)
      : '';
  };
  const table: Table = {
    title: `Overload: HTTP server, ${sizing.connections} closed-loop clients, ${model.name} ${shape(model)} FP32, no dynamic batching (median (min–max) over runs)`,
    columns: [
      'server',
      'engine',
      'payload',
      'requests/s',
      'vs main',
      'p50 ms',
      'p99 ms',
      'p99/p50',
      'connections answered',
      'unanswered',
      'shed (503)',
      'errors',
      'target',
    ],
    rows: rows.map((row) => [
      row.server === 'bounded' ? `queue ${sizing.boundedQueue}` : 'default',
      `${row.engine}${row.engine === defaultEngine ? ' (default)' : ''}`,
      `${row.payload} ${(row.requestBytes / 1e6).toFixed(2)} MB`,
      formatSummary(row.okPerSecond, 1),
      overMain(row),
      formatSummary(row.p50Ms),
      formatSummary(row.p99Ms),
      formatSummary(row.p99OverP50, 2),
      `${formatSummary(row.connectionsAnswered)} of ${sizing.connections}`,
      String(row.unanswered),
      String(row.shed),
      String(row.errors),
      verdict(rowTargets.get(row.id) ?? []),
    ]),
    notes: [
      `Targets (default engine): p99 <= ${P99_OVER_P50_LIMIT} x p50 over the requests admitted; every connection answered from the window on.`,
      `Each run: at least ${sizing.warmupMs / 1000} s of load and until every connection has had an answer (at most ${(sizing.warmupMs + sizing.warmupLimitMs) / 1000} s), then requests starting in the next ${sizing.windowMs / 1000} s are counted and the load stays on until each is answered (at most ${sizing.drainLimitMs / 1000} s more; those still waiting then are "unanswered" and count in p50/p99 with their wait so far).`,
      `requests/s: 200 answers completed within the window; connections answered: connections that got any answer from the start of the window to the end of the run.`,
      `queue ${sizing.boundedQueue}: ONNX_SERVE_MAX_QUEUE_SIZE=${sizing.boundedQueue}, the default engine; its clients wait Retry-After after a 503, the others never get one (the default bound is above ${sizing.connections}).`,
      `${model.name}: ${model.description}; config.json without dynamicBatching. The load generator shares the cores with the server.`,
    ],
  };
  return {
    part: 'overload',
    available: true,
    tables: [table],
    targets,
    data: { model: model.name, sizing, defaultEngine, rows },
  };
}

function shape(model: BenchModel): string {
  return model.input.shape.join('x');
}
