/**
 * LIST columns decoded into one array of values for the whole chunk and a start and length per row
 * ({@link ListValues}), from the pages' repetition and definition levels: no JavaScript array per row,
 * where hyparquet's reader assembles one for every row (and the mapping then walks it value by value).
 * Rows that are null or hold null elements are kept aside as hyparquet would give them, for the
 * per-row path to name what is wrong with them.
 */
import type { ColumnMetaData, Compressors, DecodedArray, SchemaTree } from 'hyparquet';
import type { ListValues } from '../core/batch/parquet-mapping';
import { forEachPage } from './parquet-pages';

/** The most values decoded in place into one array for a chunk (2^26: 256 MiB of FLOAT). */
const MAX_JOINED = 2 ** 26;

/**
 * Whether {@link decodeListColumn} reads a column of this schema path: the standard three-level LIST
 * (`<column> (LIST) / repeated group / one primitive element`), whatever the column's and element's
 * optionality. Two-level (legacy) lists and lists of lists are left to hyparquet's reader.
 */
export function isSimpleList(schemaPath: readonly SchemaTree[]): boolean {
  if (schemaPath.length !== 4) return false;
  const [, column, repeated, leaf] = schemaPath as [SchemaTree, SchemaTree, SchemaTree, SchemaTree];
  const list = column.element.converted_type === 'LIST' || column.element.logical_type?.type === 'LIST';
  return (
    list &&
    column.element.repetition_type !== 'REPEATED' &&
    column.children.length === 1 &&
    repeated.element.repetition_type === 'REPEATED' &&
    repeated.children.length === 1 &&
    leaf.children.length === 0 &&
    leaf.element.repetition_type !== 'REPEATED'
  );
}

/**
 * Decodes a simple LIST column chunk ({@link isSimpleList}) of `rows` rows.
 *
 * @throws Error when the pages do not hold `rows` rows (the caller names the row group)
 */
export function decodeListColumn(
  bytes: Uint8Array,
  meta: ColumnMetaData,
  schemaPath: SchemaTree[],
  compressors: Compressors,
  rows: number,
  /**
   * In: an array of an earlier chunk that is no longer read, decoded into when it is of the kind and fits.
   * Out: the array this chunk's values were decoded into (to hand back in for a later chunk), if any.
   */
  spare?: { value: Float32Array | Float64Array | undefined },
): ListValues {
  const column = schemaPath[1] as SchemaTree;
  const leaf = schemaPath[3] as SchemaTree;
  // Definition levels: below `emptyDef` the row is null; at it the list is empty; at `maxDef` an element
  // is present; between the two (an OPTIONAL element) the element is null.
  const emptyDef = column.element.repetition_type === 'OPTIONAL' ? 1 : 0;
  const maxDef = emptyDef + 1 + (leaf.element.repetition_type === 'OPTIONAL' ? 1 : 0);
  const start = new Uint32Array(rows);
  const length = new Uint32Array(rows);
  const irregular = new Map<number, unknown>();
  const pages: DecodedArray[] = [];
  let row = -1;
  let value = 0;
  /** The row being read holds a null element: it is built as an array as hyparquet would give it. */
  let odd: unknown[] | undefined;
  // A plain FLOAT or DOUBLE element: the pages decode straight into one array for the chunk (at most its
  // level count), which is then the joined values.
  // The footer's count is trusted up to a bound: a lying one must not allocate gigabytes up front.
  const levelCount = Number(meta.num_values);
  const kind = leaf.element.type === 'FLOAT' ? Float32Array : Float64Array;
  const given = spare?.value;
  const whole =
    isPlainFloat(leaf) && Number.isSafeInteger(levelCount) && levelCount >= 0 && levelCount <= MAX_JOINED
      ? given instanceof kind && given.length >= levelCount
        ? given
        : new kind(levelCount)
      : undefined;
  if (spare !== undefined) spare.value = whole;
  const joined = whole?.subarray(0, levelCount);
  let filled = 0;
  const into = (count: number) => {
    if (joined === undefined || filled + count > joined.length) return undefined;
    const view = joined.subarray(filled, filled + count);
    filled += count;
    return view;
  };
  forEachPage(
    bytes,
    meta,
    schemaPath,
    compressors,
    ({ levels, defs, reps, values }) => {
      if (reps.length !== levels)
        throw new Error(`a page of ${levels} levels has ${reps.length} repetition levels`);
      pages.push(values);
      const base = value;
      if (defs.length === 0 && maxDef > emptyDef) {
        // Every level is a present element (no nulls, no empty lists): rows start where repetition is 0,
        // and a row's length is the run up to the next start. The common case, without a branch per level.
        if (values.length !== levels)
          throw new Error(`a page of ${levels} levels has ${values.length} values`);
        let from = 0;
        for (let k = 0; k < levels; k++) {
          if (reps[k] !== 0) continue;
          if (row >= 0) extend(from, k);
          else if (k > 0) throw new Error('the first level continues a row');
          row += 1;
          if (row >= rows) throw new Error(`more than ${rows} rows`);
          odd = undefined;
          start[row] = base + k;
          from = k;
        }
        if (row < 0 && levels > 0) throw new Error('the first level continues a row');
        if (levels > 0) extend(from, levels);
        value += levels;
        return true;
      }
      /** Levels [from, to) of this page belong to the current row. */
      function extend(from: number, to: number): void {
        length[row] = (length[row] as number) + (to - from);
        if (odd !== undefined) for (let k = from; k < to; k++) odd.push(values[k]);
      }
      let v = 0;
      for (let k = 0; k < levels; k++) {
        const def = defs.length === 0 ? maxDef : (defs[k] as number);
        if (reps[k] === 0) {
          row += 1;
          if (row >= rows) throw new Error(`more than ${rows} rows`);
          odd = undefined;
          start[row] = base + v;
          if (def < emptyDef) {
            irregular.set(row, null);
            continue;
          }
        } else if (row < 0) {
          throw new Error('the first level continues a row');
        }
        if (def <= emptyDef) continue;
        if (def < maxDef && odd === undefined) {
          // The first null element of the row: the row so far, then nulls where elements are absent.
          odd = [];
          for (let i = 0; i < (length[row] as number); i++)
            odd.push(valueAt(pages, (start[row] as number) + i));
          irregular.set(row, odd);
        }
        if (def === maxDef) {
          if (odd !== undefined) odd.push(values[v]);
          v += 1;
        } else {
          odd?.push(null);
        }
        length[row] = (length[row] as number) + 1;
      }
      value += v;
      if (v !== values.length) throw new Error(`a page of ${values.length} values has ${v} present levels`);
      return true;
    },
    into,
  );
  if (row + 1 !== rows)
    throw new Error(`column ${meta.path_in_schema.join('.')}: ${row + 1} rows, not ${rows}`);
  const inPlace =
    joined !== undefined &&
    filled === value &&
    pages.every((p) => ArrayBuffer.isView(p) && (p as Float32Array).buffer === joined.buffer);
  return {
    values: inPlace ? joined.subarray(0, value) : joinValues(pages, value, leaf),
    start,
    length,
    irregular,
  };
}

/** Value `index` of the pages' values laid end to end. */
function valueAt(pages: readonly DecodedArray[], index: number): unknown {
  let at = index;
  for (const page of pages) {
    if (at < page.length) return page[at];
    at -= page.length;
  }
  return undefined;
}

/**
 * The pages' values as one array: a typed array where every page holds one of the same kind, or where
 * the element is a plain FLOAT or DOUBLE (dictionary pages decode to plain arrays of numbers).
 */
function joinValues(pages: readonly DecodedArray[], count: number, leaf: SchemaTree): ArrayLike<unknown> {
  const first = pages[0];
  const plainFloat = isPlainFloat(leaf);
  if (pages.length === 1 && first !== undefined && (ArrayBuffer.isView(first) || !plainFloat)) return first;
  const typed = first !== undefined && ArrayBuffer.isView(first) ? first.constructor : undefined;
  let out: { [index: number]: unknown; length: number };
  if (typed !== undefined && pages.every((p) => p.length === 0 || p.constructor === typed)) {
    out = new (typed as new (n: number) => typeof out)(count);
  } else if (plainFloat) {
    out = leaf.element.type === 'FLOAT' ? new Float32Array(count) : new Float64Array(count);
  } else {
    out = new Array<unknown>(count);
  }
  let at = 0;
  for (const page of pages) {
    if (ArrayBuffer.isView(out) && ArrayBuffer.isView(page) && page.constructor === out.constructor) {
      (out as unknown as Float32Array).set(page as unknown as Float32Array, at);
      at += page.length;
      continue;
    }
    for (let k = 0; k < page.length; k++) out[at++] = page[k];
  }
  return out;
}

/** A FLOAT or DOUBLE element with no logical type: its values are plain numbers. */
function isPlainFloat(leaf: SchemaTree): boolean {
  return (
    leaf.element.converted_type === undefined &&
    leaf.element.logical_type === undefined &&
    (leaf.element.type === 'FLOAT' || leaf.element.type === 'DOUBLE')
  );
}
