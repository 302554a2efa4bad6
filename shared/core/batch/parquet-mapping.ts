/**
 * Parquet columns to model inputs, decided once per file from its schema (a {@link ColumnPlan}), then
 * applied to the decoded columns of a row group without parsing anything per record: each valid row's
 * values are copied straight into the micro-batch tensor being filled.
 *
 * How a model input finds its columns, first rule that applies:
 * 1. `batch.inputs.<input>` in the model's config.json: `{"columns": ["f0", "f1"]}` (scalar columns, in
 *    that order) or `{"prefix": "f"}` (every scalar column whose name starts with it, in file order);
 * 2. a column named like the input: a list column (one row's tensor, flat or nested) or, for an input of
 *    one element per example, a scalar column;
 * 3. a model with one input and no mapping: every scalar column but the id column, in file order (as CSV).
 *
 * The id column (`batch.idColumn`, default `id`) is carried to the output when the file has it; otherwise a
 * row is named by its index in the file (0-based, as DuckDB's `file_row_number` and pandas count).
 * Nulls, values of the wrong type or out of the input type's range, and lists of the wrong length fail
 * their row alone, with the row index; they never reach a tensor.
 */
import { toHalfBits } from '../fp16';
import type { InferInput } from '../protocol/infer-types';
import {
  allocateData,
  type Datatype,
  type ModelSignature,
  type TensorData,
  type TensorSpec,
} from '../tensor';
import { UnsupportedInputError } from './errors';
import type { IdColumnType } from './parquet-port';

/** Where one model input's values come from, as config.json's `batch.inputs.<input>` says. */
export type ParquetInputSource = { readonly columns: readonly string[] } | { readonly prefix: string };

/** config.json's `batch` object, as far as Parquet inputs go. */
export interface ParquetMappingConfig {
  /** The column carried to the output as the row's id. Default `id`. */
  readonly idColumn: string;
  readonly inputs: Readonly<Record<string, ParquetInputSource>>;
}

/** The mapping of a model without a `batch` object in its config. */
export const DEFAULT_PARQUET_MAPPING: ParquetMappingConfig = Object.freeze({ idColumn: 'id', inputs: {} });

/**
 * Reads config.json's `batch` object (`{"idColumn": "id", "inputs": {"x": {"columns": [...]}}}`).
 *
 * @throws UnsupportedInputError naming the field at fault
 * @example
 * parseParquetMapping({ inputs: { x: { prefix: 'f' } } }); // { idColumn: 'id', inputs: { x: { prefix: 'f' } } }
 */
export function parseParquetMapping(raw: unknown): ParquetMappingConfig {
  if (raw === undefined) return DEFAULT_PARQUET_MAPPING;
  if (!isObject(raw)) throw new UnsupportedInputError(`'batch' must be an object`);
  const idColumn = raw.idColumn ?? 'id';
  if (typeof idColumn !== 'string' || idColumn === '') {
    throw new UnsupportedInputError(`'batch.idColumn' must be a non-empty string`);
  }
  const inputs: Record<string, ParquetInputSource> = {};
  if (raw.inputs !== undefined) {
    if (!isObject(raw.inputs)) throw new UnsupportedInputError(`'batch.inputs' must be an object`);
    for (const [name, source] of Object.entries(raw.inputs)) {
      const where = `'batch.inputs.${name}'`;
      if (isObject(source) && Array.isArray(source.columns) && source.prefix === undefined) {
        const columns = source.columns;
        if (columns.length === 0 || !columns.every((c) => typeof c === 'string' && c !== '')) {
          throw new UnsupportedInputError(`${where}.columns must be a non-empty array of column names`);
        }
        if (new Set(columns).size !== columns.length) {
          throw new UnsupportedInputError(`${where}.columns names a column twice`);
        }
        inputs[name] = { columns: columns as string[] };
      } else if (isObject(source) && typeof source.prefix === 'string' && source.columns === undefined) {
        if (source.prefix === '') throw new UnsupportedInputError(`${where}.prefix must not be empty`);
        inputs[name] = { prefix: source.prefix };
      } else {
        throw new UnsupportedInputError(`${where} must be {"columns": [...]} or {"prefix": "..."}`);
      }
    }
  }
  return { idColumn, inputs };
}

/** A top-level column of the file, as its schema declares it. */
export interface FileColumn {
  readonly name: string;
  /** A LIST column (one array per row); otherwise a scalar column. */
  readonly list: boolean;
  /** For a scalar column that can be an id: the output's id column type that holds its values. */
  readonly idType?: IdColumnType;
}

/** One model input and the columns that fill it. */
export type InputColumns =
  | {
      readonly spec: TensorSpec;
      readonly kind: 'list';
      readonly column: string;
      /** The example's shape (no batch axis); -1 where each row's list length decides. */
      readonly exampleShape: readonly number[];
    }
  | {
      readonly spec: TensorSpec;
      readonly kind: 'scalars';
      readonly columns: readonly string[];
      readonly exampleShape: readonly number[];
    };

/** The columns a job reads and what each input takes from them. */
export interface ColumnPlan {
  readonly inputs: readonly InputColumns[];
  /** The id column, when the file has it. */
  readonly idColumn: string | undefined;
  /** Every column to decode, each once. */
  readonly columns: readonly string[];
}

/**
 * Decides, from the file's schema and the model's signature, which columns fill which input.
 *
 * @param batched the model takes a batch axis (`maxBatchSize > 0`); Parquet rows are always examples
 * @throws UnsupportedInputError when an input has no column, or its columns cannot hold its examples
 */
export function planParquetColumns(
  signature: ModelSignature,
  batched: boolean,
  fileColumns: readonly FileColumn[],
  mapping: ParquetMappingConfig,
): ColumnPlan {
  if (!batched) {
    throw new UnsupportedInputError(
      'Parquet input needs a model with a batch axis (maxBatchSize > 0 in config.json): each row is one example',
    );
  }
  const byName = new Map(fileColumns.map((c) => [c.name, c]));
  const idColumn = byName.has(mapping.idColumn) ? mapping.idColumn : undefined;
  for (const name of Object.keys(mapping.inputs)) {
    if (!signature.inputs.some((i) => i.name === name)) {
      throw new UnsupportedInputError(`'batch.inputs.${name}': the model has no input '${name}'`);
    }
  }
  const inputs = signature.inputs.map((spec): InputColumns => {
    const exampleShape = spec.shape.slice(1);
    const source = mapping.inputs[spec.name];
    if (source !== undefined) {
      const columns =
        'columns' in source
          ? source.columns
          : fileColumns.filter((c) => c.name.startsWith(source.prefix)).map((c) => c.name);
      return scalarsInput(spec, exampleShape, columns, byName, `'batch.inputs.${spec.name}'`);
    }
    const own = byName.get(spec.name);
    if (own?.list === true) return listInput(spec, exampleShape, own.name);
    if (own !== undefined)
      return scalarsInput(spec, exampleShape, [own.name], byName, `column '${own.name}'`);
    if (signature.inputs.length === 1) {
      const rest = fileColumns.filter((c) => c.name !== idColumn);
      const lists = rest.filter((c) => c.list).map((c) => c.name);
      if (lists.length > 0) {
        throw new UnsupportedInputError(
          `model input '${spec.name}' has no column of its name, and list columns (${lists.join(', ')}) cannot be features: name a column '${spec.name}' or set 'batch.inputs.${spec.name}' in config.json`,
        );
      }
      return scalarsInput(
        spec,
        exampleShape,
        rest.map((c) => c.name),
        byName,
        'the scalar columns',
      );
    }
    throw new UnsupportedInputError(
      `model input '${spec.name}' has no column: name a column '${spec.name}' or set 'batch.inputs.${spec.name}' in config.json`,
    );
  });
  const columns = new Set<string>();
  if (idColumn !== undefined) columns.add(idColumn);
  for (const input of inputs) {
    if (input.kind === 'list') columns.add(input.column);
    else for (const c of input.columns) columns.add(c);
  }
  return { inputs, idColumn, columns: [...columns] };
}

function listInput(spec: TensorSpec, exampleShape: readonly number[], column: string): InputColumns {
  const dynamic = exampleShape.filter((d) => d < 0).length;
  if (exampleShape.length === 0) {
    throw new UnsupportedInputError(
      `column '${column}' is a list, but model input '${spec.name}' takes one value per example`,
    );
  }
  if (dynamic > 0 && exampleShape.length > 1) {
    throw new UnsupportedInputError(
      `model input '${spec.name}' has dynamic dims in an example of rank ${exampleShape.length}: Parquet lists fill a dynamic dim only in rank 1`,
    );
  }
  return { spec, kind: 'list', column, exampleShape };
}

function scalarsInput(
  spec: TensorSpec,
  exampleShape: readonly number[],
  columns: readonly string[],
  byName: ReadonlyMap<string, FileColumn>,
  where: string,
): InputColumns {
  if (columns.length === 0) throw new UnsupportedInputError(`${where}: no column matches`);
  for (const name of columns) {
    const column = byName.get(name);
    if (column === undefined) throw new UnsupportedInputError(`${where}: the file has no column '${name}'`);
    if (column.list) throw new UnsupportedInputError(`${where}: column '${name}' is a list, not a scalar`);
  }
  const n = columns.length;
  const fits =
    (exampleShape.length === 0 && n === 1) ||
    (exampleShape.length === 1 && (exampleShape[0] === n || (exampleShape[0] as number) < 0));
  if (!fits) {
    throw new UnsupportedInputError(
      `${where}: ${n} column(s) for model input '${spec.name}', whose examples have shape [${exampleShape.join(', ')}]`,
    );
  }
  return { spec, kind: 'scalars', columns, exampleShape: exampleShape.length === 0 ? [] : [n] };
}

/** Whether typed arrays are little-endian here (a 64-bit integer's low word first). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A row that cannot be scored, and why. */
export interface RowFailure {
  /** The row's index in the file (0-based). */
  readonly row: number;
  /** The row's id: the id column's value, or the row index when the file has no id column. */
  readonly id: RowId;
  readonly code: 'invalid_input';
  readonly message: string;
}

/** An id as the file holds it. */
export type RowId = string | number | bigint;

/** Rows stacked into one tensor per input, ready to run. */
export interface MappedBatch {
  /** File row indices, in the order of the batch axis (ascending). */
  readonly rows: readonly number[];
  readonly ids: readonly RowId[];
  /** One tensor per model input, in the model's order, with the batch axis first. */
  readonly inputs: readonly InferInput[];
}

/** The rows of one chunk: micro-batches of valid rows and the failed rows. */
export interface MappedRows {
  readonly batches: readonly MappedBatch[];
  readonly failures: readonly RowFailure[];
}

/** The decoded columns of consecutive rows (a row group, or part of one). */
export interface ColumnChunk {
  /** The file row index of the first value. */
  readonly firstRow: number;
  readonly rows: number;
  /** The values of a planned column: numbers, bigints, booleans, strings, arrays (lists) or null. */
  column(name: string): ArrayLike<unknown>;
  /**
   * A list column's rows without an array per row, when the reader decoded it so: {@link mapRows} then
   * copies each regular row's values straight from {@link ListValues.values}.
   */
  list?(name: string): ListValues | undefined;
}

/**
 * The rows of a list column as runs of one array: row `i` (counted from the chunk's first row) holds
 * `values[start[i] .. start[i] + length[i])`, unless it is in `irregular`.
 */
export interface ListValues {
  /** Every present element, row after row. */
  readonly values: ArrayLike<unknown>;
  readonly start: Uint32Array;
  readonly length: Uint32Array;
  /** Rows that are null or hold null elements, by index in the chunk: `null`, or the row with its nulls. */
  readonly irregular: ReadonlyMap<number, unknown>;
}

/** Row `at` of a list column as the per-row path sees it: null, or an array-like of its elements. */
export function listRow(list: ListValues, at: number): unknown {
  if (list.irregular.has(at)) return list.irregular.get(at);
  const from = list.start[at] as number;
  const to = from + (list.length[at] as number);
  const values = list.values;
  return ArrayBuffer.isView(values)
    ? (values as unknown as Float32Array).subarray(from, to)
    : Array.prototype.slice.call(values, from, to);
}

/** Micro-batch caps. */
export interface BatchLimits {
  /** The model's max batch size. */
  readonly maxBatchRecords: number;
  /** Bytes of input tensor data in one micro-batch at most (a row alone over it gets a batch of its own). */
  readonly maxBatchBytes: number;
  /** The most elements one input of one row may hold (`ONNX_SERVE_MAX_TENSOR_ELEMENTS`). */
  readonly maxTensorElements: number;
  /** Where a batch's tensor data comes from (a pool of reused buffers); default fresh zeroed arrays. */
  readonly allocate?: (datatype: Datatype, length: number) => TensorData;
}

interface OpenBatch {
  readonly shapes: readonly (readonly number[])[];
  readonly sizes: readonly number[];
  readonly data: TensorData[];
  readonly rows: number[];
  readonly ids: RowId[];
  readonly capacity: number;
}

/**
 * Copies rows `[from, to)` (file row indices within `chunk`) into micro-batches: rows whose examples have
 * equal shapes are stacked, up to `maxBatchRecords` rows and `maxBatchBytes` bytes a batch. Batches are
 * deterministic in the rows alone, so a resumed run builds the same ones.
 */
export function mapRows(
  plan: ColumnPlan,
  chunk: ColumnChunk,
  from: number,
  to: number,
  limits: BatchLimits,
): MappedRows {
  const idValues = plan.idColumn === undefined ? undefined : chunk.column(plan.idColumn);
  const idWords =
    idValues instanceof BigInt64Array && LITTLE_ENDIAN
      ? new Int32Array(idValues.buffer, idValues.byteOffset, idValues.length * 2)
      : undefined;
  // A list column the reader decoded as runs of one array is copied from it, with no array per row.
  const lists = plan.inputs.map((input) => (input.kind === 'list' ? chunk.list?.(input.column) : undefined));
  const sources = plan.inputs.map((input, i) =>
    input.kind === 'list'
      ? lists[i] === undefined
        ? [chunk.column(input.column)]
        : []
      : input.columns.map((c) => chunk.column(c)),
  );
  const batches: MappedBatch[] = [];
  const failures: RowFailure[] = [];
  const open = new Map<string, OpenBatch>();
  const close = (key: string, batch: OpenBatch) => {
    open.delete(key);
    batches.push(sealBatch(plan, batch));
  };
  const dynamic = plan.inputs.some((i) => i.exampleShape.some((d) => d < 0));
  const shapes: number[][] = plan.inputs.map((i) => [...i.exampleShape]);
  for (let row = from; row < to; row++) {
    const at = row - chunk.firstRow;
    let id: RowId = row;
    if (idWords !== undefined) {
      // An INT64 id that fits 32 bits is taken as a number, read from its two words: no BigInt per row
      // (a heap object each, which lived as long as the part). Ids are written the same either way.
      const low = idWords[2 * at] as number;
      const high = idWords[2 * at + 1] as number;
      id = high === low >> 31 ? low : ((idValues as BigInt64Array)[at] as bigint);
    } else if (idValues !== undefined) {
      const value = idValues[at];
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'bigint') {
        failures.push(failure(row, row, `id column '${plan.idColumn}' is ${describe(value)}`));
        continue;
      }
      id = value;
    }
    let problem: string | undefined;
    let key = '';
    if (dynamic) {
      // The row's example shape per input, from its list lengths: the key of the batch it joins.
      for (let i = 0; i < plan.inputs.length && problem === undefined; i++) {
        const input = plan.inputs[i] as InputColumns;
        const shape = shapes[i] as number[];
        const list = lists[i];
        problem =
          input.kind !== 'list'
            ? undefined
            : list === undefined
              ? listShape(input, (sources[i] as ArrayLike<unknown>[])[0]?.[at], shape, limits)
              : list.irregular.has(at)
                ? listShape(input, list.irregular.get(at), shape, limits)
                : listShape(input, undefined, shape, limits, list.length[at]);
        key += `${shape.join(',')};`;
      }
      if (problem !== undefined) {
        failures.push(failure(row, id, problem));
        continue;
      }
    }
    let batch = open.get(key);
    if (batch === undefined) {
      batch = openBatch(plan, shapes, limits);
      open.set(key, batch);
    }
    const slot = batch.rows.length;
    for (let i = 0; i < plan.inputs.length && problem === undefined; i++) {
      const input = plan.inputs[i] as InputColumns;
      const size = batch.sizes[i] as number;
      const target = batch.data[i] as TensorData;
      const columns = sources[i] as ArrayLike<unknown>[];
      const list = lists[i];
      problem =
        input.kind !== 'list'
          ? copyScalars(input, columns, at, target, slot * size)
          : list === undefined
            ? copyList(input, columns[0]?.[at], target, slot * size, size)
            : copyListRun(input, list, at, target, slot * size, size);
    }
    if (problem !== undefined) {
      // The slot is reused by the next row: nothing of this one is kept.
      failures.push(failure(row, id, problem));
      continue;
    }
    batch.rows.push(row);
    batch.ids.push(id);
    if (batch.rows.length >= batch.capacity) close(key, batch);
  }
  for (const [key, batch] of [...open]) close(key, batch);
  return { batches, failures };
}

function openBatch(plan: ColumnPlan, shapes: readonly number[][], limits: BatchLimits): OpenBatch {
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const rowBytes = plan.inputs.reduce(
    (sum, input, i) => sum + (sizes[i] as number) * elementBytes(input.spec.datatype),
    0,
  );
  const capacity = Math.max(
    1,
    Math.min(limits.maxBatchRecords, Math.floor(limits.maxBatchBytes / Math.max(1, rowBytes))),
  );
  return {
    shapes: shapes.map((s) => [...s]),
    sizes,
    // Every slot a kept row fills is written whole, so a reused buffer needs no clearing.
    data: plan.inputs.map((input, i) =>
      (limits.allocate ?? allocateData)(input.spec.datatype, capacity * (sizes[i] as number)),
    ),
    rows: [],
    ids: [],
    capacity,
  };
}

function sealBatch(plan: ColumnPlan, batch: OpenBatch): MappedBatch {
  const n = batch.rows.length;
  return {
    rows: batch.rows,
    ids: batch.ids,
    inputs: plan.inputs.map((input, i) => {
      const size = batch.sizes[i] as number;
      const data = batch.data[i] as TensorData;
      return {
        name: input.spec.name,
        datatype: input.spec.datatype,
        shape: [n, ...(batch.shapes[i] as number[])],
        data: n === batch.capacity ? data : (data.slice(0, n * size) as TensorData),
      };
    }),
  };
}

/**
 * The row's example shape for a list input into `into`, or why the list cannot be one. `value` is the row;
 * for a regular run of a {@link ListValues}, `runLength` is its length and `value` is not looked at.
 */
function listShape(
  input: Extract<InputColumns, { kind: 'list' }>,
  value: unknown,
  into: number[],
  limits: BatchLimits,
  runLength?: number,
): string | undefined {
  const where = `column '${input.column}'`;
  if (runLength === undefined && !isList(value)) return `${where} is ${describe(value)}, expected a list`;
  const length = runLength ?? (value as ArrayLike<unknown>).length;
  const shape = input.exampleShape;
  if (shape.length === 1 && (shape[0] as number) < 0) {
    if (length === 0) return `${where} is an empty list`;
    if (length > limits.maxTensorElements) {
      return `${where} holds ${length} values, over the limit of ${limits.maxTensorElements}`;
    }
    into[0] = length;
  }
  return undefined;
}

/**
 * Row `at` of a {@link ListValues} into the tensor: a regular row of the example's size is copied straight
 * from the run of values; any other row goes through {@link copyList}, which names what is wrong with it.
 */
function copyListRun(
  input: Extract<InputColumns, { kind: 'list' }>,
  list: ListValues,
  at: number,
  target: TensorData,
  offset: number,
  size: number,
): string | undefined {
  if (list.irregular.has(at) || list.length[at] !== size) {
    return copyList(input, listRow(list, at), target, offset, size);
  }
  const from = list.start[at] as number;
  const values = list.values;
  const datatype = input.spec.datatype;
  if ((datatype === 'FP32' || datatype === 'FP64') && isFloatArray(values)) {
    // Numbers by construction: what `floats` checks holds for every element.
    const out = target as Float32Array;
    for (let k = 0; k < size; k++) out[offset + k] = values[from + k] as number;
    return undefined;
  }
  const put = PUT[datatype];
  for (let k = 0; k < size; k++) {
    const problem = put(target, offset + k, values[from + k]);
    if (problem !== undefined) return `column '${input.column}'[${k}] ${problem}`;
  }
  return undefined;
}

function isFloatArray(values: ArrayLike<unknown>): values is Float32Array | Float64Array {
  return values instanceof Float32Array || values instanceof Float64Array;
}

function copyList(
  input: Extract<InputColumns, { kind: 'list' }>,
  value: unknown,
  target: TensorData,
  offset: number,
  size: number,
): string | undefined {
  const where = `column '${input.column}'`;
  if (!isList(value)) return `${where} is ${describe(value)}, expected a list`;
  const list = value;
  const put = PUT[input.spec.datatype];
  if (list.length === size) {
    // Flat: the example in row-major order.
    for (let k = 0; k < size; k++) {
      const problem = put(target, offset + k, list[k]);
      if (problem !== undefined) return `${where}[${k}] ${problem}`;
    }
    return undefined;
  }
  const shape = input.exampleShape;
  if (shape.length > 1 && list.length === shape[0]) {
    const copied = copyNested(list, shape, 0, target, offset, put);
    return copied === undefined ? undefined : `${where}${copied}`;
  }
  return `${where} holds ${list.length} values, expected ${size} (shape [${shape.join(', ')}])`;
}

function copyNested(
  list: ArrayLike<unknown>,
  shape: readonly number[],
  depth: number,
  target: TensorData,
  offset: number,
  put: Put,
): string | undefined {
  const dim = shape[depth] as number;
  if (list.length !== dim) return ` at depth ${depth} holds ${list.length} values, expected ${dim}`;
  if (depth === shape.length - 1) {
    for (let k = 0; k < dim; k++) {
      const problem = put(target, offset + k, list[k]);
      if (problem !== undefined) return `: element ${k} at depth ${depth} ${problem}`;
    }
    return undefined;
  }
  let stride = 1;
  for (let d = depth + 1; d < shape.length; d++) stride *= shape[d] as number;
  for (let k = 0; k < dim; k++) {
    const inner = list[k];
    if (!isList(inner)) return ` at depth ${depth + 1} is ${describe(inner)}, expected a list`;
    const problem = copyNested(inner, shape, depth + 1, target, offset + k * stride, put);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function copyScalars(
  input: Extract<InputColumns, { kind: 'scalars' }>,
  columns: readonly ArrayLike<unknown>[],
  at: number,
  target: TensorData,
  offset: number,
): string | undefined {
  const put = PUT[input.spec.datatype];
  for (let k = 0; k < columns.length; k++) {
    const problem = put(target, offset + k, (columns[k] as ArrayLike<unknown>)[at]);
    if (problem !== undefined) return `column '${input.columns[k]}' ${problem}`;
  }
  return undefined;
}

/** Writes `value` at `index` of a tensor of one datatype, or says why it cannot. */
type Put = (target: TensorData, index: number, value: unknown) => string | undefined;

function floats(target: TensorData, index: number, value: unknown): string | undefined {
  if (typeof value !== 'number') return notA('number', value);
  (target as Float32Array)[index] = value;
  return undefined;
}

function integers(min: number, max: number): Put {
  return (target, index, value) => {
    const n = typeof value === 'bigint' ? Number(value) : value;
    if (typeof n !== 'number') return notA('integer', value);
    if (!Number.isInteger(n) || n < min || n > max)
      return `is ${String(value)}, not an integer in [${min}, ${max}]`;
    (target as Int32Array)[index] = n;
    return undefined;
  };
}

function bigints(min: bigint, max: bigint): Put {
  return (target, index, value) => {
    let n: bigint;
    if (typeof value === 'bigint') n = value;
    else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
    else return typeof value === 'number' ? `is ${value}, not a safe integer` : notA('integer', value);
    if (n < min || n > max) return `is ${n}, out of range`;
    (target as BigInt64Array)[index] = n;
    return undefined;
  };
}

const PUT: Readonly<Record<Datatype, Put>> = {
  FP32: floats,
  FP64: floats,
  FP16: (target, index, value) => {
    if (typeof value !== 'number') return notA('number', value);
    (target as Uint16Array)[index] = toHalfBits(value);
    return undefined;
  },
  INT8: integers(-128, 127),
  UINT8: integers(0, 255),
  INT16: integers(-32768, 32767),
  UINT16: integers(0, 65535),
  INT32: integers(-2147483648, 2147483647),
  UINT32: integers(0, 4294967295),
  INT64: bigints(-(2n ** 63n), 2n ** 63n - 1n),
  UINT64: bigints(0n, 2n ** 64n - 1n),
  BOOL: (target, index, value) => {
    if (typeof value !== 'boolean') return notA('boolean', value);
    (target as Uint8Array)[index] = value ? 1 : 0;
    return undefined;
  },
  BYTES: (target, index, value) => {
    if (typeof value !== 'string') return notA('string', value);
    (target as string[])[index] = value;
    return undefined;
  },
};

function elementBytes(datatype: Datatype): number {
  switch (datatype) {
    case 'BOOL':
    case 'UINT8':
    case 'INT8':
      return 1;
    case 'UINT16':
    case 'INT16':
    case 'FP16':
      return 2;
    case 'UINT32':
    case 'INT32':
    case 'FP32':
      return 4;
    default:
      return 8;
  }
}

function notA(kind: string, value: unknown): string {
  return `is ${describe(value)}, not a ${kind}`;
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (isList(value)) return 'a list';
  if (typeof value === 'string') return `a string`;
  if (typeof value === 'object') return `a ${value.constructor?.name ?? 'object'}`;
  return `${typeof value} ${String(value)}`;
}

function isList(value: unknown): value is ArrayLike<unknown> {
  return Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
}

function failure(row: number, id: RowId, message: string): RowFailure {
  return { row, id, code: 'invalid_input', message: `row ${row}: ${message}` };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
