import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { ConfigError, ModelLoadError, ModelNotFoundError, ServingError } from '../core/errors';
import { assertModelName, isValidModelName } from '../core/names';
import type { ArtifactFormat, ConfigDocument, ModelStore } from '../core/ports';
import { checkArtifactRequest } from './artifact-request';

/** Options of {@link S3ModelStore}. */
export interface S3ModelStoreOptions {
  readonly client: S3Client;
  readonly bucket: string;
  /** Key prefix of the repository, e.g. `models/prod`; leading and trailing `/` are ignored. Default `''`. */
  readonly prefix?: string | undefined;
  /** Bytes per ranged GET; an artifact no larger than this is read with one plain GET. Default 8 MiB. */
  readonly partSize?: number | undefined;
  /** Ranged GETs in flight at once for one artifact. Default 8. */
  readonly concurrency?: number | undefined;
  /** `MaxKeys` of each ListObjectsV2 page in {@link S3ModelStore.listModels}. Default 1000 (the S3 maximum). */
  readonly listPageSize?: number | undefined;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_CONCURRENCY = 8;

/** A GET answered with bytes that do not fit what config.json says, or an object replaced mid-download. */
class ArtifactMismatch extends Error {}

type Body = NonNullable<GetObjectCommandOutput['Body']>;

/**
 * The model repository in an S3 bucket (or an S3-compatible server):
 * `<prefix>/<model>/config.json` and `<prefix>/<model>/<version>/model.onnx` (or `model.ort`).
 *
 * An artifact is read into one buffer allocated up front at the size recorded in config.json, with up to
 * `concurrency` ranged GETs in flight, each writing its stream straight into its slice of the buffer.
 *
 * @example
 * const store = new S3ModelStore({ client: createS3Client(), bucket: 'models', prefix: 'prod' });
 * const bytes = await store.readArtifact('resnet', '3', 'onnx', 102_442_876);
 */
export class S3ModelStore implements ModelStore {
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  /** `''` or the prefix followed by `/`. */
  private readonly base: string;
  private readonly partSize: number;
  private readonly concurrency: number;
  private readonly listPageSize: number;

  constructor(options: S3ModelStoreOptions) {
    const prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    const problems: string[] = [];
    if (options.bucket === '' || options.bucket.includes('/'))
      problems.push(`'bucket' must be a bucket name`);
    if (
      prefix
        .split('/')
        .some((segment) => segment === '.' || segment === '..' || (segment === '' && prefix !== ''))
    ) {
      problems.push(`'prefix' must not hold empty, '.' or '..' segments`);
    }
    const partSize = options.partSize ?? DEFAULT_PART_SIZE;
    if (!Number.isSafeInteger(partSize) || partSize < 1)
      problems.push(`'partSize' must be a positive integer`);
    const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isSafeInteger(concurrency) || concurrency < 1)
      problems.push(`'concurrency' must be a positive integer`);
    const listPageSize = options.listPageSize ?? 1000;
    if (!Number.isSafeInteger(listPageSize) || listPageSize < 1 || listPageSize > 1000) {
      problems.push(`'listPageSize' must be an integer from 1 to 1000`);
    }
    if (problems.length > 0) throw new ConfigError(problems);
    this.client = options.client;
    this.bucket = options.bucket;
    this.base = prefix === '' ? '' : `${prefix}/`;
    this.partSize = partSize;
    this.concurrency = concurrency;
    this.listPageSize = listPageSize;
    this.location = `s3://${this.bucket}/${prefix}`;
  }

  async readConfig(model: string, etag?: string): Promise<ConfigDocument | 'not-modified' | undefined> {
    assertModelName(model);
    const key = this.key(model, 'config.json');
    try {
      const output = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          ...(etag !== undefined && etag !== '' ? { IfNoneMatch: etag } : {}),
        }),
      );
      const text = (await output.Body?.transformToString('utf-8')) ?? '';
      return { text, etag: output.ETag ?? '' };
    } catch (error) {
      // The SDK turns a 304 into an error (with no body to name it), so the status is what tells.
      if (httpStatus(error) === 304) return 'not-modified';
      if (errorName(error) === 'NoSuchKey') return undefined;
      throw new ModelLoadError(
        `model '${model}': reading config.json from the model store failed (${describe(error)})`,
        { cause: error },
      );
    }
  }

  async readArtifact(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
  ): Promise<Uint8Array> {
    const file = checkArtifactRequest(model, version, format, size, variant);
    const key = this.key(model, version, file);
    // allocUnsafeSlow: every byte is overwritten before the buffer is returned, and the buffer owns its
    // ArrayBuffer at offset 0 (never a slice of Node's pool), which onnxruntime may keep using as weights.
    const bytes = Buffer.allocUnsafeSlow(size);
    const abort = new AbortController();
    try {
      if (size <= this.partSize) {
        await this.readWhole(key, bytes, abort.signal);
      } else {
        await this.readParts(key, bytes, abort);
      }
    } catch (error) {
      abort.abort();
      throw this.translate(error, model, version, file);
    }
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  async listModels(): Promise<string[]> {
    const candidates: string[] = [];
    try {
      let token: string | undefined;
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.base,
            Delimiter: '/',
            MaxKeys: this.listPageSize,
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
        );
        for (const common of page.CommonPrefixes ?? []) {
          const name = common.Prefix?.slice(this.base.length, -1);
          if (name !== undefined && isValidModelName(name)) candidates.push(name);
        }
        token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
      const names = [...new Set(candidates)];
      const found = await mapLimit(names, this.concurrency, (name) => this.hasConfig(name));
      return names.filter((_, i) => found[i]).sort();
    } catch (error) {
      throw new ModelLoadError(`listing the models of the model store failed (${describe(error)})`, {
        cause: error,
      });
    }
  }

  private async hasConfig(model: string): Promise<boolean> {
    try {
      await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(model, 'config.json') }),
      );
      return true;
    } catch (error) {
      // HEAD answers carry no body, so a missing key is a bare 404 named 'NotFound'.
      if (httpStatus(error) === 404) return false;
      throw error;
    }
  }

  /** Names reaching here were validated by the core; checked again so a key can never leave the prefix. */
  private key(...segments: string[]): string {
    for (const segment of segments) {
      if (
        segment === '' ||
        segment === '.' ||
        segment === '..' ||
        segment.includes('/') ||
        segment.includes('\\')
      ) {
        throw new ModelNotFoundError('the model store refuses a name that would leave the repository');
      }
    }
    const key = this.base + segments.join('/');
    if (key.startsWith('/') || key.split('/').includes('..')) {
      throw new ModelNotFoundError('the model store refuses a name that would leave the repository');
    }
    return key;
  }

  private async readWhole(key: string, bytes: Buffer, signal: AbortSignal): Promise<void> {
    const output = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
      abortSignal: signal,
    });
    const body = output.Body;
    if (output.ContentLength !== undefined && output.ContentLength !== bytes.byteLength) {
      destroy(body);
      throw new ArtifactMismatch(
        `the object is ${output.ContentLength} bytes, config.json says ${bytes.byteLength}`,
      );
    }
    await copyInto(body, bytes, 0, bytes.byteLength, signal);
  }

  private async readParts(key: string, bytes: Buffer, abort: AbortController): Promise<void> {
    const size = bytes.byteLength;
    const parts = Math.ceil(size / this.partSize);
    const range = (part: number) => {
      const start = part * this.partSize;
      return { start, end: Math.min(size, start + this.partSize) - 1 };
    };
    let failure: unknown;
    const guard = async (task: () => Promise<void>) => {
      try {
        await task();
      } catch (error) {
        failure ??= error;
        abort.abort();
      }
    };

    // The first answer gives the ETag every other part must match, so a replaced object is never mixed in.
    const first = await this.getRange(key, range(0), undefined, size, abort.signal);
    const etag = first.ETag;
    let next = 1;
    const worker = async () => {
      while (next < parts && failure === undefined) {
        const part = next++;
        const { start, end } = range(part);
        const output = await this.getRange(key, { start, end }, etag, size, abort.signal);
        await copyInto(output.Body, bytes, start, end + 1 - start, abort.signal);
      }
    };
    const tasks = [
      guard(async () => {
        await copyInto(first.Body, bytes, 0, range(0).end + 1, abort.signal);
        await worker();
      }),
    ];
    for (let i = 1; i < Math.min(this.concurrency, parts); i++) tasks.push(guard(worker));
    // Every task settles before this returns, so nothing writes into the buffer after a failure is thrown.
    await Promise.all(tasks);
    if (failure !== undefined) throw failure;
  }

  private async getRange(
    key: string,
    range: { start: number; end: number },
    etag: string | undefined,
    size: number,
    signal: AbortSignal,
  ): Promise<GetObjectCommandOutput> {
    const output = await this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Range: `bytes=${range.start}-${range.end}`,
        ...(etag === undefined ? {} : { IfMatch: etag }),
      }),
      { abortSignal: signal },
    );
    const problem = checkRange(output, range, size, etag);
    if (problem !== undefined) {
      destroy(output.Body);
      throw new ArtifactMismatch(problem);
    }
    return output;
  }

  private translate(error: unknown, model: string, version: string, file: string): Error {
    if (error instanceof ServingError) return error;
    const what = `model '${model}' version '${version}'`;
    if (error instanceof ArtifactMismatch) {
      return new ModelLoadError(
        `${what}: ${file} in the model store does not match config.json: ${error.message}`,
      );
    }
    const name = errorName(error);
    if (name === 'NoSuchKey') {
      return new ModelNotFoundError(`model '${model}' has no version '${version}' (${file} is missing)`, {
        cause: error,
      });
    }
    if (name === 'PreconditionFailed' || httpStatus(error) === 412) {
      return new ModelLoadError(`${what}: ${file} was replaced in the model store during the download`, {
        cause: error,
      });
    }
    return new ModelLoadError(`${what}: reading ${file} from the model store failed (${describe(error)})`, {
      cause: error,
    });
  }
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** Why a ranged answer cannot be used, or `undefined` when it is exactly the asked-for slice. */
function checkRange(
  output: GetObjectCommandOutput,
  range: { start: number; end: number },
  size: number,
  etag: string | undefined,
): string | undefined {
  if (etag !== undefined && output.ETag !== etag) return 'the object changed during the download';
  const match = CONTENT_RANGE.exec(output.ContentRange ?? '');
  if (match === null) return `expected a partial answer, got Content-Range '${output.ContentRange ?? ''}'`;
  const total = match[3] === '*' ? undefined : Number(match[3]);
  if (total !== undefined && total !== size) return `the object is ${total} bytes, config.json says ${size}`;
  if (Number(match[1]) !== range.start || Number(match[2]) !== range.end) {
    return `asked for bytes ${range.start}-${range.end}, got ${match[1]}-${match[2]}`;
  }
  const length = range.end + 1 - range.start;
  if (output.ContentLength !== undefined && output.ContentLength !== length) {
    return `asked for ${length} bytes, got ${output.ContentLength}`;
  }
  return undefined;
}

function isAsyncIterable(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === 'object' && body !== null && Symbol.asyncIterator in body;
}

/** Streams `body` into `bytes[offset, offset + length)`; more or fewer bytes than that is a mismatch. */
async function copyInto(
  body: Body | undefined,
  bytes: Uint8Array,
  offset: number,
  length: number,
  signal: AbortSignal,
): Promise<void> {
  if (!isAsyncIterable(body)) throw new ArtifactMismatch('the answer has no readable body');
  const end = offset + length;
  let at = offset;
  // Leaving the loop early (throw) destroys the stream, which frees its socket.
  for await (const chunk of body) {
    signal.throwIfAborted();
    if (at + chunk.byteLength > end) throw new ArtifactMismatch(`more than the ${length} bytes asked for`);
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  if (at !== end) throw new ArtifactMismatch(`${at - offset} bytes instead of ${length}`);
}

function destroy(body: Body | undefined): void {
  const stream = body as { destroy?: () => void } | undefined;
  stream?.destroy?.();
}

// Duck-typed: errors raised by Node's own modules may come from another realm (jest's vm) than `Error`.
function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  const metadata = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata;
  return metadata?.httpStatusCode;
}

/** The error's name and HTTP status only: SDK messages may name hosts and buckets, the cause keeps them. */
function describe(error: unknown): string {
  const status = httpStatus(error);
  const name = errorName(error) ?? 'unknown error';
  return status === undefined ? name : `${name}, HTTP ${status}`;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
