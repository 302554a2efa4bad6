/**
 * Parquet in and out with files nobody here wrote: DuckDB writes the inputs (nulls, a list column, a
 * dictionary-encoded id column, several row groups), they are read from s3rver with ranged GETs, mapped to
 * tensors, scored by onnxruntime (the Linear model), written as Parquet parts concatenated by the store, and
 * DuckDB reads the result back without options.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { type ColumnMetaData, type FileMetaData, type PageHeader, parquetMetadata } from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';
import { ByteWriter } from 'hyparquet-writer';
import { writePageHeader } from 'hyparquet-writer/src/datapage.js';
import { writeMetadata } from 'hyparquet-writer/src/metadata.js';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { MAX_ROW_GROUP_VALUES, ParquetObjectReader } from '../../shared/adapters/parquet-object-reader';
import {
  encodeRowGroups,
  outputSchemaFor,
  type ParquetWriteOptions,
  parquetFileEnds,
  type ScoredBatch,
} from '../../shared/adapters/parquet-output-writer';
import { S3ObjectIo } from '../../shared/adapters/s3-object-io';
import { zstdCompressor } from '../../shared/adapters/zstd-compressor';
import { UnsupportedInputError } from '../../shared/core/batch/errors';
import {
  DEFAULT_PARQUET_MAPPING,
  mapRows,
  type ParquetMappingConfig,
  planParquetColumns,
  type RowFailure,
} from '../../shared/core/batch/parquet-mapping';
import type { LoadedModel } from '../../shared/core/ports';
import type { Tensor } from '../../shared/core/tensor';
import { buildLinearModel, LINEAR_IN, LINEAR_OUT, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { ENGINE_OPTIONS } from '../support/engine-fixtures';
import { type S3Server, startS3Server } from '../support/s3-server';

const ROWS = 5000;
const BUCKET = 'pq';
let s3: S3Server;
let io: S3ObjectIo;
let dir: string;
let duck: DuckDBConnection;
let model: LoadedModel;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: BUCKET });
  io = new S3ObjectIo({ client: s3.client });
  dir = await mkdtemp(join(tmpdir(), 'parquet-'));
  duck = await (await DuckDBInstance.create(':memory:')).connect();
  model = await new OrtEngine({ defaultIntraOpThreads: 1 }).load(
    { bytes: buildLinearModel(), format: 'onnx' },
    ENGINE_OPTIONS,
  );
});

afterAll(async () => {
  await model?.release();
  duck?.closeSync();
  await s3?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Element j of row i's features (exact in float32). */
const feature = (i: number, j: number) => ((i * 7 + j * 3) % 17) / 4 - 2;
const featureSql = (j: number) => `((i * 7 + ${j * 3}) % 17) / 4 - 2`;

/** Writes `select` to a Parquet file with DuckDB and uploads it; returns its key and size. */
async function duckParquet(
  name: string,
  select: string,
  options: string,
): Promise<{ key: string; size: number }> {
  const path = join(dir, name);
  await duck.run(`COPY (${select}) TO '${path}' (FORMAT parquet, ${options})`);
  const bytes = await import('node:fs/promises').then((fs) => fs.readFile(path));
  await s3.putObject(BUCKET, name, bytes);
  return { key: name, size: bytes.byteLength };
}

async function query(sql: string): Promise<Record<string, unknown>[]> {
  return (await duck.runAndReadAll(sql)).getRowObjectsJS() as Record<string, unknown>[];
}

/** Scores a Parquet object row group by row group; returns the result file's path and the failures. */
async function score(
  key: string,
  size: number,
  mapping: ParquetMappingConfig,
): Promise<{ path: string; failures: RowFailure[]; reader: ParquetObjectReader; scored: number }> {
  const reader = await ParquetObjectReader.open(io, { bucket: BUCKET, key }, { size });
  const plan = planParquetColumns(model.signature, true, reader.info.columns, mapping);
  const idType = 'STRING' as const;
  const schema = outputSchemaFor(model.signature.outputs, 'id', idType);
  const failures: RowFailure[] = [];
  const parts: { key: string; bytes: number; rowGroups: string }[] = [];
  let scored = 0;
  for (const group of reader.info.rowGroups) {
    const chunk = await reader.readRowGroup(group.index, plan.columns);
    const mapped = mapRows(plan, chunk, group.firstRow, group.firstRow + group.rows, {
      maxBatchRecords: 256,
      maxBatchBytes: 1 << 20,
      maxTensorElements: 1 << 20,
    });
    failures.push(...mapped.failures);
    const batches: ScoredBatch[] = [];
    for (const batch of mapped.batches) {
      const feeds: Record<string, Tensor> = {};
      for (const input of batch.inputs) feeds[input.name] = input;
      const outputs = await model.run(feeds);
      batches.push({
        ids: batch.ids,
        outputs: Object.entries(outputs).map(([name, t]) => ({ name, ...t })),
      });
      scored += batch.rows.length;
    }
    const part = encodeRowGroups(schema, batches);
    const partKey = `out/${key}.parts/${group.index}.parquet`;
    await io.write({ bucket: BUCKET, key: partKey }, [part.bytes], {
      contentType: 'application/octet-stream',
      gzip: false,
    });
    parts.push({ key: partKey, bytes: part.bytes.byteLength, rowGroups: part.rowGroups });
  }
  const ends = parquetFileEnds(schema, parts);
  await io.putText({ bucket: BUCKET, key: `out/${key}.head` }, 'PAR1');
  await io.write({ bucket: BUCKET, key: `out/${key}.footer` }, [ends.footer], {
    contentType: 'application/octet-stream',
    gzip: false,
  });
  expect(Buffer.from(ends.head).toString()).toBe('PAR1');
  const outKey = `out/${key}.out.parquet`;
  await io.concat(
    { bucket: BUCKET, key: outKey },
    [
      { key: `out/${key}.head`, bytes: 4 },
      ...parts.map((p) => ({ key: p.key, bytes: p.bytes })),
      { key: `out/${key}.footer`, bytes: ends.footer.byteLength },
    ],
    'application/vnd.apache.parquet',
  );
  const chunks: Uint8Array[] = [];
  for await (const c of io.read({ bucket: BUCKET, key: outKey })) chunks.push(c);
  const path = join(dir, `${key}.out.parquet`);
  await writeFile(path, Buffer.concat(chunks));
  return { path, failures, reader, scored };
}

function linear(x: readonly number[]): number[] {
  return LINEAR_WEIGHTS.bias.map(
    (b, o) => b + x.reduce((sum, v, j) => sum + v * ((LINEAR_WEIGHTS.weight[o] as number[])[j] as number), 0),
  );
}

describe('Parquet batch scoring with DuckDB files', () => {
  it('scores a list column with nulls and a dictionary-encoded id, row group by row group', async () => {
    const list = Array.from({ length: LINEAR_IN }, (_, j) => featureSql(j)).join(', ');
    const { key, size } = await duckParquet(
      'lists.parquet',
      `SELECT CASE WHEN i % 97 = 5 THEN NULL ELSE 'k-' || (i % 50) END AS id,
              CASE WHEN i % 89 = 3 THEN NULL
                   WHEN i % 101 = 7 THEN [1.0, 2.0]::FLOAT[]
                   ELSE [${list}]::FLOAT[] END AS x
       FROM range(${ROWS}) t(i) ORDER BY i`,
      'COMPRESSION zstd, ROW_GROUP_SIZE 2048',
    );
    const meta = await query(
      `SELECT row_group_id, path_in_schema, encodings FROM parquet_metadata('${join(dir, key)}')`,
    );
    expect(new Set(meta.map((m) => m.row_group_id)).size).toBeGreaterThanOrEqual(2);
    expect(
      meta.filter((m) => m.path_in_schema === 'id').every((m) => String(m.encodings).includes('DICTIONARY')),
    ).toBe(true);

    s3.requests.clear();
    const { path, failures, reader, scored } = await score(key, size, DEFAULT_PARQUET_MAPPING);

    // Ranged GETs: the footer, then one read per row group, none of them the whole file.
    const gets = s3.requests.entries.filter((e) => e.command === 'GetObject' && e.key === key);
    expect(gets.length).toBeGreaterThanOrEqual(1 + reader.info.rowGroups.length);
    expect(gets.every((g) => g.range !== undefined)).toBe(true);
    const largestGroup = Math.max(...reader.info.rowGroups.map((g) => g.bytes));
    expect(largestGroup).toBeLessThan(size / 2);

    const expectedFailures: [number, string][] = [];
    for (let i = 0; i < ROWS; i++) {
      if (i % 97 === 5) expectedFailures.push([i, `row ${i}: id column 'id' is null`]);
      else if (i % 89 === 3) expectedFailures.push([i, `row ${i}: column 'x' is null, expected a list`]);
      else if (i % 101 === 7)
        expectedFailures.push([i, `row ${i}: column 'x' holds 2 values, expected 10 (shape [10])`]);
    }
    expect(failures.map((f) => [f.row, f.message])).toEqual(expectedFailures);
    expect(scored + failures.length).toBe(ROWS);

    const out = await query(`SELECT id, y FROM read_parquet('${path}')`);
    const schema = await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`);
    expect(schema.map((c) => [c.column_name, c.column_type])).toEqual([
      ['id', 'VARCHAR'],
      ['y', 'FLOAT[]'],
    ]);
    const failed = new Set(expectedFailures.map(([row]) => row));
    const rows = Array.from({ length: ROWS }, (_, i) => i).filter((i) => !failed.has(i));
    expect(out).toHaveLength(rows.length);
    out.forEach((line, k) => {
      const i = rows[k] as number;
      expect(line.id).toBe(`k-${i % 50}`);
      const expected = linear(Array.from({ length: LINEAR_IN }, (_, j) => feature(i, j)));
      const y = line.y as number[];
      expect(y).toHaveLength(LINEAR_OUT);
      for (const [o, v] of y.entries()) expect(v).toBeCloseTo(expected[o] as number, 4);
    });
  });

  it('gathers scalar columns by prefix; a null cell fails its row alone', async () => {
    const columns = Array.from({ length: LINEAR_IN }, (_, j) =>
      j === 3
        ? `CASE WHEN i % 13 = 0 THEN NULL ELSE ${featureSql(j)} END AS f${j}`
        : `${featureSql(j)}::DOUBLE AS f${j}`,
    ).join(', ');
    const { key, size } = await duckParquet(
      'scalars.parquet',
      `SELECT 'r' || i AS id, ${columns}, 'noise' AS note FROM range(300) t(i) ORDER BY i`,
      'COMPRESSION snappy, ROW_GROUP_SIZE 100',
    );
    const { path, failures } = await score(key, size, { idColumn: 'id', inputs: { x: { prefix: 'f' } } });
    expect(failures.map((f) => f.row)).toEqual(
      Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 13 === 0),
    );
    expect(failures[0]?.message).toBe(`row 0: column 'f3' is null, not a number`);
    const out = await query(`SELECT id, y FROM read_parquet('${path}')`);
    expect(out).toHaveLength(300 - failures.length);
    const first = out[0] as { id: string; y: number[] };
    expect(first.id).toBe('r1');
    const expected = linear(Array.from({ length: LINEAR_IN }, (_, j) => feature(1, j)));
    for (const [o, v] of first.y.entries()) expect(v).toBeCloseTo(expected[o] as number, 4);

    // Without the mapping every scalar column is a feature: 11 columns for 10 values is refused.
    await expect(score(key, size, DEFAULT_PARQUET_MAPPING)).rejects.toThrow('11 column(s)');
  });

  it('writes width-1 outputs as scalar columns and others as lists, parts joined, readable by DuckDB', async () => {
    const schema = outputSchemaFor(
      [
        { name: 'score', datatype: 'FP32', shape: [-1, 1] },
        { name: 'flags', datatype: 'BOOL', shape: [-1, 2] },
        { name: 'label', datatype: 'INT64', shape: [-1] },
      ],
      'row',
      'INT64',
    );
    const batch = (ids: number[]): ScoredBatch => ({
      ids,
      outputs: [
        {
          name: 'score',
          datatype: 'FP32',
          shape: [ids.length, 1],
          data: Float32Array.from(ids, (i) => i / 2),
        },
        {
          name: 'flags',
          datatype: 'BOOL',
          shape: [ids.length, 2],
          data: Uint8Array.from(ids.flatMap((i) => [i % 2, 1 - (i % 2)])),
        },
        {
          name: 'label',
          datatype: 'INT64',
          shape: [ids.length],
          data: BigInt64Array.from(ids, (i) => BigInt(i) * 10n),
        },
      ],
    });
    const parts = [
      encodeRowGroups(schema, [batch([0, 1]), batch([2])]),
      encodeRowGroups(schema, [batch([3, 4, 5])], { rowGroupRows: 2, codec: 'SNAPPY' }),
    ];
    const ends = parquetFileEnds(
      schema,
      parts.map((p) => ({ bytes: p.bytes.byteLength, rowGroups: p.rowGroups })),
    );
    const path = join(dir, 'written.parquet');
    await writeFile(path, Buffer.concat([ends.head, ...parts.map((p) => p.bytes), ends.footer]));
    const columns = await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`);
    expect(columns.map((c) => [c.column_name, c.column_type])).toEqual([
      ['row', 'BIGINT'],
      ['score', 'FLOAT'],
      ['flags', 'BOOLEAN[]'],
      ['label', 'BIGINT'],
    ]);
    const groups = await query(`SELECT DISTINCT row_group_id, compression FROM parquet_metadata('${path}')`);
    expect(new Set(groups.map((g) => g.row_group_id)).size).toBe(3);
    expect(new Set(groups.map((g) => g.compression))).toEqual(new Set(['SNAPPY']));
    expect(await query(`SELECT * FROM read_parquet('${path}')`)).toEqual(
      [0, 1, 2, 3, 4, 5].map((i) => ({
        row: BigInt(i),
        score: i / 2,
        flags: [i % 2 === 1, i % 2 === 0],
        label: BigInt(i * 10),
      })),
    );
  });

  it('reuses the value array of a list column two row groups later when the reader is allowed to', async () => {
    const { key, size } = await duckParquet(
      'reuse.parquet',
      `SELECT i AS id, [i, i + 0.5, i + 0.25]::FLOAT[] AS x FROM range(6500) t(i) ORDER BY i`,
      'COMPRESSION snappy, ROW_GROUP_SIZE 2048',
    );
    const reader = await ParquetObjectReader.open(io, { bucket: BUCKET, key }, { size });
    expect(reader.info.rowGroups.length).toBeGreaterThanOrEqual(3);
    const buffers: ArrayBufferLike[] = [];
    for (const group of reader.info.rowGroups) {
      const chunk = await reader.readRowGroup(group.index, ['x'], { reuse: true });
      const values = chunk.list?.('x')?.values as Float32Array;
      buffers.push(values.buffer);
      // Every row is right, whatever buffer it was decoded into.
      const rows = Array.from(chunk.column('x'));
      expect(rows).toEqual(
        Array.from({ length: group.rows }, (_, k) => {
          const i = group.firstRow + k;
          return [i, i + 0.5, i + 0.25].map(Math.fround);
        }),
      );
    }
    expect(buffers[2]).toBe(buffers[0]);
    expect(buffers[1]).not.toBe(buffers[0]);
    // Without it, every row group gets arrays of its own.
    const a = (await reader.readRowGroup(0, ['x'])).list?.('x')?.values as Float32Array;
    const c = (await reader.readRowGroup(2, ['x'])).list?.('x')?.values as Float32Array;
    expect(c.buffer).not.toBe(a.buffer);
  });

  it('writes outputs straight from the tensors, every datatype, over pages and row groups, as DuckDB and hyparquet read them', async () => {
    const specs = [
      { name: 'y', datatype: 'FP32', shape: [-1, 5] },
      { name: 'p', datatype: 'FP64', shape: [-1] },
      { name: 'h', datatype: 'FP16', shape: [-1, 2] },
      { name: 'i8', datatype: 'INT8', shape: [-1, 3] },
      { name: 'u32', datatype: 'UINT32', shape: [-1, 2] },
      { name: 'u64', datatype: 'UINT64', shape: [-1, 2] },
      { name: 'b', datatype: 'BOOL', shape: [-1, 2] },
      { name: 's', datatype: 'BYTES', shape: [-1, 1] },
    ] as const;
    const schema = outputSchemaFor(specs, 'id', 'STRING');
    const y = (i: number, k: number) => Math.fround(i * 0.25 + k);
    const batch = (from: number, n: number): ScoredBatch => {
      const rows = Array.from({ length: n }, (_, k) => from + k);
      return {
        ids: rows.map((i) => `r${i}`),
        outputs: [
          {
            name: 'y',
            datatype: 'FP32',
            shape: [n, 5],
            data: Float32Array.from(rows.flatMap((i) => [0, 1, 2, 3, 4].map((k) => y(i, k)))),
          },
          { name: 'p', datatype: 'FP64', shape: [n], data: Float64Array.from(rows, (i) => i / 3) },
          // 0x3c00 is 1.0 and 0xc000 is -2.0 in half precision.
          {
            name: 'h',
            datatype: 'FP16',
            shape: [n, 2],
            data: Uint16Array.from(rows.flatMap(() => [0x3c00, 0xc000])),
          },
          {
            name: 'i8',
            datatype: 'INT8',
            shape: [n, 3],
            data: Int8Array.from(rows.flatMap((i) => [-(i % 100), 0, i % 100])),
          },
          {
            name: 'u32',
            datatype: 'UINT32',
            shape: [n, 2],
            data: Uint32Array.from(rows.flatMap((i) => [i, 2 ** 32 - 1 - i])),
          },
          {
            name: 'u64',
            datatype: 'UINT64',
            shape: [n, 2],
            data: BigUint64Array.from(rows.flatMap((i) => [BigInt(i), 2n ** 63n + BigInt(i)])),
          },
          {
            name: 'b',
            datatype: 'BOOL',
            shape: [n, 2],
            data: Uint8Array.from(rows.flatMap((i) => [i % 2, 1])),
          },
          { name: 's', datatype: 'BYTES', shape: [n, 1], data: rows.map((i) => `s${i}`) },
        ],
      };
    };
    const total = 90_000;
    // 90,000 rows of 5 floats: 1.8 MB, two pages in the first row group; three 30,000-row row groups.
    const part = encodeRowGroups(schema, [batch(0, 256), batch(256, 40_000), batch(40_256, total - 40_256)], {
      rowGroupRows: 30_000,
      codec: 'SNAPPY',
    });
    expect(part.rows).toBe(total);
    const ends = parquetFileEnds(schema, [{ bytes: part.bytes.byteLength, rowGroups: part.rowGroups }]);
    const path = join(dir, 'direct.parquet');
    const file = Buffer.concat([ends.head, part.bytes, ends.footer]);
    await writeFile(path, file);
    const pages = await query(`SELECT row_group_id, path_in_schema FROM parquet_metadata('${path}')`);
    expect(new Set(pages.map((p) => p.row_group_id)).size).toBe(3);
    const columns = await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`);
    expect(columns.map((c) => [c.column_name, c.column_type])).toEqual([
      ['id', 'VARCHAR'],
      ['y', 'FLOAT[]'],
      ['p', 'DOUBLE'],
      ['h', 'FLOAT[]'],
      ['i8', 'TINYINT[]'],
      ['u32', 'UINTEGER[]'],
      ['u64', 'UBIGINT[]'],
      ['b', 'BOOLEAN[]'],
      ['s', 'VARCHAR'],
    ]);
    const expected = (i: number) => ({
      id: `r${i}`,
      y: [0, 1, 2, 3, 4].map((k) => y(i, k)),
      p: i / 3,
      h: [1, -2],
      i8: [i % 100 === 0 ? 0 : -(i % 100), 0, i % 100],
      u32: [i, 2 ** 32 - 1 - i],
      u64: [BigInt(i), 2n ** 63n + BigInt(i)],
      b: [i % 2 === 1, true],
      s: `s${i}`,
    });
    const sample = [0, 1, 255, 256, 29_999, 30_000, 40_255, 40_256, 59_999, 60_000, total - 1];
    const read = await query(
      `SELECT * FROM (SELECT *, row_number() OVER () - 1 AS n FROM read_parquet('${path}')) WHERE n IN (${sample.join(', ')}) ORDER BY n`,
    );
    expect(read.map(({ n: _n, ...row }) => row)).toEqual(sample.map(expected));
    expect((await query(`SELECT count(*) AS n FROM read_parquet('${path}')`))[0]?.n).toBe(BigInt(total));
    // hyparquet (the reader a job of ours uses) reads the same rows.
    const { parquetReadObjects } = await import('hyparquet');
    const rows = await parquetReadObjects({
      file: {
        byteLength: file.byteLength,
        slice: async (a: number, b?: number) => Uint8Array.prototype.slice.call(file, a, b).buffer,
      },
      rowStart: 29_999,
      rowEnd: 30_001,
    });
    expect(
      rows.map((r) => [r.id, Array.from(r.y as number[]), Array.from(r.u32 as number[]), r.p, r.s]),
    ).toEqual([29_999, 30_000].map((i) => [`r${i}`, expected(i).y, expected(i).u32, i / 3, `s${i}`]));
  });

  it('writes UINT32 outputs as INT32 with UINT_32 on both write paths, which DuckDB reads as UINTEGER', async () => {
    const specs = [
      { name: 'u', datatype: 'UINT32', shape: [-1] },
      { name: 'v', datatype: 'UINT32', shape: [-1, -1] },
    ] as const;
    const schema = outputSchemaFor(specs, 'id', 'INT64');
    // Widths 1 then 2 in 'v': a list column of varying width goes through hyparquet-writer's own path.
    const batch = (ids: number[], width: number): ScoredBatch => ({
      ids,
      outputs: [
        {
          name: 'u',
          datatype: 'UINT32',
          shape: [ids.length],
          data: Uint32Array.from(ids, (i) => 2 ** 32 - 1 - i),
        },
        {
          name: 'v',
          datatype: 'UINT32',
          shape: [ids.length, width],
          data: Uint32Array.from(
            ids.flatMap((i) => Array.from({ length: width }, (_, k) => 2 ** 31 + i + k)),
          ),
        },
      ],
    });
    const part = encodeRowGroups(schema, [batch([0, 1], 1), batch([2], 2)]);
    const ends = parquetFileEnds(schema, [{ bytes: part.bytes.byteLength, rowGroups: part.rowGroups }]);
    const path = join(dir, 'uint32.parquet');
    await writeFile(path, Buffer.concat([ends.head, part.bytes, ends.footer]));
    const columns = await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`);
    expect(columns.map((c) => [c.column_name, c.column_type])).toEqual([
      ['id', 'BIGINT'],
      ['u', 'UINTEGER'],
      ['v', 'UINTEGER[]'],
    ]);
    expect(await query(`SELECT * FROM read_parquet('${path}') ORDER BY id`)).toEqual([
      { id: 0n, u: 4294967295, v: [2147483648] },
      { id: 1n, u: 4294967294, v: [2147483649] },
      { id: 2n, u: 4294967293, v: [2147483650, 2147483651] },
    ]);
  });

  it('compresses parts with snappy, zstd (Node 22.15+) or nothing; row groups of even size within a part', async () => {
    const schema = outputSchemaFor(
      [
        { name: 'p', datatype: 'FP32', shape: [-1, 1] },
        { name: 'logits', datatype: 'FP32', shape: [-1, 10] },
      ],
      'id',
      'STRING',
    );
    /** A part of `n` rows from row `from`, as micro-batches of 4,096 rows. */
    const part = (from: number, n: number): ScoredBatch[] => {
      const batches: ScoredBatch[] = [];
      for (let at = from; at < from + n; at += 4096) {
        const rows = Array.from({ length: Math.min(4096, from + n - at) }, (_, k) => at + k);
        batches.push({
          ids: rows.map((i) => `rec-${i}`),
          outputs: [
            {
              name: 'p',
              datatype: 'FP32',
              shape: [rows.length, 1],
              data: Float32Array.from(rows, (i) => i / 8),
            },
            {
              name: 'logits',
              datatype: 'FP32',
              shape: [rows.length, 10],
              data: Float32Array.from({ length: rows.length * 10 }, (_, k) => feature(rows[0] as number, k)),
            },
          ],
        });
      }
      return batches;
    };
    const zstd = zstdCompressor();
    const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
    // Node's zlib compresses zstd from 22.15 (and 23.8); before, there is none and the config says so.
    expect(zstd !== undefined).toBe(
      major > 23 || (major === 23 && minor >= 8) || (major === 22 && minor >= 15),
    );
    const codecs: ParquetWriteOptions[] = [
      { rowGroupRows: 122_880, codec: 'SNAPPY' },
      { rowGroupRows: 122_880, codec: 'UNCOMPRESSED' },
      ...(zstd === undefined ? [] : [{ rowGroupRows: 122_880, codec: 'ZSTD' as const, zstd }]),
    ];
    const sizes: Record<string, number> = {};
    let reference: unknown;
    for (const options of codecs) {
      // A part of 100,000 rows (one row group) and one of 130,000 (two of 65,000, not 122,880 + 7,120).
      const parts = [
        encodeRowGroups(schema, part(0, 100_000), options),
        encodeRowGroups(schema, part(100_000, 130_000), options),
      ];
      const ends = parquetFileEnds(
        schema,
        parts.map((p) => ({ bytes: p.bytes.byteLength, rowGroups: p.rowGroups })),
      );
      const path = join(dir, `codec-${options.codec}.parquet`);
      const file = Buffer.concat([ends.head, ...parts.map((p) => p.bytes), ends.footer]);
      await writeFile(path, file);
      sizes[options.codec] = file.byteLength;
      const groups = await query(
        `SELECT row_group_id, any_value(row_group_num_rows) AS n, string_agg(DISTINCT compression) AS codec
         FROM parquet_metadata('${path}') GROUP BY row_group_id ORDER BY row_group_id`,
      );
      expect(groups.map((g) => [Number(g.n), g.codec])).toEqual(
        [100_000, 65_000, 65_000].map((n) => [n, options.codec]),
      );
      const rows = await query(
        `SELECT count(*) AS n, sum(p) AS p, sum(list_sum(logits)) AS logits, max(id) AS id FROM read_parquet('${path}')`,
      );
      expect(rows[0]?.n).toBe(230_000n);
      if (reference === undefined) reference = rows;
      else expect(rows).toEqual(reference);
    }
    // Compression pays here (ids and repeating values); zstd more than snappy.
    expect(sizes.SNAPPY).toBeLessThan(sizes.UNCOMPRESSED as number);
    if (zstd !== undefined) expect(sizes.ZSTD).toBeLessThan(sizes.SNAPPY as number);
  });

  it('hands flat columns over as the typed arrays pages decode into, nulls as null, in one read per row group', async () => {
    const { key, size } = await duckParquet(
      'flat.parquet',
      `SELECT i AS id, (i * 0.37)::FLOAT AS f, (i * 0.5)::DOUBLE AS d, CASE WHEN i % 3 = 0 THEN NULL ELSE i * 2 END AS n
       FROM range(4000) t(i) ORDER BY i`,
      'COMPRESSION zstd, ROW_GROUP_SIZE 2048',
    );
    s3.requests.clear();
    const reader = await ParquetObjectReader.open(io, { bucket: BUCKET, key }, { size });
    // The footer comes with the one read of the file's tail.
    expect(s3.requests.count('GetObject', key)).toBe(1);
    s3.requests.clear();
    const last = reader.info.rowGroups.length - 1;
    const chunk = await reader.readRowGroup(last, ['id', 'f', 'd', 'n']);
    expect(s3.requests.count('GetObject', key)).toBe(1);
    const first = reader.info.rowGroups[last]?.firstRow as number;
    // No boxing of every value: the decoded pages' own typed arrays.
    expect(chunk.column('f')).toBeInstanceOf(Float32Array);
    expect(chunk.column('d')).toBeInstanceOf(Float64Array);
    expect(chunk.column('id')).toBeInstanceOf(BigInt64Array);
    expect(chunk.column('id')[0]).toBe(BigInt(first));
    expect(chunk.column('f')[5]).toBe(Math.fround((first + 5) * 0.37));
    const n = Array.from(chunk.column('n'));
    expect(n).toHaveLength(chunk.rows);
    n.forEach((v, k) => {
      const i = first + k;
      expect(v).toEqual(i % 3 === 0 ? null : BigInt(i * 2));
    });
  });

  it('decodes LIST columns as runs of one typed array, rows and errors the same as hyparquet assembles them', async () => {
    // Null rows, null elements, empty and short lists, a dictionary-encoded list (few distinct values),
    // several pages per chunk, and a list without nulls of varying lengths.
    const list = Array.from({ length: LINEAR_IN }, (_, j) => featureSql(j)).join(', ');
    const { key, size } = await duckParquet(
      'runs.parquet',
      `SELECT i AS id,
              CASE WHEN i % 11 = 0 THEN NULL
                   WHEN i % 13 = 0 THEN [1.0, NULL, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, NULL]::FLOAT[]
                   WHEN i % 17 = 0 THEN []::FLOAT[]
                   WHEN i % 19 = 0 THEN [1.5, 2.5]::FLOAT[]
                   ELSE [${list}]::FLOAT[] END AS x,
              CASE WHEN i % 7 = 0 THEN [i, NULL] ELSE [i, i + 1, i + 2] END::DOUBLE[] AS d,
              CASE WHEN i % 5 = 0 THEN NULL ELSE ['a' || i, 'b'] END AS s,
              CASE WHEN i % 3 = 0 THEN [i] ELSE [i, i + 1, i + 2] END::FLOAT[] AS r
       FROM range(30000) t(i) ORDER BY i`,
      'COMPRESSION snappy, ROW_GROUP_SIZE 20000',
    );
    const { parquetReadObjects } = await import('hyparquet');
    const reader = await ParquetObjectReader.open(io, { bucket: BUCKET, key }, { size });
    const bytes = new Uint8Array(await import('node:fs/promises').then((fs) => fs.readFile(join(dir, key))));
    const file = {
      byteLength: bytes.byteLength,
      slice: async (start: number, end?: number) => bytes.slice(start, end).buffer,
    };
    for (const group of reader.info.rowGroups) {
      const chunk = await reader.readRowGroup(group.index, ['id', 'x', 'd', 's', 'r']);
      const x = chunk.list?.('x');
      expect(x?.values).toBeInstanceOf(Float32Array);
      expect(chunk.list?.('d')?.values).toBeInstanceOf(Float64Array);
      const assembled = await parquetReadObjects({
        file,
        columns: ['x', 'd', 's', 'r'],
        rowStart: group.firstRow,
        rowEnd: group.firstRow + group.rows,
      });
      // `r` has no null and no empty list: its pages take the path without definition levels.
      expect(chunk.list?.('r')?.irregular.size).toBe(0);
      for (const name of ['x', 'd', 's', 'r']) {
        expect(Array.from(chunk.column(name))).toEqual(assembled.map((row) => row[name] ?? null));
      }
      // The same batches and failures as from the assembled rows.
      const plan = planParquetColumns(model.signature, true, reader.info.columns, {
        idColumn: 'id',
        inputs: {},
      });
      const limits = { maxBatchRecords: 256, maxBatchBytes: 1 << 20, maxTensorElements: 1 << 20 };
      const from = group.firstRow;
      const to = group.firstRow + group.rows;
      const viaRuns = mapRows(plan, chunk, from, to, limits);
      const rows = assembled.map((row) => row.x);
      const viaRows = mapRows(
        plan,
        { firstRow: from, rows: group.rows, column: (name) => (name === 'x' ? rows : chunk.column(name)) },
        from,
        to,
        limits,
      );
      expect(viaRuns.failures).toEqual(viaRows.failures);
      expect(viaRuns.failures.length).toBeGreaterThan(0);
      expect(viaRuns.batches).toEqual(viaRows.batches);
    }
  });

  describe('counts a file declares but does not hold', () => {
    /**
     * Rewrites the file at `path`: `edit.page` gets the first data page header of `column` (the file's last
     * column chunk, so that nothing after it moves), `edit.footer` the footer; the footer is then written
     * again with the chunk's sizes following the header's new length. Uploads the result as `key`.
     */
    async function tamper(
      path: string,
      key: string,
      column: string,
      edit: { page?: (header: PageHeader) => void; footer?: (meta: FileMetaData) => void },
    ): Promise<number> {
      const bytes = new Uint8Array(await readFile(path));
      const metadata = parquetMetadata(bytes.slice().buffer);
      const chunk = metadata.row_groups[0]?.columns.find((c) => c.meta_data?.path_in_schema[0] === column);
      const meta = chunk?.meta_data as ColumnMetaData;
      const dataEnd = Number(meta.data_page_offset) + Number(meta.total_compressed_size);
      const at = Number(meta.data_page_offset);
      const reader = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset: at };
      const header = parquetHeader(reader);
      const oldLength = reader.offset - at;
      edit.page?.(header);
      const headerWriter = new ByteWriter();
      writePageHeader(headerWriter, header);
      const newHeader = headerWriter.getBytes();
      const delta = newHeader.byteLength - oldLength;
      meta.total_compressed_size += BigInt(delta);
      meta.total_uncompressed_size += BigInt(delta);
      edit.footer?.(metadata);
      const footerWriter = new ByteWriter();
      writeMetadata(footerWriter, metadata);
      const footer = footerWriter.getBytes();
      const length = Buffer.alloc(4);
      length.writeUInt32LE(footer.byteLength);
      const file = Buffer.concat([
        bytes.subarray(0, at),
        newHeader,
        bytes.subarray(reader.offset, dataEnd),
        footer,
        length,
        Buffer.from('PAR1'),
      ]);
      await s3.putObject(BUCKET, key, file);
      return file.byteLength;
    }

    /** Sets the level count of a data page header (v1 or v2). */
    const claim = (levels: number) => (header: PageHeader) => {
      const page = header.data_page_header ?? header.data_page_header_v2;
      if (page === undefined) throw new Error(`the first page is a ${header.type}`);
      page.num_values = levels;
    };

    it('refuses a page whose header claims two billion values, before allocating for them', async () => {
      // A list column (decoded by our page reader) and a list of lists (decoded by hyparquet's), each
      // the last column of its file; uncompressed, so that the header is all that changes. A page whose
      // levels were one run-length run made the list decoder fill 4 GB of level buffers.
      await duckParquet(
        'lists.parquet',
        'SELECT i AS id, [i, i + 1]::FLOAT[] AS x FROM range(100) t(i)',
        'COMPRESSION uncompressed',
      );
      await duckParquet(
        'nested.parquet',
        'SELECT i AS id, [[i, i + 1], [i]]::FLOAT[][] AS m FROM range(100) t(i)',
        'COMPRESSION uncompressed',
      );
      // Untouched, the list of lists reads as hyparquet assembles it (its chunk read once, then from memory).
      const nested = await ParquetObjectReader.open(
        io,
        { bucket: BUCKET, key: 'nested.parquet' },
        { size: (await readFile(join(dir, 'nested.parquet'))).byteLength },
      );
      const m = (await nested.readRowGroup(0, ['id', 'm'])).column('m');
      expect(Array.from(m, (row) => (row as number[][]).map((r) => Array.from(r)))).toEqual(
        Array.from({ length: 100 }, (_, i) => [[i, i + 1], [i]]),
      );
      for (const [file, column] of [
        ['lists.parquet', 'x'],
        ['nested.parquet', 'm'],
      ] as const) {
        const key = `huge-page-${file}`;
        const size = await tamper(join(dir, file), key, column, { page: claim(2 ** 31 - 1) });
        const reader = await ParquetObjectReader.open(io, { bucket: BUCKET, key }, { size });
        const read = reader.readRowGroup(0, ['id', column]);
        await expect(read).rejects.toThrow(UnsupportedInputError);
        await expect(read).rejects.toThrow(
          new RegExp(
            `row group 0 cannot be decoded: a page of column '${column}[.\\w]*' declares 2147483647 values \\(at most 16777216 a page\\)`,
          ),
        );
      }
      // A page that would decompress to 1 GiB (a compression bomb's header): refused before a buffer is made.
      const bomb = await tamper(join(dir, 'lists.parquet'), 'bomb.parquet', 'x', {
        page: (header) => {
          header.uncompressed_page_size = 2 ** 30;
        },
      });
      const bombReader = await ParquetObjectReader.open(
        io,
        { bucket: BUCKET, key: 'bomb.parquet' },
        { size: bomb },
      );
      await expect(bombReader.readRowGroup(0, ['id', 'x'])).rejects.toThrow(
        /a page of column 'x.list.element' declares 1073741824 bytes \(at most 268435456 a page\)/,
      );
      // Within the page limit but beyond the chunk's footer entry: refused the same way.
      const size = await tamper(join(dir, 'lists.parquet'), 'long-page.parquet', 'x', {
        page: claim(1_000_000),
      });
      const reader = await ParquetObjectReader.open(
        io,
        { bucket: BUCKET, key: 'long-page.parquet' },
        { size },
      );
      await expect(reader.readRowGroup(0, ['id', 'x'])).rejects.toThrow(
        /a page of column 'x.list.element' declares 1000000 values, more than the 200 its chunk's footer entry has left/,
      );
    });

    it('refuses a row group whose footer declares more values than one row group may decode', async () => {
      const size = await tamper(join(dir, 'lists.parquet'), 'huge-footer.parquet', 'x', {
        footer: (metadata) => {
          const chunk = metadata.row_groups[0]?.columns.find((c) => c.meta_data?.path_in_schema[0] === 'x');
          if (chunk?.meta_data !== undefined) chunk.meta_data.num_values = BigInt(MAX_ROW_GROUP_VALUES);
        },
      });
      const reader = await ParquetObjectReader.open(
        io,
        { bucket: BUCKET, key: 'huge-footer.parquet' },
        { size },
      );
      const read = reader.readRowGroup(0, ['id', 'x']);
      await expect(read).rejects.toThrow(UnsupportedInputError);
      await expect(read).rejects.toThrow(
        `row group 0 declares ${MAX_ROW_GROUP_VALUES + 100} values in the columns read (id, x), more than the ${MAX_ROW_GROUP_VALUES} one row group may decode: write the file with smaller row groups`,
      );
      // The id column alone is within the limit.
      expect((await reader.readRowGroup(0, ['id'])).column('id')).toHaveLength(100);
    });
  });

  it('refuses an object that is not Parquet, as unsupported input', async () => {
    await s3.putObject(BUCKET, 'fake.parquet', '{"x": [1, 2, 3]}\n');
    await expect(
      ParquetObjectReader.open(io, { bucket: BUCKET, key: 'fake.parquet' }, { size: 17 }),
    ).rejects.toThrow(UnsupportedInputError);
  });
});
