/**
 * Flat Parquet columns decoded page by page ({@link forEachPage}), without the list assembly hyparquet's
 * reader runs for every OPTIONAL column.
 */
import type { ColumnMetaData, Compressors, DecodedArray, SchemaTree } from 'hyparquet';
import { forEachPage } from './parquet-pages';

/**
 * Decodes one flat (top-level, non-repeated) column chunk. Without nulls the values come back as hyparquet
 * decodes them (a typed array for numbers), skipping its list assembly, which runs for OPTIONAL columns
 * too and boxes every value; with nulls, a plain array holding null where a value is absent.
 */
export function decodeFlatColumn(
  bytes: Uint8Array,
  meta: ColumnMetaData,
  schemaPath: SchemaTree[],
  compressors: Compressors,
  rows: number,
): ArrayLike<unknown> {
  const pages: { values: DecodedArray; defs: ArrayLike<number> | undefined }[] = [];
  let count = 0;
  let nulls = false;
  forEachPage(bytes, meta, schemaPath, compressors, ({ levels, defs, values }) => {
    if (defs.length > 0 && values.length < levels) nulls = true;
    // The levels are the decoder's scratch: kept, they are copied.
    pages.push({ values, defs: defs.length > 0 ? Uint8Array.from(defs) : undefined });
    count += levels;
    return count < rows;
  });
  if (count !== rows)
    throw new Error(`column ${meta.path_in_schema.join('.')}: ${count} values for ${rows} rows`);
  const first = pages[0];
  if (!nulls && pages.length === 1 && first !== undefined) return first.values;
  const out = new Array<unknown>(rows);
  let at = 0;
  for (const { values, defs } of pages) {
    if (defs === undefined || !nulls) {
      for (let k = 0; k < values.length; k++) out[at++] = values[k];
      continue;
    }
    let v = 0;
    for (let k = 0; k < defs.length; k++) out[at++] = defs[k] === 0 ? null : values[v++];
  }
  return out;
}
