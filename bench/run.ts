/**
 * `npm run bench [-- part...] [--quick] [--runs N] [--out dir] [--sizes N,...] [--formats f,...]`: runs the benchmarks of issue #7 (cold start,
 * request overhead, batch throughput, parquet, dynamic batching, overload, size), prints a table per part and writes
 * `<out>/<part>.json` and `<out>/<part>.md` (default `bench/results/`), then every target met or missed, also
 * in `<out>/summary.md`. Parts: cold, overhead, batch, parquet, dynamic, overload, size; all when none is named. `--quick` is
 * the tiny configuration the test suite runs. `--sizes` and `--formats` narrow the batch part (record counts;
 * `jsonl`, `parquet`), so one size or format can be measured alone.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { PART_NAMES, type PartName, type PartOptions, type PartResult, type Target } from './lib/part';
import { renderMarkdown, renderTable, type Table } from './lib/table';
import { runBatchThroughput } from './parts/batch-throughput';
import { runColdStart } from './parts/cold-start';
import { runDynamicBatching } from './parts/dynamic-batching';
import { runOverload } from './parts/overload';
import { runParquetPipeline } from './parts/parquet-pipeline';
import { runRequestOverhead } from './parts/request-overhead';
import { runSize } from './parts/size';

const PARTS: Readonly<Record<PartName, (options: PartOptions) => Promise<PartResult>>> = {
  cold: runColdStart,
  overhead: runRequestOverhead,
  batch: runBatchThroughput,
  parquet: runParquetPipeline,
  dynamic: runDynamicBatching,
  overload: runOverload,
  size: runSize,
};

/** Runs per part unless `--runs` says otherwise; each overload run loads five cases for about 10 s each. */
const DEFAULT_RUNS: Readonly<Partial<Record<PartName, number>>> = { overload: 3 };

export interface BenchArgs {
  readonly parts: readonly PartName[];
  readonly quick: boolean;
  readonly runs: number | undefined;
  readonly out: string | undefined;
  readonly sizes: readonly number[] | undefined;
  readonly formats: readonly string[] | undefined;
}

/** Parses the command line; throws with the usage on anything unknown. */
export function parseArgs(argv: readonly string[]): BenchArgs {
  const parts: PartName[] = [];
  let quick = false;
  let runs: number | undefined;
  let out: string | undefined;
  let sizes: number[] | undefined;
  let formats: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--quick') quick = true;
    else if (arg === '--runs') {
      runs = Number(argv[++i]);
      if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs takes a positive integer`);
    } else if (arg === '--out') {
      out = argv[++i];
      if (out === undefined) throw new Error('--out takes a folder');
    } else if (arg === '--sizes') {
      sizes = (argv[++i] ?? '').split(',').map(Number);
      if (!sizes.every((n) => Number.isInteger(n) && n > 0)) {
        throw new Error('--sizes takes positive integers separated by commas');
      }
    } else if (arg === '--formats') {
      formats = (argv[++i] ?? '').split(',');
      if (!formats.every((f) => f === 'jsonl' || f === 'parquet')) {
        throw new Error('--formats takes jsonl and/or parquet, separated by commas');
      }
    } else if ((PART_NAMES as readonly string[]).includes(arg)) parts.push(arg as PartName);
    else {
      throw new Error(
        `unknown argument '${arg}'; usage: run.js [${PART_NAMES.join('|')}]... [--quick] [--runs N] [--out dir] [--sizes N,...] [--formats jsonl,parquet]`,
      );
    }
  }
  return { parts: parts.length > 0 ? parts : [...PART_NAMES], quick, runs, out, sizes, formats };
}

/** Every target of the run, met or not. */
function targetTable(targets: readonly { part: PartName; t: Target }[]): Table {
  return {
    title: 'Targets',
    columns: ['part', 'target', 'value', 'limit', 'verdict'],
    rows: targets.map(({ part, t }) => [
      part,
      t.name,
      formatValue(t.value),
      `${t.comparison} ${formatValue(t.limit)}`,
      t.met ? 'met' : 'MISSED',
    ]),
  };
}

function formatValue(value: number): string {
  return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toFixed(2);
}

/** What the JSON files say about where they were measured. */
export function machine() {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // dist/bench/run.js: the repository is two folders up.
  const root = resolve(__dirname, '..', '..');
  const out = resolve(args.out ?? join(root, 'bench', 'results'));
  await mkdir(out, { recursive: true });
  const runsOf = (part: PartName) => args.runs ?? (args.quick ? 1 : (DEFAULT_RUNS[part] ?? 5));
  const command = `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim();
  let failed = false;
  const done: { part: PartName; result: PartResult | undefined; load: readonly number[] }[] = [];
  for (const part of args.parts) {
    const workDir = await mkdtemp(join(tmpdir(), `onnx-bench-${part}-`));
    const startedAt = new Date();
    const loadBefore = loadavg();
    const log = (message: string) =>
      process.stderr.write(`[${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)}s] ${message}\n`);
    let result: PartResult | undefined;
    let error: string | undefined;
    try {
      result = await PARTS[part]({
        quick: args.quick,
        runs: runsOf(part),
        root,
        workDir,
        log,
        ...(args.sizes === undefined ? {} : { sizes: args.sizes }),
        ...(args.formats === undefined ? {} : { formats: args.formats }),
      });
    } catch (e) {
      error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      failed = true;
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
    const finishedAt = new Date();
    const document = {
      part,
      command,
      quick: args.quick,
      runs: runsOf(part),
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      machine: machine(),
      loadAverage: { before: loadBefore, after: loadavg() },
      ...(result ?? { available: false, reason: `failed: ${error}`, tables: [], targets: [], data: {} }),
      ...(error === undefined ? {} : { error }),
    };
    await writeFile(join(out, `${part}.json`), `${JSON.stringify(document, null, 2)}\n`);
    if (result !== undefined) {
      await writeFile(join(out, `${part}.md`), `${result.tables.map(renderMarkdown).join('\n\n')}\n`);
      for (const table of result.tables) process.stdout.write(`\n${renderTable(table)}\n`);
    } else {
      process.stdout.write(`\n${part}: failed\n${error}\n`);
    }
    done.push({ part, result, load: document.loadAverage.after });
  }
  const targets = targetTable(
    done.flatMap((d) => (d.result?.targets ?? []).map((t) => ({ part: d.part, t }))),
  );
  process.stdout.write(`\n${renderTable(targets)}\n`);
  const summary = [
    `Command: \`${command}\`; ${new Date().toISOString()}; ${JSON.stringify(machine())}`,
    `Load average (1, 5, 15 min) after each part: ${done.map((d) => `${d.part} ${d.load.map((l) => l.toFixed(2)).join(' ')}`).join('; ')}`,
    ...done.flatMap((d) => (d.result?.tables ?? []).map(renderMarkdown)),
    renderMarkdown(targets),
  ];
  await writeFile(join(out, 'summary.md'), `${summary.join('\n\n')}\n`);
  process.stdout.write(`\nresults in ${out}\n`);
  if (failed) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
