import { UnsupportedInputError } from '../../../shared/core/batch/errors';
import {
  type ColumnChunk,
  DEFAULT_PARQUET_MAPPING,
  type FileColumn,
  type ListValues,
  listRow,
  mapRows,
  parseParquetMapping,
  planParquetColumns,
} from '../../../shared/core/batch/parquet-mapping';
import type { ModelSignature, TensorSpec } from '../../../shared/core/tensor';

const LIMITS = { maxBatchRecords: 64, maxBatchBytes: 1 << 20, maxTensorElements: 1000 };

function signature(...inputs: TensorSpec[]): ModelSignature {
  return { inputs, outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }] };
}

function chunk(columns: Record<string, unknown[]>, firstRow = 0): ColumnChunk {
  const rows = Object.values(columns)[0]?.length ?? 0;
  return {
    firstRow,
    rows,
    column: (name) => {
      const values = columns[name];
      if (values === undefined) throw new Error(`no column ${name}`);
      return values;
    },
  };
}

/** `rows` as runs of one typed array (as the reader decodes simple LIST columns); nulls kept aside. */
function runs(rows: readonly (readonly (number | null)[] | null)[], typed = true): ListValues {
  const values: number[] = [];
  const start = new Uint32Array(rows.length);
  const length = new Uint32Array(rows.length);
  const irregular = new Map<number, unknown>();
  rows.forEach((row, i) => {
    start[i] = values.length;
    if (row === null || row.includes(null)) {
      irregular.set(i, row === null ? null : [...row]);
      if (row !== null) length[i] = row.length;
      for (const v of row ?? []) if (v !== null) values.push(v);
      return;
    }
    length[i] = row.length;
    values.push(...(row as number[]));
  });
  return { values: typed ? Float32Array.from(values) : values, start, length, irregular };
}

const scalars = (...names: string[]): FileColumn[] => names.map((name) => ({ name, list: false }));

describe('parseParquetMapping', () => {
  it('defaults to the id column and no inputs', () => {
    expect(parseParquetMapping(undefined)).toBe(DEFAULT_PARQUET_MAPPING);
    expect(parseParquetMapping({ idColumn: 'key' })).toEqual({ idColumn: 'key', inputs: {} });
  });

  it('reads columns and prefixes', () => {
    expect(parseParquetMapping({ inputs: { x: { columns: ['a', 'b'] }, z: { prefix: 'f' } } })).toEqual({
      idColumn: 'id',
      inputs: { x: { columns: ['a', 'b'] }, z: { prefix: 'f' } },
    });
  });

  it.each([
    [[], `'batch' must be an object`],
    [{ idColumn: '' }, `'batch.idColumn'`],
    [{ inputs: { x: { columns: [] } } }, `'batch.inputs.x'.columns`],
    [{ inputs: { x: { columns: ['a', 'a'] } } }, 'names a column twice'],
    [{ inputs: { x: { prefix: 'f', columns: ['a'] } } }, `'batch.inputs.x' must be`],
    [{ inputs: { x: 'f' } }, `'batch.inputs.x' must be`],
  ])('refuses %j naming the field', (raw, message) => {
    expect(() => parseParquetMapping(raw)).toThrow(UnsupportedInputError);
    expect(() => parseParquetMapping(raw)).toThrow(message);
  });
});

describe('planParquetColumns', () => {
  const x10: TensorSpec = { name: 'x', datatype: 'FP32', shape: [-1, 10] };

  it('takes a list column named like the input', () => {
    const plan = planParquetColumns(
      signature(x10),
      true,
      [
        { name: 'id', list: false },
        { name: 'x', list: true },
      ],
      DEFAULT_PARQUET_MAPPING,
    );
    expect(plan.idColumn).toBe('id');
    expect(plan.inputs[0]).toMatchObject({ kind: 'list', column: 'x', exampleShape: [10] });
    expect(plan.columns).toEqual(['id', 'x']);
  });

  it('gathers configured columns, or a prefix in file order', () => {
    const file = scalars('f1', 'id', 'f0', 'g');
    const byColumns = planParquetColumns(signature({ ...x10, shape: [-1, 2] }), true, file, {
      idColumn: 'id',
      inputs: { x: { columns: ['f0', 'f1'] } },
    });
    expect(byColumns.inputs[0]).toMatchObject({ kind: 'scalars', columns: ['f0', 'f1'], exampleShape: [2] });
    const byPrefix = planParquetColumns(signature({ ...x10, shape: [-1, 2] }), true, file, {
      idColumn: 'id',
      inputs: { x: { prefix: 'f' } },
    });
    expect(byPrefix.inputs[0]).toMatchObject({ kind: 'scalars', columns: ['f1', 'f0'] });
  });

  it('takes every scalar column but the id for a single-input model without a mapping', () => {
    const plan = planParquetColumns(
      signature({ ...x10, shape: [-1, 3] }),
      true,
      scalars('a', 'id', 'b', 'c'),
      DEFAULT_PARQUET_MAPPING,
    );
    expect(plan.inputs[0]).toMatchObject({ kind: 'scalars', columns: ['a', 'b', 'c'] });
  });

  it.each([
    ['a model without a batch axis', false, scalars('a'), DEFAULT_PARQUET_MAPPING, 'batch axis'],
    ['the wrong number of columns', true, scalars('a', 'b'), DEFAULT_PARQUET_MAPPING, '2 column(s)'],
    [
      'a missing configured column',
      true,
      scalars('a'),
      { idColumn: 'id', inputs: { x: { columns: ['nope'] } } },
      `no column 'nope'`,
    ],
    [
      'a mapping for an input the model lacks',
      true,
      scalars('a'),
      { idColumn: 'id', inputs: { w: { prefix: 'a' } } },
      `no input 'w'`,
    ],
    [
      'list columns as features',
      true,
      [{ name: 'v', list: true }],
      DEFAULT_PARQUET_MAPPING,
      'list columns (v)',
    ],
  ])('refuses %s', (_what, batched, file, mapping, message) => {
    const run = () => planParquetColumns(signature(x10), batched, file, mapping);
    expect(run).toThrow(UnsupportedInputError);
    expect(run).toThrow(message);
  });

  it('names the input a multi-input model cannot find', () => {
    const run = () =>
      planParquetColumns(
        signature(x10, { name: 'mask', datatype: 'INT64', shape: [-1, 10] }),
        true,
        [{ name: 'x', list: true }],
        DEFAULT_PARQUET_MAPPING,
      );
    expect(run).toThrow(`model input 'mask' has no column`);
  });
});

describe('mapRows', () => {
  const x3: TensorSpec = { name: 'x', datatype: 'FP32', shape: [-1, 3] };

  it('stacks rows of scalar columns into one tensor, ids carried', () => {
    const plan = planParquetColumns(
      signature(x3),
      true,
      scalars('id', 'a', 'b', 'c'),
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(
      plan,
      chunk({ id: ['r0', 'r1'], a: [1, 4], b: [2, 5], c: [3, 6] }, 100),
      100,
      102,
      LIMITS,
    );
    expect(mapped.failures).toEqual([]);
    expect(mapped.batches).toHaveLength(1);
    const batch = mapped.batches[0];
    expect(batch?.rows).toEqual([100, 101]);
    expect(batch?.ids).toEqual(['r0', 'r1']);
    expect(batch?.inputs[0]?.shape).toEqual([2, 3]);
    expect(Array.from(batch?.inputs[0]?.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('fails nulls, wrong types and wrong lengths per row, with the row index, and keeps the others exact', () => {
    const plan = planParquetColumns(
      signature(x3),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(
      plan,
      chunk({ x: [[1, 2, 3], null, [1, 2], [1, null, 3], [1, 'two', 3], [7, 8, 9]] }, 10),
      10,
      16,
      LIMITS,
    );
    expect(mapped.failures.map((f) => [f.row, f.id])).toEqual([
      [11, 11],
      [12, 12],
      [13, 13],
      [14, 14],
    ]);
    expect(mapped.failures.map((f) => f.message)).toEqual([
      `row 11: column 'x' is null, expected a list`,
      `row 12: column 'x' holds 2 values, expected 3 (shape [3])`,
      `row 13: column 'x'[1] is null, not a number`,
      `row 14: column 'x'[1] is a string, not a number`,
    ]);
    // The failed rows' partial values never reach the tensor: the next good row takes their slot.
    expect(mapped.batches[0]?.rows).toEqual([10, 15]);
    expect(Array.from(mapped.batches[0]?.inputs[0]?.data as Float32Array)).toEqual([1, 2, 3, 7, 8, 9]);
  });

  it('copies list rows from runs of one array with the same batches and errors as from arrays per row', () => {
    const rows = [[1, 2, 3], null, [1, 2], [1, null, 3], [], [7, 8, 9], [4, 5, 6, 7]];
    const plan = planParquetColumns(
      signature(x3),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const perRow = mapRows(plan, chunk({ x: rows }, 10), 10, 17, LIMITS);
    for (const typed of [true, false]) {
      const list = runs(rows, typed);
      const viaRuns = mapRows(
        plan,
        {
          firstRow: 10,
          rows: rows.length,
          column: () => {
            throw new Error('the rows of a list with runs are not asked for');
          },
          list: () => list,
        },
        10,
        17,
        LIMITS,
      );
      expect(viaRuns).toEqual(perRow);
    }
    expect(perRow.failures.map((f) => f.row)).toEqual([11, 12, 13, 14, 16]);
    expect(Array.from(perRow.batches[0]?.inputs[0]?.data as Float32Array)).toEqual([1, 2, 3, 7, 8, 9]);
  });

  it('gives a run as the row it stands for: its values, or null, or the row with its null elements', () => {
    const list = runs([[1, 2], null, [3, null], [4]]);
    expect(Array.from(listRow(list, 0) as Float32Array)).toEqual([1, 2]);
    expect(listRow(list, 1)).toBeNull();
    expect(listRow(list, 2)).toEqual([3, null]);
    expect(Array.from(listRow(list, 3) as Float32Array)).toEqual([4]);
  });

  it('sizes dynamic list inputs from runs as from rows', () => {
    const dyn: TensorSpec = { name: 'x', datatype: 'FP32', shape: [-1, -1] };
    const rows = [[1, 2], [3], [], null, [4, 5]];
    const plan = planParquetColumns(
      signature(dyn),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const perRow = mapRows(plan, chunk({ x: rows }), 0, 5, LIMITS);
    const list = runs(rows);
    const viaRuns = mapRows(plan, { firstRow: 0, rows: 5, column: () => [], list: () => list }, 0, 5, LIMITS);
    expect(viaRuns).toEqual(perRow);
    expect(perRow.batches.map((b) => b.rows)).toEqual([[0, 4], [1]]);
  });

  it('takes INT64 ids that fit 32 bits as numbers, larger ones as bigints', () => {
    const plan = planParquetColumns(
      signature({ name: 'x', datatype: 'FP32', shape: [-1, 1] }),
      true,
      scalars('id', 'a'),
      DEFAULT_PARQUET_MAPPING,
    );
    const ids = BigInt64Array.of(0n, -1n, 2147483647n, -2147483648n, 2147483648n, -(2n ** 63n));
    const rows = ids.length;
    const mapped = mapRows(
      plan,
      {
        firstRow: 0,
        rows,
        column: (name) => (name === 'id' ? ids : Float32Array.from({ length: rows }, (_, k) => k)),
      },
      0,
      rows,
      LIMITS,
    );
    expect(mapped.batches[0]?.ids).toEqual([0, -1, 2147483647, -2147483648, 2147483648n, -(2n ** 63n)]);
  });

  it('fills batches from reused buffers holding old values the same as from fresh ones', () => {
    const rows = [[1, 2, 3], [4, null, 6], [7, 8, 9], null, [10, 11, 12]];
    const plan = planParquetColumns(
      signature(x3),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const limits = { ...LIMITS, maxBatchRecords: 2 };
    const fresh = mapRows(plan, chunk({ x: rows }), 0, 5, limits);
    const dirty = mapRows(plan, chunk({ x: rows }), 0, 5, {
      ...limits,
      allocate: (_datatype, length) => new Float32Array(length).fill(99),
    });
    expect(dirty).toEqual(fresh);
    expect(fresh.batches.map((b) => b.rows)).toEqual([[0, 2], [4]]);
  });

  it('fails a null id per row', () => {
    const plan = planParquetColumns(
      signature(x3),
      true,
      scalars('id', 'a', 'b', 'c'),
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(plan, chunk({ id: [null], a: [1], b: [2], c: [3] }), 0, 1, LIMITS);
    expect(mapped.failures).toEqual([
      { row: 0, id: 0, code: 'invalid_input', message: `row 0: id column 'id' is null` },
    ]);
  });

  it('checks integer ranges and 64-bit integers', () => {
    const plan = planParquetColumns(
      signature(
        { name: 'a', datatype: 'INT8', shape: [-1, 1] },
        { name: 'b', datatype: 'INT64', shape: [-1] },
      ),
      true,
      scalars('a', 'b'),
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(
      plan,
      chunk({ a: [1, 300, 2.5, 4], b: [2n ** 62n, 1n, 1n, 2 ** 40] }),
      0,
      4,
      LIMITS,
    );
    expect(mapped.failures.map((f) => f.message)).toEqual([
      `row 1: column 'a' is 300, not an integer in [-128, 127]`,
      `row 2: column 'a' is 2.5, not an integer in [-128, 127]`,
    ]);
    expect(Array.from(mapped.batches[0]?.inputs[1]?.data as BigInt64Array)).toEqual([2n ** 62n, 2n ** 40n]);
    expect(mapped.batches[0]?.inputs[1]?.shape).toEqual([2]);
  });

  it('reads nested lists of a fixed example shape, row-major', () => {
    const plan = planParquetColumns(
      signature({ name: 'x', datatype: 'FP32', shape: [-1, 2, 2] }),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(
      plan,
      chunk({
        x: [
          [
            [1, 2],
            [3, 4],
          ],
          [1, 2, 3, 4],
          [[1, 2], [3]],
        ],
      }),
      0,
      3,
      LIMITS,
    );
    expect(Array.from(mapped.batches[0]?.inputs[0]?.data as Float32Array)).toEqual([1, 2, 3, 4, 1, 2, 3, 4]);
    expect(mapped.failures.map((f) => f.message)).toEqual([
      `row 2: column 'x' at depth 1 holds 1 values, expected 2`,
    ]);
  });

  it('batches variable-length lists by length, never ragged', () => {
    const plan = planParquetColumns(
      signature({ name: 'x', datatype: 'FP32', shape: [-1, -1] }),
      true,
      [{ name: 'x', list: true }],
      DEFAULT_PARQUET_MAPPING,
    );
    const mapped = mapRows(plan, chunk({ x: [[1], [1, 2], [3], [], [3, 4]] }), 0, 5, LIMITS);
    expect(mapped.batches.map((b) => [b.rows, b.inputs[0]?.shape])).toEqual([
      [
        [0, 2],
        [2, 1],
      ],
      [
        [1, 4],
        [2, 2],
      ],
    ]);
    expect(mapped.failures.map((f) => f.message)).toEqual([`row 3: column 'x' is an empty list`]);
  });

  it('closes batches at the record and byte caps, deterministically', () => {
    const plan = planParquetColumns(signature(x3), true, scalars('a', 'b', 'c'), DEFAULT_PARQUET_MAPPING);
    const values = { a: [1, 2, 3, 4, 5], b: [1, 2, 3, 4, 5], c: [1, 2, 3, 4, 5] };
    const byRecords = mapRows(plan, chunk(values), 0, 5, { ...LIMITS, maxBatchRecords: 2 });
    expect(byRecords.batches.map((b) => b.rows)).toEqual([[0, 1], [2, 3], [4]]);
    const byBytes = mapRows(plan, chunk(values), 0, 5, { ...LIMITS, maxBatchBytes: 12 * 3 });
    expect(byBytes.batches.map((b) => b.rows)).toEqual([
      [0, 1, 2],
      [3, 4],
    ]);
  });
});
