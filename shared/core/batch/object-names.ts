/**
 * How the batch door names things. An input `<input-prefix>/<model>[@<version>]/<path>` is scored with
 * that model (its default version when none is given) and its results go to
 * `<output-prefix>/<model>/<name>.out.jsonl[.gz]`, `<name>.errors.jsonl` and, last, `<name>.manifest.json`,
 * where `<name>` is `<path>` without `.gz` and without its format extension. Work in progress lives under
 * `<output-prefix>/<model>/<name>.parts/<input-etag>/`.
 */
import { isValidModelName, isValidVersion, printable } from '../names';

/** Input formats, told by the key's extension (before `.gz`); anything else is JSON Lines. */
export const INPUT_FORMATS = ['jsonl', 'csv', 'parquet'] as const;
export type InputFormat = (typeof INPUT_FORMATS)[number];

/** What an input key says about its job. */
export interface InputKey {
  readonly model: string;
  /** `undefined`: the model's default version, resolved once when the job starts. */
  readonly version: string | undefined;
  /** The key below `<input-prefix>/<model>[@<version>]/`. */
  readonly path: string;
  readonly format: InputFormat;
  /** The key ends in `.gz` (a `Content-Encoding: gzip` object is gzip too; the runner checks that). */
  readonly gzipSuffix: boolean;
  /** `path` without `.gz` and without a known format extension: the stem of the output names. */
  readonly name: string;
}

/** A job's key, or why the key is no job (for the log line). */
export type InputKeyResult =
  | { readonly ok: true; readonly input: InputKey }
  | { readonly ok: false; readonly reason: string };

const FORMAT_OF_EXTENSION: Readonly<Record<string, InputFormat>> = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.json': 'jsonl',
  '.csv': 'csv',
  '.parquet': 'parquet',
};

/**
 * Reads an (already URL-decoded) object key against the input prefix. Keys outside the prefix, folder
 * markers and keys without a valid model segment are not jobs: the result says why, for the log line.
 *
 * @param inputPrefix - without leading or trailing `/`; `''` is the whole bucket
 * @example
 * parseInputKey('batch/in/linear@2/2024/day 1.csv.gz', 'batch/in');
 * // { ok: true, input: { model: 'linear', version: '2', path: '2024/day 1.csv.gz', format: 'csv',
 * //   gzipSuffix: true, name: '2024/day 1' } }
 */
export function parseInputKey(key: string, inputPrefix: string): InputKeyResult {
  const base = inputPrefix === '' ? '' : `${inputPrefix}/`;
  if (!key.startsWith(base)) return { ok: false, reason: `the key is outside the input prefix '${base}'` };
  const rest = key.slice(base.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) {
    return { ok: false, reason: `the key has no '<model>[@<version>]/' folder below the input prefix` };
  }
  const segment = rest.slice(0, slash);
  const path = rest.slice(slash + 1);
  if (path === '' || path.endsWith('/')) return { ok: false, reason: 'the key is a folder marker' };
  const at = segment.indexOf('@');
  const model = at === -1 ? segment : segment.slice(0, at);
  const version = at === -1 ? undefined : segment.slice(at + 1);
  if (!isValidModelName(model)) {
    return { ok: false, reason: `'${printable(model)}' is not a valid model name` };
  }
  if (version !== undefined && !isValidVersion(version)) {
    return { ok: false, reason: `'${printable(version)}' is not a valid version (a positive integer)` };
  }
  const gzipSuffix = /\.gz$/i.test(path);
  let name = gzipSuffix ? path.slice(0, -3) : path;
  const dot = name.lastIndexOf('.');
  const extension = dot > name.lastIndexOf('/') ? name.slice(dot).toLowerCase() : '';
  const known = FORMAT_OF_EXTENSION[extension];
  if (known !== undefined && dot > name.lastIndexOf('/') + 1) name = name.slice(0, dot);
  return { ok: true, input: { model, version, path, format: known ?? 'jsonl', gzipSuffix, name } };
}

/** What a job's results are written as. */
export type OutputFormat = 'jsonl' | 'parquet';

/** The keys of one job's results and work, all under the output prefix. */
export interface OutputNames {
  /** `<output-prefix>/<model>/<name>` */
  readonly base: string;
  readonly out: string;
  readonly errors: string;
  readonly manifest: string;
  /** Folder of the job's parts and checkpoints for one version (ETag) of the input. */
  readonly work: string;
}

/**
 * Output keys for an input: `<base>.out.jsonl[.gz]` (or `<base>.out.parquet`), `<base>.errors.jsonl`,
 * `<base>.manifest.json` and the work folder `<base>.parts/<etag>`.
 *
 * @param outputPrefix - without leading or trailing `/`; `''` is the bucket's root
 * @param outFormat - what the results are written as (Parquet is never gzipped: its pages are compressed)
 */
export function outputNames(
  outputPrefix: string,
  model: string,
  name: string,
  etag: string,
  gzipOutput: boolean,
  outFormat: OutputFormat = 'jsonl',
): OutputNames {
  const base = `${outputPrefix === '' ? '' : `${outputPrefix}/`}${model}/${name}`;
  return {
    base,
    out: outFormat === 'parquet' ? `${base}.out.parquet` : `${base}.out.jsonl${gzipOutput ? '.gz' : ''}`,
    errors: `${base}.errors.jsonl`,
    manifest: `${base}.manifest.json`,
    work: `${base}.parts/${etagSegment(etag)}`,
  };
}

/** An ETag without its quotes: the form S3 event records use, and the one the batch door stores. */
export function normalizeEtag(etag: string): string {
  return etag.replace(/"/g, '');
}

/** ETags are hex digits and, for multipart objects, `-<parts>`; anything else is replaced to keep keys plain. */
function etagSegment(etag: string): string {
  const plain = normalizeEtag(etag).replace(/[^A-Za-z0-9-]/g, '_');
  return plain === '' ? 'no-etag' : plain;
}

/**
 * The object key in an S3 event record, decoded as AWS encodes it: URL-encoded with a space as `+`
 * (`my+file%C3%A9.jsonl` is `my file\u00e9.jsonl`; a literal `+` arrives as `%2B`).
 */
export function decodeS3EventKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}
