/**
 * The data pages of one column chunk, decoded with hyparquet's own page decoders (its internal modules,
 * pinned with the package): levels and values as the page holds them, dictionary applied, and no
 * assembly into rows. The flat and list column decoders build their columns from these.
 */
import type { ColumnMetaData, CompressionCodec, Compressors, DecodedArray, SchemaTree } from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';
import { convert, convertWithDictionary, DEFAULT_PARSERS } from 'hyparquet/src/convert.js';
import { decompressPage, readDataPage, readDataPageV2 } from 'hyparquet/src/datapage.js';
import { readPlain } from 'hyparquet/src/plain.js';

/** One data page: its levels (empty when the page has none, or no nulls) and its present values. */
export interface DecodedPage {
  /** Levels in the page (`num_values`): values plus nulls and empty lists. */
  readonly levels: number;
  /** Definition levels, one per level; empty when every level is at the maximum. */
  readonly defs: readonly number[];
  /** Repetition levels, one per level; empty for a column that is not repeated. */
  readonly reps: readonly number[];
  /** The present values, converted (a typed array for numbers where hyparquet decodes one). */
  readonly values: DecodedArray;
}

/**
 * Decodes the data pages of a column chunk, in order, handing each to `onPage`, until the chunk ends or
 * `onPage` answers `false`.
 *
 * @throws Error when a page cannot be decoded (the caller says whose fault)
 */
export function forEachPage(
  bytes: Uint8Array,
  meta: ColumnMetaData,
  schemaPath: SchemaTree[],
  compressors: Compressors,
  onPage: (page: DecodedPage) => boolean,
): void {
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
  let more = true;
  while (more && reader.offset < bytes.byteLength) {
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
    let read: { definitionLevels: number[] | undefined; repetitionLevels: number[]; dataPage: DecodedArray };
    let encoding: string;
    let levels: number;
    if (header.type === 'DATA_PAGE' && header.data_page_header !== undefined) {
      const page = decompressPage(
        compressed,
        Number(header.uncompressed_page_size),
        decoder.codec,
        compressors,
      );
      read = readDataPage(page, header.data_page_header, decoder);
      encoding = header.data_page_header.encoding;
      levels = header.data_page_header.num_values;
    } else if (header.type === 'DATA_PAGE_V2' && header.data_page_header_v2 !== undefined) {
      read = readDataPageV2(compressed, header, decoder);
      encoding = header.data_page_header_v2.encoding;
      levels = header.data_page_header_v2.num_values;
    } else {
      continue; // index pages
    }
    more = onPage({
      levels,
      defs: read.definitionLevels ?? [],
      reps: read.repetitionLevels ?? [],
      values: convertWithDictionary(read.dataPage, dictionary, encoding as never, decoder),
    });
  }
}
