/**
 * A Parquet input through the Step Functions definition (test/support/asl-interpreter.ts driving the real
 * batch handler against s3rver): the plan cuts it into shards of whole row groups, and the union of the
 * shards must equal a single run, read back with DuckDB.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { JobOutcome } from '../../shared/core/batch/batch-job';
import type { Manifest } from '../../shared/core/batch/job-state';
import { LINEAR_IN } from '../../tools/onnx/model-builder';
import { definition, execute, FUNCTION_ARN, type Services } from '../support/asl-interpreter';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type BatchHarness,
  batchHarness,
  budgetContext,
  EventLog,
  getBytes,
  getText,
  INPUT_PREFIX,
  listKeys,
  OUTPUT_PREFIX,
  publishLinear,
} from './batch-harness';

/** DuckDB rounds ROW_GROUP_SIZE up to its vector size (2,048 rows): 5 row groups of 10,000 rows. */
const ROWS = 10_000;
const GROUPS = 5;
/** The smallest shard size allowed: every row group is a shard of its own. */
const env = { ONNX_SERVE_BATCH_PART_RECORDS: '500', ONNX_SERVE_BATCH_SHARD_BYTES: '1024' };

let s3: S3Server;
let events: EventLog;
let dir: string;
let duck: DuckDBConnection;
let body: Uint8Array;

/** Rows with null ids, null lists and lists of the wrong length among good ones. */
const SQL = `SELECT CASE WHEN i % 97 = 5 THEN NULL ELSE 'k-' || i END AS id,
    CASE WHEN i % 89 = 3 THEN NULL
         WHEN i % 101 = 7 THEN [1.0, 2.0]::FLOAT[]
         ELSE [${Array.from({ length: LINEAR_IN }, (_, j) => `((i * 7 + ${j * 3}) % 17) / 4 - 2`).join(', ')}]::FLOAT[] END AS x
  FROM range(${ROWS}) t(i) ORDER BY i`;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  await publishLinear(s3);
  dir = await mkdtemp(join(tmpdir(), 'parquet-sfn-'));
  duck = await (await DuckDBInstance.create(':memory:')).connect();
  await duck.run('SET threads = 1');
  const path = join(dir, 'in.parquet');
  await duck.run(`COPY (${SQL}) TO '${path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2048)`);
  body = new Uint8Array(await readFile(path));
});

afterAll(async () => {
  duck?.closeSync();
  await s3?.close();
  await rm(dir, { recursive: true, force: true });
});

async function upload(key: string): Promise<void> {
  await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: body }));
}

async function runStateMachine(h: BatchHarness, input: unknown) {
  const trace: string[] = [];
  const services: Services = {
    invoke: async (functionName, payload) => {
      expect(functionName).toBe(FUNCTION_ARN);
      return JSON.parse(
        JSON.stringify(
          await h.invoke(
            payload,
            budgetContext(() => 900_000),
          ),
        ),
      );
    },
    getObject: async (bucket, key) => {
      const text = await getText(s3, key);
      if (text === undefined || bucket !== s3.bucket) throw new Error(`S3.NoSuchKey: ${bucket}/${key}`);
      return text;
    },
  };
  const output = await execute(definition(), input, services, trace);
  return { output, trace };
}

/** The rows of an output object as DuckDB reads them, in file order. */
async function rowsOf(key: string): Promise<Record<string, unknown>[]> {
  const bytes = await getBytes(s3, key);
  if (bytes === undefined) throw new Error(`${key} does not exist`);
  const path = join(dir, key.replace(/\//g, '_'));
  await writeFile(path, bytes);
  return (await duck.runAndReadAll(`SELECT * FROM '${path}'`)).getRowObjectsJS() as Record<string, unknown>[];
}

async function manifestOf(name: string): Promise<Manifest> {
  return JSON.parse((await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.manifest.json`)) ?? '{}') as Manifest;
}

describe('a Parquet input through the state machine', () => {
  it('is planned as shards of whole row groups whose union equals a single run', async () => {
    const single = `${INPUT_PREFIX}/linear/single.parquet`;
    await upload(single);
    const h = await batchHarness(s3, env);
    const result = (await h.invoke(events.lastFor(single))) as { outcomes: readonly JobOutcome[] };
    expect(result.outcomes[0]?.status).toBe('succeeded');

    const sharded = `${INPUT_PREFIX}/linear/sharded.parquet`;
    await upload(sharded);
    const { output, trace } = await runStateMachine(await batchHarness(s3, env), {
      bucket: s3.bucket,
      key: sharded,
    });
    const one = await manifestOf('single');
    const union = await manifestOf('sharded');
    expect(output).toMatchObject({ status: 'succeeded', counts: one.counts });
    expect(union.counts.read).toBe(ROWS);
    expect(union.counts.failed).toBeGreaterThan(0);
    // One shard per row group, scored by parallel children of the Distributed Map.
    expect(new Set(union.parts.map((p) => p.shard[0])).size).toBe(GROUPS);
    expect(trace).toContain('Score a batch of shards');

    const want = await rowsOf(`${OUTPUT_PREFIX}/linear/single.out.parquet`);
    const got = await rowsOf(`${OUTPUT_PREFIX}/linear/sharded.out.parquet`);
    expect(got).toHaveLength(one.counts.scored);
    expect(got).toEqual(want);
    expect(new Set(got.map((r) => r.id)).size).toBe(got.length);
    expect(await getText(s3, `${OUTPUT_PREFIX}/linear/sharded.errors.jsonl`)).toBe(
      await getText(s3, `${OUTPUT_PREFIX}/linear/single.errors.jsonl`),
    );
    // Plan, shard list, checkpoints and parts are gone after the commit.
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/sharded.`)).toEqual([
      `${OUTPUT_PREFIX}/linear/sharded.errors.jsonl`,
      `${OUTPUT_PREFIX}/linear/sharded.manifest.json`,
      `${OUTPUT_PREFIX}/linear/sharded.out.parquet`,
    ]);
  });
});
