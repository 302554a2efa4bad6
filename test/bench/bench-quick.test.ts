/**
 * The benchmarks run (`npm run bench -- --quick`): every part on its tiny configuration, through the built
 * bench as `npm run bench` runs it, and each writes a well-formed result file. Nothing here is about
 * speed: a slow machine passes, a broken measurement fails.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = resolve(__dirname, '..', '..');
const PARTS = ['cold', 'overhead', 'batch', 'parquet', 'dynamic', 'overload', 'size'] as const;

type Json = Record<string, unknown>;

interface SummaryJson {
  readonly n: number;
  readonly median: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

let out: string;
let stdout: string;
const results = new Map<string, Json>();

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'bench-quick-'));
  const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' };
  await run(process.execPath, ['tools/build.mjs'], { cwd: ROOT, env });
  await run(process.execPath, ['bench/build.mjs'], { cwd: ROOT, env });
  ({ stdout } = await run(process.execPath, ['dist/bench/run.js', '--quick', '--out', out], {
    cwd: ROOT,
    env,
    maxBuffer: 16 * 1024 * 1024,
  }));
  for (const part of PARTS) {
    results.set(part, JSON.parse(await readFile(join(out, `${part}.json`), 'utf8')) as Json);
  }
}, 180_000);

afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

/** Every object in `value` that looks like a summary (median, min, max), with its path. */
function summaries(value: unknown, path = '$'): { path: string; summary: Json }[] {
  if (typeof value !== 'object' || value === null) return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => summaries(v, `${path}[${i}]`));
  const object = value as Json;
  const own = 'median' in object && 'min' in object && 'max' in object ? [{ path, summary: object }] : [];
  return [...own, ...Object.entries(object).flatMap(([k, v]) => summaries(v, `${path}.${k}`))];
}

/** Paths of numbers in `value` that are not finite (JSON turns NaN and Infinity into null). */
function nonFinite(value: unknown, path = '$'): string[] {
  if (value === null) return [path];
  if (typeof value === 'number') return Number.isFinite(value) ? [] : [path];
  if (typeof value !== 'object') return [];
  return Object.entries(value as Json).flatMap(([k, v]) => nonFinite(v, `${path}.${k}`));
}

describe('npm run bench -- --quick', () => {
  it('prints a table per part and where the results are', () => {
    expect(stdout).toContain('Cold start');
    expect(stdout).toContain('Request overhead');
    expect(stdout).toContain('Batch throughput');
    expect(stdout).toContain('Parquet pipeline');
    expect(stdout).toContain('Dynamic batching');
    expect(stdout).toContain('Overload');
    expect(stdout).toContain('Size');
    expect(stdout).toContain(`results in ${out}`);
  });

  describe.each(PARTS)('%s', (part) => {
    it('writes a result file that says what ran, where, and whether it could', () => {
      const result = results.get(part) as Json;
      expect(result.part).toBe(part);
      expect(result.quick).toBe(true);
      expect(result.runs).toBe(1);
      expect(result.error).toBeUndefined();
      const machine = result.machine as Json;
      expect(machine.cpus).toBeGreaterThan(0);
      expect(typeof machine.cpuModel).toBe('string');
      expect(machine.node).toBe(process.version);
      expect(result.available).toBe(true);
      const tables = result.tables as { title: string; columns: string[]; rows: string[][] }[];
      expect(tables.length).toBeGreaterThan(0);
      for (const table of tables) {
        for (const row of table.rows)
          expect({ table: table.title, cells: row.length }).toEqual({
            table: table.title,
            cells: table.columns.length,
          });
      }
    });

    it('holds only finite numbers, and every median lies within its min and max', () => {
      const result = results.get(part) as Json;
      expect(nonFinite(result.data)).toEqual([]);
      for (const { path, summary } of summaries(result.data)) {
        const { n, median, min, max, p99 } = summary as unknown as SummaryJson;
        expect({ path, ok: n >= 1 && min <= median && median <= max && min <= p99 && p99 <= max }).toEqual({
          path,
          ok: true,
        });
      }
    });

    it('checks each of its targets against a figure', () => {
      const result = results.get(part) as Json;
      for (const t of result.targets as Json[]) {
        expect(Number.isFinite(t.value)).toBe(true);
        expect(Number.isFinite(t.limit)).toBe(true);
        expect(['<=', '>=']).toContain(t.comparison);
        const met =
          t.comparison === '<='
            ? (t.value as number) <= (t.limit as number)
            : (t.value as number) >= (t.limit as number);
        expect(t.met).toBe(met);
      }
    });
  });

  it('measures every cold-start variant with its split, and verifies their answers', () => {
    const data = results.get('cold')?.data as { rows: Json[] };
    const variants = data.rows.map((row) => row.variant);
    expect(variants).toEqual(['ours-ort', 'ours-onnx', 'ours-int8', 'ours-int4', 'naive', 'floor']);
    for (const row of data.rows) {
      expect(Object.keys(row.phasesMs as Json)).toEqual([
        'process',
        'modules',
        'download',
        'verify',
        'create',
        'warmup',
        'firstRun',
      ]);
      expect(((row.totalMs as Json).median as number) > 0).toBe(true);
      expect(((row.peakRssMB as Json).median as number) > 0).toBe(true);
    }
  });

  it('measures the handler and session.run for JSON and binary payloads', () => {
    const data = results.get('overhead')?.data as { rows: Json[] };
    expect(data.rows.map((row) => `${row.input}/${row.payload}`)).toEqual([
      '1,10/binary',
      '1,10/json',
      '1,3,224,224/binary',
      '1,3,224,224/json',
    ]);
  });

  it('scores JSONL and Parquet through the batch handler and the raw loop at both sizes', () => {
    const data = results.get('batch')?.data as { rows: Json[] };
    expect(data.rows.map((row) => `${row.model}/${row.format}/${row.records}`)).toEqual([
      'linear/jsonl/100',
      'linear/jsonl/1000',
      'linear/parquet/100',
      'linear/parquet/1000',
    ]);
    for (const row of data.rows) {
      expect(((row.recordsPerSecond as Json).median as number) > 0).toBe(true);
      expect(((row.rawRecordsPerSecond as Json).median as number) > 0).toBe(true);
    }
  });

  it('scores DuckDB-written Parquet through the building blocks and the raw loop at both sizes', () => {
    const data = results.get('parquet')?.data as { rows: Json[] };
    expect(data.rows.map((row) => `${row.model}/${row.records}`)).toEqual(['linear/1000', 'linear/10000']);
    for (const row of data.rows) {
      expect(((row.recordsPerSecond as Json).median as number) > 0).toBe(true);
      expect(((row.rawRecordsPerSecond as Json).median as number) > 0).toBe(true);
      expect(row.rowGroups).toBe(1);
    }
  });

  it('loads the server with batching on and off, and on with the worker engine', () => {
    const data = results.get('dynamic')?.data as { models: Json[] };
    expect(data.models.map((m) => m.model)).toEqual(['linear', 'mlp-256-2048-2048-10']);
    for (const m of data.models) {
      expect(m.failures).toBe(0);
      expect(((m.on as Json).requestsPerSecond as Json).median as number).toBeGreaterThan(0);
      expect(((m.off as Json).requestsPerSecond as Json).median as number).toBeGreaterThan(0);
      expect(((m.worker as Json).requestsPerSecond as Json).median as number).toBeGreaterThan(0);
      expect((m.on as Json).rowsPerBatch).toBeDefined();
    }
  });

  it('loads the server past its capacity on both engines, JSON and binary, and with a small queue bound', () => {
    const data = results.get('overload')?.data as { rows: Json[]; sizing: Json };
    expect(data.rows.map((row) => row.id)).toEqual([
      'main-json',
      'main-binary',
      'worker-json',
      'worker-binary',
      'bounded-binary',
    ]);
    for (const row of data.rows) {
      expect(row.errors).toBe(0);
      expect(((row.okPerSecond as Json).median as number) > 0).toBe(true);
      expect(((row.p50Ms as Json).median as number) > 0).toBe(true);
    }
    expect(data.sizing.boundedQueue as number).toBeLessThan(data.sizing.connections as number);
  });

  it('sizes the infer function and the layer', () => {
    const data = results.get('size')?.data as { rows: Json[] };
    const items = data.rows.map((row) => row.item);
    expect(items).toContain('function infer');
    expect(items).toContain('layer onnxruntime (x86_64)');
    for (const row of data.rows) expect(row.zippedBytes as number).toBeLessThan(row.unzippedBytes as number);
  });
});
