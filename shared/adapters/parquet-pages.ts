/**
 * The data pages of one column chunk, decoded with hyparquet's own page decoders (its internal modules,
 * pinned with the package): levels and values as the page holds them, dictionary applied, and no
 * assembly into rows. The flat and list column decoders build their columns from these.
 */
import type {
  ColumnMetaData,
  CompressionCodec,
  Compressors,
  DecodedArray,
  PageHeader,
  SchemaTree,
} from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';
import { convert, convertWithDictionary, DEFAULT_PARSERS } from 'hyparquet/src/convert.js';
import { decompressPage, readDataPage, readDataPageV2 } from 'hyparquet/src/datapage.js';
import { readPlain } from 'hyparquet/src/plain.js';
import { getMaxDefinitionLevel, getMaxRepetitionLevel } from 'hyparquet/src/schema.js';
import { allRunsOf, readHybrid, readHybridThrough } from './parquet-hybrid';

/**
 * One data page: its levels (empty when the page has none, or no nulls) and its present values. The level
 * arrays may be reused for the next page: a consumer that keeps them copies them.
 */
export interface DecodedPage {
  /** Levels in the page (`num_values`): values plus nulls and empty lists. */
  readonly levels: number;
  /** Definition levels, one per level; empty when every level is at the maximum. */
  readonly defs: ArrayLike<number>;
  /** Repetition levels, one per level; empty for a column that is not repeated. */
  readonly reps: ArrayLike<number>;
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
  /**
   * Where a page's typed values go when they are of its kind: the next `count` elements of one array for
   * the whole chunk, so a caller that joins the pages finds them already joined.
   */
  into?: (count: number) => DecodedArray | undefined,
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
  const maxLevels = { rep: getMaxRepetitionLevel(schemaPath), def: getMaxDefinitionLevel(schemaPath) };
  const limits = pageLimits(meta);
  let more = true;
  while (more && reader.offset < bytes.byteLength) {
    const header = parquetHeader(reader);
    limits.take(header);
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
    let read: {
      definitionLevels: ArrayLike<number> | undefined;
      repetitionLevels: ArrayLike<number>;
      dataPage: DecodedArray;
    };
    let encoding: string;
    let levels: number;
    const fast = fastPage(header, compressed, decoder, dictionary, maxLevels, into);
    if (fast !== undefined) {
      more = onPage(fast);
      continue;
    }
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

type Decoder = Parameters<typeof convert>[1];

/**
 * A data page (v1 or v2) whose values are PLAIN or dictionary indices, decoded with levels and indices in
 * typed arrays ({@link readHybrid}) and dictionary values mapped into an array of the dictionary's kind;
 * `undefined` for anything else (booleans, delta and byte-stream-split encodings), which hyparquet's page
 * reader decodes.
 */
function fastPage(
  header: ReturnType<typeof parquetHeader>,
  compressed: Uint8Array,
  decoder: Decoder & { codec: CompressionCodec; compressors: Compressors },
  dictionary: DecodedArray | undefined,
  max: { readonly rep: number; readonly def: number },
  into: ((count: number) => DecodedArray | undefined) | undefined,
): DecodedPage | undefined {
  const v1 = header.type === 'DATA_PAGE' ? header.data_page_header : undefined;
  const v2 = header.type === 'DATA_PAGE_V2' ? header.data_page_header_v2 : undefined;
  const encoding = v1?.encoding ?? v2?.encoding;
  const dictionaryEncoded = encoding === 'PLAIN_DICTIONARY' || encoding === 'RLE_DICTIONARY';
  if (encoding !== 'PLAIN' && !dictionaryEncoded) return undefined;
  if (decoder.type === 'BOOLEAN' || (dictionaryEncoded && dictionary === undefined)) return undefined;
  const levels = (v1?.num_values ?? v2?.num_values) as number;
  let page: Uint8Array;
  let pos = 0;
  const reps = max.rep > 0 ? scratch.reps(levels) : EMPTY;
  let defs: Uint8Array = max.def > 0 ? scratch.defs(levels) : EMPTY;
  if (v1 !== undefined) {
    page = decompressPage(
      compressed,
      Number(header.uncompressed_page_size),
      decoder.codec,
      decoder.compressors,
    );
    const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
    // v1: each level run is prefixed by its byte length.
    if (max.rep > 0) {
      const length = view.getUint32(pos, true);
      readHybrid(page, pos + 4, pos + 4 + length, bitWidth(max.rep), levels, reps);
      pos += 4 + length;
    }
    if (max.def > 0) {
      const length = view.getUint32(pos, true);
      if (allRunsOf(page, pos + 4, pos + 4 + length, bitWidth(max.def), levels, max.def)) defs = EMPTY;
      else readHybrid(page, pos + 4, pos + 4 + length, bitWidth(max.def), levels, defs);
      pos += 4 + length;
    }
  } else if (v2 !== undefined) {
    // v2: level lengths in the header, levels never compressed, values compressed unless said otherwise.
    const repBytes = v2.repetition_levels_byte_length;
    const defBytes = v2.definition_levels_byte_length;
    if (max.rep > 0) readHybrid(compressed, 0, repBytes, bitWidth(max.rep), levels, reps);
    if (max.def > 0) {
      const width = bitWidth(max.def);
      if (allRunsOf(compressed, repBytes, repBytes + defBytes, width, levels, max.def)) defs = EMPTY;
      else readHybrid(compressed, repBytes, repBytes + defBytes, width, levels, defs);
    }
    const values = compressed.subarray(repBytes + defBytes);
    page =
      v2.is_compressed === false
        ? values
        : decompressPage(
            values,
            Number(header.uncompressed_page_size) - repBytes - defBytes,
            decoder.codec,
            decoder.compressors,
          );
  } else {
    return undefined;
  }
  let present = levels;
  // Definition levels all at the maximum were recognised from their runs (EMPTY): every level is a value.
  if (max.def > 0 && defs !== EMPTY) {
    present = 0;
    for (let k = 0; k < levels; k++) if (defs[k] === max.def) present += 1;
    // As hyparquet: no definition levels when every one is at the maximum.
    if (present === levels) defs = EMPTY;
  }
  let values: DecodedArray;
  if (!dictionaryEncoded) {
    const reader = { view: new DataView(page.buffer, page.byteOffset, page.byteLength), offset: pos };
    values = convert(readPlain(reader, decoder.type, present, decoder.element.type_length), decoder);
    const target = ArrayBuffer.isView(values) ? into?.(present) : undefined;
    if (target !== undefined && target.constructor === values.constructor) {
      (target as Float32Array).set(values as Float32Array);
      values = target;
    }
  } else {
    const width = page[pos] as number;
    if (width > 24) return undefined;
    const dict = dictionary as DecodedArray;
    const target = ArrayBuffer.isView(dict) ? into?.(present) : undefined;
    const out = (
      target !== undefined && target.constructor === dict.constructor
        ? target
        : ArrayBuffer.isView(dict)
          ? new (dict.constructor as new (n: number) => DecodedArray)(present)
          : new Array(present)
    ) as { [k: number]: unknown };
    if (present > 0) readHybridThrough(page, pos + 1, page.byteLength, width, present, dict, out);
    values = out as DecodedArray;
  }
  return { levels, defs, reps, values };
}

/**
 * The most levels one data page may declare. A page's header is trusted only this far: its levels are
 * decoded into buffers of that length, and a run-length run of a few bytes can claim two billion of them
 * (a 40-byte page once made the decoder fill 4 GB). Writers cut pages far below it (parquet-mr and Arrow
 * at 20,000 rows or about 1 MiB, DuckDB within a 122,880-row row group).
 */
export const MAX_PAGE_LEVELS = 2 ** 24;

/**
 * The most bytes one page may declare once decompressed: the decompressor's buffer is that size, and a
 * compression bomb fills it (writers aim at about 1 MiB a page).
 */
export const MAX_PAGE_BYTES = 2 ** 28;

/**
 * What a chunk's page headers may declare: each page a size of 0 or more, at most {@link MAX_PAGE_BYTES}
 * decompressed and {@link MAX_PAGE_LEVELS} levels, and all of them together no more levels than the chunk's
 * footer entry.
 *
 * @throws Error from `take` when a page declares more than that
 */
export function pageLimits(meta: ColumnMetaData): { take(header: PageHeader): void } {
  const column = meta.path_in_schema.join('.');
  let left = Number(meta.num_values);
  return {
    take(header) {
      const bytes = header.uncompressed_page_size;
      if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_PAGE_BYTES) {
        throw new Error(
          `a page of column '${column}' declares ${bytes} bytes (at most ${MAX_PAGE_BYTES} a page)`,
        );
      }
      if (!(header.compressed_page_size >= 0)) {
        throw new Error(
          `a page of column '${column}' declares ${header.compressed_page_size} compressed bytes`,
        );
      }
      const levels = header.data_page_header?.num_values ?? header.data_page_header_v2?.num_values;
      if (levels === undefined) return;
      if (!Number.isSafeInteger(levels) || levels < 0 || levels > MAX_PAGE_LEVELS) {
        throw new Error(
          `a page of column '${column}' declares ${levels} values (at most ${MAX_PAGE_LEVELS} a page)`,
        );
      }
      if (levels > left) {
        throw new Error(
          `a page of column '${column}' declares ${levels} values, more than the ${left} its chunk's footer entry has left`,
        );
      }
      left -= levels;
    },
  };
}

/**
 * Walks a chunk's page headers without decoding a page, checking their declared levels ({@link
 * pageLimits}): for chunks that hyparquet's own reader then decodes.
 *
 * @throws Error when a header does not parse or declares too many levels
 */
export function checkPageHeaders(bytes: Uint8Array, meta: ColumnMetaData): void {
  const reader = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset: 0 };
  const limits = pageLimits(meta);
  while (reader.offset < bytes.byteLength) {
    const header = parquetHeader(reader);
    limits.take(header);
    reader.offset += header.compressed_page_size;
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Buffers for a page's levels, reused page after page (they are read before the next
 * page is decoded): a row group of a wide list column otherwise leaves tens of MB of them to the collector.
 */
const scratch = (() => {
  let reps = new Uint8Array(0);
  let defs = new Uint8Array(0);
  return {
    reps(n: number): Uint8Array {
      if (reps.length < n) reps = new Uint8Array(n);
      return reps.subarray(0, n);
    },
    defs(n: number): Uint8Array {
      if (defs.length < n) defs = new Uint8Array(n);
      return defs.subarray(0, n);
    },
  };
})();

function bitWidth(max: number): number {
  return 32 - Math.clz32(max);
}
