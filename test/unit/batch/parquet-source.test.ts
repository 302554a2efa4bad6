import type { JobSpec, ParquetJob } from '../../../shared/core/batch/job-state';
import {
  type ColumnChunk,
  DEFAULT_PARQUET_MAPPING,
  planParquetColumns,
} from '../../../shared/core/batch/parquet-mapping';
import type { ParquetCodec, ParquetFile } from '../../../shared/core/batch/parquet-port';
import { ParquetSource } from '../../../shared/core/batch/parquet-source';
import type { Scorer } from '../../../shared/core/batch/score-records';
import type { ModelSignature } from '../../../shared/core/tensor';

const SIGNATURE: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 2] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }],
};
const GROUPS = 3;
const ROWS = 2;

const JOB = {
  model: { name: 'm', version: '1', sha256: '', maxBatchSize: 8 },
  output: { format: 'jsonl' },
  settings: { partRecords: ROWS, partBytes: 1 << 20, maxBatchBytes: 1 << 20 },
  parquet: { schema: { idColumn: 'id', idType: 'INT64', outputs: [] } } as unknown as ParquetJob,
} as unknown as JobSpec & { readonly parquet: ParquetJob };

/** A file of three row groups of two rows (`x` = [row, row]) whose reads are logged; `failing` reads reject. */
function fakeFile(reads: number[], failing: readonly number[] = []): ParquetFile {
  return {
    info: {
      rows: GROUPS * ROWS,
      columns: [{ name: 'x', list: true }],
      rowGroups: Array.from({ length: GROUPS }, (_, index) => ({
        index,
        firstRow: index * ROWS,
        rows: ROWS,
        bytes: 100,
      })),
    },
    readRowGroup: async (index): Promise<ColumnChunk> => {
      reads.push(index);
      if (failing.includes(index)) throw new Error(`store error reading row group ${index}`);
      const rows = Array.from({ length: ROWS }, (_, k) => index * ROWS + k);
      return { firstRow: index * ROWS, rows: ROWS, column: () => rows.map((r) => [r, r]) };
    },
  };
}

function source(file: ParquetFile, scorer: Scorer): ParquetSource {
  return new ParquetSource({
    job: JOB,
    file,
    plan: planParquetColumns(SIGNATURE, true, file.info.columns, DEFAULT_PARQUET_MAPPING),
    codec: {} as ParquetCodec,
    from: 0,
    end: GROUPS,
    scorer,
    maxTensorElements: 1000,
  });
}

/** Sums each row's values; logs which reads had started when each batch was scored. */
function summing(readsSeen: number[][], reads: number[]): Scorer {
  return {
    inferWith: async (_name, _version, build) => {
      readsSeen.push([...reads]);
      const [x] = build(SIGNATURE);
      const data = x?.data as Float32Array;
      const n = data.length / 2;
      const y = Float32Array.from(
        { length: n },
        (_, k) => (data[2 * k] as number) + (data[2 * k + 1] as number),
      );
      return { version: '1', outputs: [{ name: 'y', datatype: 'FP32', shape: [n, 1], data: y }] };
    },
  };
}

describe('ParquetSource', () => {
  it('reads the next row group while it scores this one, each group read once', async () => {
    const reads: number[] = [];
    const seen: number[][] = [];
    const parts = source(fakeFile(reads), summing(seen, reads));
    const lines: string[] = [];
    while (await parts.more()) {
      const part = await parts.next();
      lines.push(...part.out.chunks().map((c) => new TextDecoder().decode(c)));
    }
    await parts.close();
    expect(reads).toEqual([0, 1, 2]);
    // Group 1's read had started when group 0 was scored, group 2's when group 1 was.
    expect(seen).toEqual([
      [0, 1],
      [0, 1, 2],
      [0, 1, 2],
    ]);
    expect(lines.join('')).toBe(
      [0, 1, 2, 3, 4, 5].map((r) => `{"id":${r},"outputs":{"y":[${2 * r}]}}\n`).join(''),
    );
  });

  it('scores a row group a slice of batches at a time, the next slice filling the same tensor buffers', async () => {
    // One row group of 40 rows, batches of 2 rows: 20 batches, so three slices of 8, 8 and 4 batches.
    const rows = 40;
    const file: ParquetFile = {
      info: {
        rows,
        columns: [{ name: 'x', list: true }],
        rowGroups: [{ index: 0, firstRow: 0, rows, bytes: 100 }],
      },
      readRowGroup: async () => ({
        firstRow: 0,
        rows,
        column: () => Array.from({ length: rows }, (_, r) => [r, r]),
      }),
    };
    const buffers: unknown[] = [];
    const sums: number[] = [];
    const scorer: Scorer = {
      inferWith: async (_name, _version, build) => {
        const [x] = build(SIGNATURE);
        const data = x?.data as Float32Array;
        buffers.push(data);
        const n = data.length / 2;
        const y = Float32Array.from(
          { length: n },
          (_, k) => (data[2 * k] as number) + (data[2 * k + 1] as number),
        );
        sums.push(...y);
        return { version: '1', outputs: [{ name: 'y', datatype: 'FP32', shape: [n, 1], data: y }] };
      },
    };
    const job = {
      ...JOB,
      model: { ...JOB.model, maxBatchSize: 2 },
      settings: { ...JOB.settings, partRecords: rows },
    };
    const parts = new ParquetSource({
      job: job as typeof JOB,
      file,
      plan: planParquetColumns(SIGNATURE, true, file.info.columns, DEFAULT_PARQUET_MAPPING),
      codec: {} as ParquetCodec,
      from: 0,
      end: 1,
      scorer,
      maxTensorElements: 1000,
    });
    const part = await parts.next();
    expect(part.scored).toBe(rows);
    expect(sums).toEqual(Array.from({ length: rows }, (_, r) => 2 * r));
    expect(buffers).toHaveLength(20);
    // The second slice's batches reuse the first slice's buffers.
    expect(new Set(buffers).size).toBeLessThan(buffers.length);
    expect(buffers[8]).toBe(buffers[7]);
  });

  it('fails the part whose read failed, and drops a failed read ahead that no part needs', async () => {
    const reads: number[] = [];
    const parts = source(fakeFile(reads, [1, 2]), summing([], reads));
    await parts.next();
    await expect(parts.next()).rejects.toThrow('store error reading row group 1');
    // Row group 2 was read ahead (and failed) while group 1's read was awaited: closing drops it quietly.
    await parts.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(reads).toEqual([0, 1, 2]);
  });
});
