/**
 * Parquet jobs through the real batch handler: DuckDB writes the inputs (nulls, a list column, a
 * dictionary-encoded id column, several row groups, lists of the wrong length), s3rver's events drive the
 * handler, onnxruntime scores, and DuckDB reads the `.out.parquet` back, compared with the model's math.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { zstdCompressor } from '../../shared/adapters/zstd-compressor';
import type { JobOutcome } from '../../shared/core/batch/batch-job';
import type { Checkpoint, Manifest } from '../../shared/core/batch/job-state';
import { buildLinearModel, LINEAR_IN, LINEAR_OUT } from '../../tools/onnx/model-builder';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { expectClose } from '../support/golden';
import { publishModel } from '../support/model-repository';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type BatchHarness,
  batchHarness,
  budgetContext,
  EventLog,
  getBytes,
  getText,
  INPUT_PREFIX,
  jsonLines,
  linear,
  listKeys,
  MODEL_PREFIX,
  OUTPUT_PREFIX,
  publishLinear,
} from './batch-harness';

const ROWS = 10_000;
/** DuckDB rounds ROW_GROUP_SIZE up to its vector size (2,048 rows): 5 row groups of 10,000 rows. */
const GROUP = 2048;
let s3: S3Server;
let events: EventLog;
let dir: string;
let duck: DuckDBConnection;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  dir = await mkdtemp(join(tmpdir(), 'parquet-job-'));
  duck = await (await DuckDBInstance.create(':memory:')).connect();
  // One thread: row groups of exactly ROW_GROUP_SIZE rows, in row order.
  await duck.run('SET threads = 1');
  await publishLinear(s3);
  // The same model with a column mapping in its config.json: scalar columns by prefix, another id column.
  await publishModel(
    s3.putObject,
    s3.bucket,
    MODEL_PREFIX,
    'mapped',
    { '1': { onnx: buildLinearModel() } },
    { maxBatchSize: 64, batch: { idColumn: 'key', inputs: { x: { prefix: 'f' } } } },
  );
});

afterAll(async () => {
  duck?.closeSync();
  await s3?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Element j of row i's features (exact in float32). */
const feature = (i: number, j: number) => ((i * 7 + j * 3) % 17) / 4 - 2;
const featureSql = (j: number) => `((i * 7 + ${j * 3}) % 17) / 4 - 2`;
const features = (i: number) => Array.from({ length: LINEAR_IN }, (_, j) => feature(i, j));

/** The list-column input: ids with nulls (dictionary-encoded), null lists and lists of the wrong length. */
const LISTS_SQL = `SELECT CASE WHEN i % 97 = 5 THEN NULL ELSE 'k-' || (i % 50) END AS id,
    CASE WHEN i % 89 = 3 THEN NULL
         WHEN i % 101 = 7 THEN [1.0, 2.0]::FLOAT[]
         ELSE [${Array.from({ length: LINEAR_IN }, (_, j) => featureSql(j)).join(', ')}]::FLOAT[] END AS x
  FROM range(${ROWS}) t(i) ORDER BY i`;

/** The rows of {@link LISTS_SQL} that fail, and the message of each. */
function listFailures(): Map<number, string> {
  const failures = new Map<number, string>();
  for (let i = 0; i < ROWS; i++) {
    if (i % 97 === 5) failures.set(i, `row ${i}: id column 'id' is null`);
    else if (i % 89 === 3) failures.set(i, `row ${i}: column 'x' is null, expected a list`);
    else if (i % 101 === 7) failures.set(i, `row ${i}: column 'x' holds 2 values, expected 10 (shape [10])`);
  }
  return failures;
}

/** DuckDB writes `select` as Parquet; returns the file's bytes. */
async function duckParquet(name: string, select: string, options: string): Promise<Uint8Array> {
  const path = join(dir, name);
  await duck.run(`COPY (${select}) TO '${path}' (FORMAT parquet, ${options})`);
  return new Uint8Array(await readFile(path));
}

async function query(sql: string): Promise<Record<string, unknown>[]> {
  return (await duck.runAndReadAll(sql)).getRowObjectsJS() as Record<string, unknown>[];
}

/** Uploads `body` and invokes the handler with s3rver's event for it. */
async function put(h: BatchHarness, key: string, body: Uint8Array, context = budgetContext(() => 900_000)) {
  await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: body }));
  return outcomeOf(await h.invoke(events.lastFor(key), context));
}

function outcomeOf(result: unknown): JobOutcome {
  const outcomes = (result as { outcomes: JobOutcome[] }).outcomes;
  expect(outcomes).toHaveLength(1);
  return outcomes[0] as JobOutcome;
}

async function manifestOf(base: string): Promise<Manifest | null> {
  return JSON.parse((await getText(s3, `${base}.manifest.json`)) ?? 'null') as Manifest | null;
}

/** Copies an output object to a local file DuckDB can read; returns its path. */
async function local(key: string): Promise<string> {
  const bytes = await getBytes(s3, key);
  if (bytes === undefined) throw new Error(`${key} does not exist`);
  const path = join(dir, key.replace(/\//g, '_'));
  await writeFile(path, bytes);
  return path;
}

describe('Parquet batch jobs through the handler', () => {
  const data = () => duckParquet('lists.parquet', LISTS_SQL, `COMPRESSION zstd, ROW_GROUP_SIZE ${GROUP}`);

  it('scores a DuckDB file into .out.parquet, failed rows into .errors.jsonl with their row', async () => {
    const body = await data();
    const meta = await query(
      `SELECT row_group_id, path_in_schema, encodings FROM parquet_metadata('${join(dir, 'lists.parquet')}')`,
    );
    expect(new Set(meta.map((m) => m.row_group_id)).size).toBe(5);
    expect(
      meta.filter((m) => m.path_in_schema === 'id').every((m) => String(m.encodings).includes('DICTIONARY')),
    ).toBe(true);

    const h = await batchHarness(s3, { ONNX_SERVE_BATCH_PART_RECORDS: '3000' });
    const outcome = await put(h, `${INPUT_PREFIX}/linear/lists.parquet`, body);
    const failures = listFailures();
    expect(outcome).toMatchObject({
      status: 'succeeded',
      counts: { read: ROWS, scored: ROWS - failures.size, failed: failures.size },
    });
    const base = `${OUTPUT_PREFIX}/linear/lists`;
    const path = await local(`${base}.out.parquet`);
    expect(
      (await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`)).map((c) => [
        c.column_name,
        c.column_type,
      ]),
    ).toEqual([
      ['id', 'VARCHAR'],
      ['y', 'FLOAT[]'],
    ]);
    const out = await query(`SELECT id, y FROM read_parquet('${path}')`);
    const good = Array.from({ length: ROWS }, (_, i) => i).filter((i) => !failures.has(i));
    expect(out).toHaveLength(good.length);
    out.forEach((row, k) => {
      const i = good[k] as number;
      expect(row.id).toBe(`k-${i % 50}`);
      expect(row.y).toHaveLength(LINEAR_OUT);
      expectClose(row.y as number[], linear(features(i)));
    });
    const errors = jsonLines(await getText(s3, `${base}.errors.jsonl`));
    expect(errors.map((e) => [e.row, (e.error as { message: string }).message])).toEqual([...failures]);
    expect(errors.find((e) => e.row === 3)).toEqual({
      row: 3,
      id: 'k-3',
      error: { code: 'invalid_input', message: `row 3: column 'x' is null, expected a list` },
    });
    const manifest = (await manifestOf(base)) as Manifest;
    expect(manifest.input).toMatchObject({ format: 'parquet', gzip: false, size: body.byteLength });
    // Parts of whole row groups (3,000 rows a part: two groups), rows and groups tiling the file.
    expect(manifest.parts.map((p) => [p.start, p.end, p.firstLine, p.lastLine, p.read])).toEqual([
      [0, 2, 0, 4095, 4096],
      [2, 4, 4096, 8191, 4096],
      [4, 5, 8192, 9999, 1808],
    ]);
    for (const p of manifest.parts) expect(p.read).toBe(p.scored + p.failed);
    expect(manifest.outputs?.out).toEqual({ key: `${base}.out.parquet`, bytes: expect.any(Number) });
    expect(JSON.stringify(manifest)).not.toContain('rowGroups');
    // The work folder is gone after the commit.
    expect(await listKeys(s3, `${base}.parts/`)).toEqual([]);
  });

  it('continues mid-file with a tiny time budget, one part each, to the same bytes as one run', async () => {
    const body = await data();
    const env = { ONNX_SERVE_BATCH_PART_RECORDS: String(GROUP), ONNX_SERVE_BATCH_TIME_MARGIN_MS: '60000' };
    const reference = await batchHarness(s3, env);
    expect((await put(reference, `${INPUT_PREFIX}/linear/one-run.parquet`, body)).status).toBe('succeeded');
    const h = await batchHarness(s3, env);
    // 60 s of margin and 30 s left: every invocation stops after the one part it must do.
    const short = () => budgetContext(() => 30_000);
    expect((await put(h, `${INPUT_PREFIX}/linear/hops.parquet`, body, short())).status).toBe('continued');
    const checkpoint = JSON.parse(
      (await getText(
        s3,
        (
          await listKeys(s3, `${OUTPUT_PREFIX}/linear/hops.parts/`)
        ).find((k) => k.endsWith('checkpoint.json')) as string,
      )) ?? '{}',
    ) as Checkpoint;
    // The checkpoint names the next row group and keeps the part's row-group metadata for the footer.
    expect(checkpoint.next).toEqual({ offset: 1, line: GROUP });
    expect(checkpoint.parts[0]?.rowGroups).toContain('num_rows');
    const results = await h.drain(short);
    // Five parts, one an invocation, and the commit in a sixth (it does not fit in the margin either).
    expect(h.scheduled.map((p) => p.onnxServerlessBatch.hop)).toEqual([1, 2, 3, 4, 5]);
    expect((results.at(-1) as JobOutcome).status).toBe('succeeded');
    for (const suffix of ['.out.parquet', '.errors.jsonl']) {
      const one = await getBytes(s3, `${OUTPUT_PREFIX}/linear/one-run${suffix}`);
      const hops = await getBytes(s3, `${OUTPUT_PREFIX}/linear/hops${suffix}`);
      expect(hops).toBeDefined();
      expect(Buffer.from(hops as Uint8Array).equals(Buffer.from(one as Uint8Array))).toBe(true);
    }
    const manifest = (await manifestOf(`${OUTPUT_PREFIX}/linear/hops`)) as Manifest;
    expect(manifest.timings.invocations).toBe(6);
    expect(manifest.counts).toEqual((await manifestOf(`${OUTPUT_PREFIX}/linear/one-run`))?.counts);
  });

  it('writes zstd on request (ONNX_SERVE_BATCH_PARQUET_COMPRESSION=zstd), read by DuckDB as the snappy output', async () => {
    const env = { ONNX_SERVE_BATCH_PARQUET_COMPRESSION: 'zstd' };
    if (zstdCompressor() === undefined) {
      // Node before 22.15: refused at start-up, every job would fail otherwise.
      await expect(batchHarness(s3, env)).rejects.toThrow(/BATCH_PARQUET_COMPRESSION: zstd needs Node 22.15/);
      return;
    }
    const body = await data();
    for (const [name, h] of [
      ['as-zstd', await batchHarness(s3, env)],
      ['as-snappy', await batchHarness(s3)],
    ] as const) {
      expect((await put(h, `${INPUT_PREFIX}/linear/${name}.parquet`, body)).status).toBe('succeeded');
    }
    const zstd = await local(`${OUTPUT_PREFIX}/linear/as-zstd.out.parquet`);
    const snappy = await local(`${OUTPUT_PREFIX}/linear/as-snappy.out.parquet`);
    const codecs = async (path: string) =>
      (await query(`SELECT DISTINCT compression FROM parquet_metadata('${path}')`)).map((r) => r.compression);
    expect(await codecs(zstd)).toEqual(['ZSTD']);
    expect(await codecs(snappy)).toEqual(['SNAPPY']);
    const rows = await query(`SELECT id, y FROM read_parquet('${zstd}')`);
    expect(rows).toHaveLength(ROWS - listFailures().size);
    expect(rows).toEqual(await query(`SELECT id, y FROM read_parquet('${snappy}')`));
  });

  it('writes JSON Lines on request (ONNX_SERVE_BATCH_PARQUET_OUTPUT=jsonl)', async () => {
    const h = await batchHarness(s3, { ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'jsonl' });
    expect((await put(h, `${INPUT_PREFIX}/linear/as-lines.parquet`, await data())).status).toBe('succeeded');
    const base = `${OUTPUT_PREFIX}/linear/as-lines`;
    expect(await getBytes(s3, `${base}.out.parquet`)).toBeUndefined();
    const lines = jsonLines(await getText(s3, `${base}.out.jsonl`));
    expect(lines).toHaveLength(ROWS - listFailures().size);
    expect(lines[0]).toMatchObject({ id: 'k-0' });
    expectClose((lines[0] as { outputs: { y: number[] } }).outputs.y, linear(features(0)));
  });

  it("fills inputs from the model's batch mapping in config.json: scalar columns by prefix, another id", async () => {
    const columns = Array.from({ length: LINEAR_IN }, (_, j) =>
      j === 3
        ? `CASE WHEN i % 13 = 0 THEN NULL ELSE ${featureSql(j)} END AS f${j}`
        : `${featureSql(j)}::DOUBLE AS f${j}`,
    ).join(', ');
    const body = await duckParquet(
      'scalars.parquet',
      `SELECT i * 10 AS key, ${columns}, 'noise' AS note FROM range(300) t(i) ORDER BY i`,
      'COMPRESSION snappy, ROW_GROUP_SIZE 100',
    );
    const h = await batchHarness(s3);
    const outcome = await put(h, `${INPUT_PREFIX}/mapped/scalars.parquet`, body);
    const failed = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 13 === 0);
    expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 300, failed: failed.length } });
    const path = await local(`${OUTPUT_PREFIX}/mapped/scalars.out.parquet`);
    const out = await query(`SELECT key, y FROM read_parquet('${path}')`);
    expect(out.map((r) => r.key)).toEqual(
      Array.from({ length: 300 }, (_, i) => i)
        .filter((i) => i % 13 !== 0)
        .map((i) => BigInt(i * 10)),
    );
    expectClose(out[0]?.y as number[], linear(features(1)));
    const errors = jsonLines(await getText(s3, `${OUTPUT_PREFIX}/mapped/scalars.errors.jsonl`));
    expect(errors[0]).toEqual({
      row: 0,
      id: 0,
      error: { code: 'invalid_input', message: `row 0: column 'f3' is null, not a number` },
    });
  });

  it('refuses a bad batch mapping in config.json with an error naming it', async () => {
    await publishModel(
      s3.putObject,
      s3.bucket,
      MODEL_PREFIX,
      'badmap',
      { '1': { onnx: buildLinearModel() } },
      { maxBatchSize: 64, batch: { inputs: { x: { columns: [] } } } },
    );
    const h = await batchHarness(s3);
    await expect(put(h, `${INPUT_PREFIX}/badmap/a.parquet`, await data())).rejects.toThrow(
      "'batch.inputs.x'.columns must be a non-empty array of column names",
    );
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/badmap/`)).toEqual([]);
  });

  it('writes a valid empty .out.parquet when every row fails, and scores a file without rows', async () => {
    const h = await batchHarness(s3);
    const allFail = await duckParquet(
      'all-fail.parquet',
      `SELECT NULL::VARCHAR AS id, [1.0]::FLOAT[] AS x FROM range(10) t(i)`,
      'COMPRESSION snappy',
    );
    expect(await put(h, `${INPUT_PREFIX}/linear/all-fail.parquet`, allFail)).toMatchObject({
      status: 'succeeded',
      counts: { read: 10, scored: 0, failed: 10 },
    });
    const noRows = await duckParquet(
      'no-rows.parquet',
      `SELECT 'a' AS id, [1.0]::FLOAT[] AS x FROM range(10) t(i) WHERE i < 0`,
      'COMPRESSION snappy',
    );
    expect(await put(h, `${INPUT_PREFIX}/linear/no-rows.parquet`, noRows)).toMatchObject({
      status: 'succeeded',
      counts: { read: 0, scored: 0, failed: 0 },
    });
    for (const name of ['all-fail', 'no-rows']) {
      const path = await local(`${OUTPUT_PREFIX}/linear/${name}.out.parquet`);
      expect(await query(`SELECT count(*) AS n FROM read_parquet('${path}')`)).toEqual([{ n: 0n }]);
    }
  });

  describe('hostile objects', () => {
    /** The job's outcome and the keys it left under its output base. */
    async function run(name: string, body: Uint8Array) {
      const h = await batchHarness(s3, { ONNX_SERVE_BATCH_PART_RECORDS: String(GROUP) });
      const outcome = await put(h, `${INPUT_PREFIX}/linear/${name}.parquet`, body);
      return { outcome, keys: await listKeys(s3, `${OUTPUT_PREFIX}/linear/${name}.`) };
    }

    it('fails an object that is not Parquet: a failed manifest, no output', async () => {
      const { outcome, keys } = await run('fake', Buffer.from('{"x": [1, 2, 3]}\n'.repeat(10)));
      expect(outcome).toMatchObject({
        status: 'failed',
        error: { code: 'unsupported_input', message: expect.stringContaining('does not end with PAR1') },
      });
      expect(keys).toEqual([`${OUTPUT_PREFIX}/linear/fake.manifest.json`]);
    });

    it('fails a truncated object', async () => {
      const body = await data();
      const { outcome, keys } = await run('truncated', body.subarray(0, body.byteLength - 100));
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'unsupported_input' } });
      expect(keys).toEqual([`${OUTPUT_PREFIX}/linear/truncated.manifest.json`]);
    });

    it('fails a footer that places column chunks outside the data, before reading any row', async () => {
      const body = await data();
      // 4,000 bytes cut out of the data: the footer's offsets point past where the data now ends.
      const cut = Buffer.concat([body.subarray(0, 1000), body.subarray(5000)]);
      const { outcome, keys } = await run('lying', cut);
      expect(outcome).toMatchObject({
        status: 'failed',
        error: { code: 'unsupported_input', message: expect.stringContaining('outside the data') },
      });
      expect(keys).toEqual([`${OUTPUT_PREFIX}/linear/lying.manifest.json`]);
    });

    it('fails a file whose pages are garbage half way, deleting the parts written before', async () => {
      const body = Buffer.from(await data());
      const groups = await query(
        `SELECT row_group_id, min(data_page_offset) AS at FROM parquet_metadata('${join(dir, 'lists.parquet')}') GROUP BY row_group_id ORDER BY row_group_id`,
      );
      // Row group 3's first bytes (its page headers) overwritten: groups 0-2 score, then decoding fails.
      const at = Number((groups[3] as { at: bigint }).at);
      body.fill(0xff, at, at + 64);
      const { outcome, keys } = await run('garbage', body);
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'unsupported_input' } });
      expect(keys).toEqual([`${OUTPUT_PREFIX}/linear/garbage.manifest.json`]);
      expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/garbage.parts/`)).toEqual([]);
    });

    it('does not commit when the parts do not add up to the rows the footer declares', async () => {
      const h = await batchHarness(s3, {
        ONNX_SERVE_BATCH_PART_RECORDS: String(GROUP),
        ONNX_SERVE_BATCH_TIME_MARGIN_MS: '60000',
      });
      const short = () => budgetContext(() => 30_000);
      expect((await put(h, `${INPUT_PREFIX}/linear/short.parquet`, await data(), short())).status).toBe(
        'continued',
      );
      const key = (await listKeys(s3, `${OUTPUT_PREFIX}/linear/short.parts/`)).find((k) =>
        k.endsWith('checkpoint.json'),
      ) as string;
      const checkpoint = JSON.parse((await getText(s3, key)) as string) as Checkpoint;
      // A part that says it read one row fewer than its row groups hold (and scored one fewer).
      const [part] = checkpoint.parts;
      const lying = {
        ...checkpoint,
        parts: [{ ...part, read: (part?.read ?? 0) - 1, scored: (part?.scored ?? 0) - 1 }],
      };
      await s3.putObject(s3.bucket, key, JSON.stringify(lying));
      await expect(h.drain(short)).rejects.toThrow(
        'part 0 read 2047 rows from row 0, expected 2048 from row 0',
      );
      expect(await manifestOf(`${OUTPUT_PREFIX}/linear/short`)).toBeNull();
      expect(await getBytes(s3, `${OUTPUT_PREFIX}/linear/short.out.parquet`)).toBeUndefined();
    });
  });
});

describe('Parquet jobs through a faulty network', () => {
  let proxy: FaultProxy;
  /** The clean run's output, which every run with a fault must reproduce byte for byte. */
  let clean: { out: Uint8Array; errors: string | undefined; counts: Manifest['counts'] };
  let body: Uint8Array;
  const env = { ONNX_SERVE_BATCH_PART_RECORDS: '3000' };

  beforeAll(async () => {
    proxy = await startFaultProxy(s3.endpoint);
    body = await duckParquet('faults.parquet', LISTS_SQL, `COMPRESSION zstd, ROW_GROUP_SIZE ${GROUP}`);
    const h = await batchHarness(s3, env, { client: proxy.client });
    expect(await put(h, inputKey('clean'), body)).toMatchObject({ status: 'succeeded' });
    clean = await outputsOf('clean');
  });

  afterAll(async () => {
    await proxy?.close();
  });

  afterEach(() => {
    proxy.clear();
  });

  const inputKey = (name: string) => `${INPUT_PREFIX}/linear/${name}.parquet`;

  async function outputsOf(name: string) {
    const base = `${OUTPUT_PREFIX}/linear/${name}`;
    const out = await getBytes(s3, `${base}.out.parquet`);
    if (out === undefined) throw new Error(`${base}.out.parquet does not exist`);
    return {
      out,
      errors: await getText(s3, `${base}.errors.jsonl`),
      counts: (await manifestOf(base))?.counts as Manifest['counts'],
    };
  }

  async function expectClean(name: string): Promise<void> {
    const got = await outputsOf(name);
    expect(got.counts).toEqual(clean.counts);
    expect(Buffer.from(got.out).equals(Buffer.from(clean.out))).toBe(true);
    expect(got.errors).toBe(clean.errors);
  }

  /** The job's ranged GETs of the input: the footer's tail read first, then one per row group. */
  const inputGets = (name: string) =>
    proxy.log
      .filter((r) => r.method === 'GET' && r.key === inputKey(name))
      .map((r) => `${r.status}|${r.fault ?? ''}`);

  it.each([
    ['a reset mid-body', { kind: 'reset', after: { fraction: 0.5 } }],
    ['an early close mid-body', { kind: 'close', after: { fraction: 0.5 } }],
    ['a body cut at half with a Content-Length that agrees', { kind: 'truncate', to: { fraction: 0.5 } }],
    ['a 500', { kind: 'status', status: 500 }],
  ] as const)('reads a row group again after %s, to the output of a clean run', async (_, fault) => {
    const name = `rg-${fault.kind}`;
    const h = await batchHarness(s3, env, { client: proxy.client });
    // The footer's read goes through; the second row group's read breaks (once).
    const rule = proxy.inject({ method: 'GET', key: inputKey(name), ranged: true, skip: 2, fault });
    expect(await put(h, inputKey(name), body)).toMatchObject({ status: 'succeeded' });
    expect(rule.hits).toBe(1);
    await expectClean(name);
    expect(inputGets(name).filter((g) => !g.endsWith('|'))).toHaveLength(1);
  });

  it('reads the footer again after its read is cut short', async () => {
    const name = 'footer-cut';
    const h = await batchHarness(s3, env, { client: proxy.client });
    const rule = proxy.inject({
      method: 'GET',
      key: inputKey(name),
      ranged: true,
      fault: { kind: 'truncate', to: { fraction: 0.5 } },
    });
    expect(await put(h, inputKey(name), body)).toMatchObject({ status: 'succeeded' });
    expect(rule.hits).toBe(1);
    await expectClean(name);
  });

  it('commits nothing while row group reads answer another ETag; the re-delivered event scores', async () => {
    const name = 'rg-etag';
    const h = await batchHarness(s3, env, { client: proxy.client });
    proxy.inject({
      method: 'GET',
      key: inputKey(name),
      ranged: true,
      skip: 2,
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'headers', set: { etag: '"0123456789abcdef0123456789abcdef"' } },
    });
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: inputKey(name), Body: body }));
    const event = events.lastFor(inputKey(name));
    await expect(
      h.invoke(
        event,
        budgetContext(() => 900_000),
      ),
    ).rejects.toThrow(/replaced|disagree/);
    expect(await manifestOf(`${OUTPUT_PREFIX}/linear/${name}`)).toBeNull();
    expect(await getBytes(s3, `${OUTPUT_PREFIX}/linear/${name}.out.parquet`)).toBeUndefined();
    proxy.clear();
    expect(
      outcomeOf(
        await h.invoke(
          event,
          budgetContext(() => 900_000),
        ),
      ),
    ).toMatchObject({ status: 'succeeded' });
    await expectClean(name);
  });
});
