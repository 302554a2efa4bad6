/**
 * Flat Parquet columns decoded page by page with hyparquet's own page decoders (its internal modules, pinned
 * with the package), without the list assembly its reader runs for every OPTIONAL column.
 */
import type { ColumnMetaData, CompressionCodec, Compressors, DecodedArray, SchemaTree } from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';
import { convert, convertWithDictionary, DEFAULT_PARSERS } from 'hyparquet/src/convert.js';
import { decompressPage, readDataPage, readDataPageV2 } from 'hyparquet/src/datapage.js';
import { readPlain } from 'hyparquet/src/plain.js';

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
  const leaf = schemaPath[schemaPath.length - 1] as SchemaTree;
  const decoder = {
    pathInSchema: meta.path_in_schema,
    type: meta.type,
    element: leaf.element,
    schemaPath,
    codec: meta.codec as CompressionCodec,
    parsers: DEFAULT_PARSERS,
    compressors,
  };
  const reader = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset: 0 };
  let dictionary: DecodedArray | undefined;
  const pages: { values: DecodedArray; defs: number[] | undefined }[] = [];
  let count = 0;
  let nulls = false;
  while (count < rows && reader.offset < bytes.byteLength) {
    const header = parquetHeader(reader);
    const compressed = new Uint8Array(
      bytes.buffer,
      bytes.byteOffset + reader.offset,
      header.compressed_page_size,
    );
    reader.offset += header.compressed_page_size;
    if (header.type === 'DICTIONARY_PAGE') {
      const page = decompressPage(
        compressed,
        Number(header.uncompressed_page_size),
        decoder.codec,
        compressors,
      );
      const view = { view: new DataView(page.buffer, page.byteOffset, page.byteLength), offset: 0 };
      const num = header.dictionary_page_header?.num_values ?? 0;
      dictionary = convert(readPlain(view, decoder.type, num, leaf.element.type_length), decoder);
      continue;
    }
    let defs: number[] | undefined;
    let data: DecodedArray;
    let encoding: string;
    let n: number;
    if (header.type === 'DATA_PAGE' && header.data_page_header !== undefined) {
      const page = decompressPage(
        compressed,
        Number(header.uncompressed_page_size),
        decoder.codec,
        compressors,
      );
      const read = readDataPage(page, header.data_page_header, decoder);
      defs = read.definitionLevels;
      data = read.dataPage;
      encoding = header.data_page_header.encoding;
      n = header.data_page_header.num_values;
    } else if (header.type === 'DATA_PAGE_V2' && header.data_page_header_v2 !== undefined) {
      const read = readDataPageV2(compressed, header, decoder);
      defs = read.definitionLevels;
      data = read.dataPage;
      encoding = header.data_page_header_v2.encoding;
      n = header.data_page_header_v2.num_values;
    } else {
      continue; // index pages
    }
    const values = convertWithDictionary(data, dictionary, encoding as never, decoder);
    if (defs !== undefined && defs.length > 0 && values.length < n) nulls = true;
    pages.push({ values, defs: defs !== undefined && defs.length > 0 ? defs : undefined });
    count += n;
  }
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
