import { createHash, type Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  ConfigError,
  IntegrityError,
  ModelLoadError,
  ModelNotFoundError,
  ServingError,
} from '../core/errors';
import { assertModelName, isValidModelName } from '../core/names';
import type { ArtifactFormat, ConfigDocument, HashedArtifact, ModelStore } from '../core/ports';
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
  /** How a part whose body fails is tried again. Defaults: {@link DEFAULT_BODY_RETRY}. */
  readonly bodyRetry?: Partial<BodyRetry> | undefined;
  /** Told of every part (or config.json read) that is tried again, before the backoff (logs, metrics). */
  readonly onRetry?: ((retry: DownloadRetry) => void) | undefined;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_CONCURRENCY = 8;

/**
 * Retries of a response body that fails. The SDK retries a GET only until the response headers arrive
 * (5xx, throttling, connection errors); a reset, an early close, a stall past the socket timeout or a
 * short or mislabelled answer *in the body* reaches us, and only the part it hit is read again. The
 * delay before try n+1 is drawn uniformly from 0 to min(`maxDelayMs`, `baseDelayMs` * 2^(n-1)) ("full
 * jitter"), so instances that lost the same server do not come back in step.
 */
export interface BodyRetry {
  /** Tries per part (and per config.json read), the first included. */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_BODY_RETRY: BodyRetry = { attempts: 3, baseDelayMs: 100, maxDelayMs: 1000 };

/** One part (or config.json read) about to be tried again. */
export interface DownloadRetry {
  readonly model: string;
  /** `undefined` for config.json. */
  readonly version: string | undefined;
  readonly file: string;
  /** 1-based part number and the number of parts (1 of 1 for a single GET). */
  readonly part: number;
  readonly parts: number;
  /** The attempt that failed (1 for the first). */
  readonly attempt: number;
  /** Why, e.g. `connection closed before the body was complete after 4.1 MB`. */
  readonly reason: string;
  readonly delayMs: number;
}

/** A GET answered with bytes that do not fit what config.json says, or an object replaced mid-download. */
class ArtifactMismatch extends Error {
  /** Whether reading the part again may help (a short or mislabelled answer); not when the object changed. */
  constructor(
    message: string,
    readonly retryable = true,
  ) {
    super(message);
  }
}

/** A part that failed for good: `message` names the cause, the bytes that had arrived and the attempts. */
class PartFailed extends Error {
  constructor(
    message: string,
    readonly last: unknown,
  ) {
    super(message, { cause: last });
  }
}

/**
 * Feeds a hash the parts of a download in order as they complete: a part that completes before the ones
 * ahead of it waits (it is already in the buffer) and is hashed when they are. Only whole parts are
 * hashed, so a part whose body broke and was read again is hashed once, as it finally is.
 */
class InOrderHash {
  #next = 0;
  readonly #waiting = new Set<number>();

  constructor(
    private readonly hash: Hash,
    private readonly bytes: Buffer,
    private readonly part: (index: number) => Part,
  ) {}

  done(index: number): void {
    this.#waiting.add(index);
    while (this.#waiting.delete(this.#next)) {
      const { start, end } = this.part(this.#next++);
      this.hash.update(this.bytes.subarray(start, end + 1));
    }
  }
}

/** Where one part lies in the artifact; `index` is 0-based, `start`/`end` inclusive. */
interface Part {
  readonly index: number;
  readonly count: number;
  readonly start: number;
  readonly end: number;
}

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
  private readonly retry: BodyRetry;
  private readonly onRetry: ((retry: DownloadRetry) => void) | undefined;

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
    const retry = { ...DEFAULT_BODY_RETRY, ...options.bodyRetry };
    if (!Number.isSafeInteger(retry.attempts) || retry.attempts < 1)
      problems.push(`'bodyRetry.attempts' must be a positive integer`);
    if (!(retry.baseDelayMs >= 0) || !(retry.maxDelayMs >= 0))
      problems.push(`'bodyRetry' delays must be non-negative numbers`);
    if (problems.length > 0) throw new ConfigError(problems);
    this.retry = retry;
    this.onRetry = options.onRetry;
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
    for (let attempt = 1; ; attempt++) {
      let output: GetObjectCommandOutput;
      try {
        output = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: key,
            ...(etag !== undefined && etag !== '' ? { IfNoneMatch: etag } : {}),
          }),
        );
      } catch (error) {
        // The SDK turns a 304 into an error (with no body to name it), so the status is what tells.
        if (httpStatus(error) === 304) return 'not-modified';
        if (errorName(error) === 'NoSuchKey') return undefined;
        // The SDK has retried what can be retried before the headers.
        throw new ModelLoadError(
          `model '${model}': reading config.json from the model store failed (${describe(error)})`,
          { cause: error },
        );
      }
      const progress = { received: 0 };
      try {
        const text = await readText(output, progress);
        return { text, etag: output.ETag ?? '' };
      } catch (error) {
        const reason = `${bodyFault(error)} after ${formatBytes(progress.received)}`;
        if (attempt >= this.retry.attempts) {
          throw new ModelLoadError(
            `model '${model}': reading config.json from the model store failed: ${reason} (${attempts(attempt)})`,
            { cause: error },
          );
        }
        const retry = { model, version: undefined, file: 'config.json', part: 1, parts: 1, attempt, reason };
        await this.backOff(retry, undefined);
      }
    }
  }

  async readArtifact(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
  ): Promise<Uint8Array> {
    return (await this.read(model, version, format, size, variant, undefined)).bytes;
  }

  /**
   * {@link readArtifact} with the sha256 of the bytes, hashed part by part in order as the parts complete
   * (a part read again after a broken body is hashed once, when it is whole), so that only the parts that
   * arrive last are hashed after the download.
   */
  async readArtifactHashed(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
    onUnderWay?: () => void,
  ): Promise<HashedArtifact> {
    const hash = createHash('sha256');
    const { bytes } = await this.read(model, version, format, size, variant, hash, onUnderWay);
    return { bytes, sha256: hash.digest('hex') };
  }

  private async read(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant: string | undefined,
    hash: Hash | undefined,
    onUnderWay?: () => void,
  ): Promise<{ bytes: Uint8Array }> {
    const file = checkArtifactRequest(model, version, format, size, variant);
    const key = this.key(model, version, file);
    // allocUnsafeSlow: every byte is overwritten before the buffer is returned, and the buffer owns its
    // ArrayBuffer at offset 0 (never a slice of Node's pool), which onnxruntime may keep using as weights.
    const bytes = Buffer.allocUnsafeSlow(size);
    const abort = new AbortController();
    const retried = (part: Part, attempt: number, reason: string) => ({
      model,
      version,
      file,
      part: part.index + 1,
      parts: part.count,
      attempt,
      reason,
    });
    try {
      await this.readParts(key, bytes, abort, retried, hash, onUnderWay);
    } catch (error) {
      abort.abort();
      throw this.translate(error, model, version, file);
    }
    return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
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

  /**
   * Reads every part into `bytes`: one plain GET when the artifact fits in one part, else ranged GETs,
   * up to `concurrency` at once. A part whose body fails is read again alone ({@link BodyRetry}); the
   * parts already read are kept. A part that fails for good aborts the others.
   */
  private async readParts(
    key: string,
    bytes: Buffer,
    abort: AbortController,
    retried: (part: Part, attempt: number, reason: string) => Omit<DownloadRetry, 'delayMs'>,
    hash: Hash | undefined,
    onUnderWay: (() => void) | undefined,
  ): Promise<void> {
    const size = bytes.byteLength;
    const count = Math.ceil(size / this.partSize);
    const part = (index: number): Part => {
      const start = index * this.partSize;
      return { index, count, start, end: Math.min(size, start + this.partSize) - 1 };
    };
    const hashed = hash === undefined ? undefined : new InOrderHash(hash, bytes, part);
    // The first answer's ETag is the object's: every answer is checked against it, and every GET asked for
    // after it carries it (If-Match), so a replaced object is never mixed in, retries included.
    const object: { etag: string | undefined } = { etag: undefined };
    if (count === 1) {
      await this.readPart(key, bytes, part(0), object, abort.signal, retried, true, onUnderWay);
      hashed?.done(0);
      return;
    }
    let failure: unknown;
    const guard = async (task: () => Promise<void>) => {
      try {
        await task();
      } catch (error) {
        failure ??= error;
        abort.abort();
      }
    };
    // The first `concurrency` GETs are asked for at once, not after the first part's headers: from S3 that
    // saves one time to first byte (and the new connections' TLS handshakes) before the others start.
    // onUnderWay still waits for the first part's headers, when every one of them has gone out.
    let next = 0;
    const worker = async () => {
      while (next < count && failure === undefined) {
        const index = next++;
        const headers = index === 0 ? onUnderWay : undefined;
        await this.readPart(key, bytes, part(index), object, abort.signal, retried, false, headers);
        hashed?.done(index);
      }
    };
    // Every task settles before this returns, so nothing writes into the buffer after a failure is thrown.
    await Promise.all(Array.from({ length: Math.min(this.concurrency, count) }, () => guard(worker)));
    if (failure !== undefined) throw failure;
  }

  /** Reads one part, trying again with backoff while its failures may be transient. */
  private async readPart(
    key: string,
    bytes: Buffer,
    part: Part,
    object: { etag: string | undefined },
    signal: AbortSignal,
    retried: (part: Part, attempt: number, reason: string) => Omit<DownloadRetry, 'delayMs'>,
    whole: boolean,
    onHeaders?: () => void,
  ): Promise<void> {
    let headersSeen = onHeaders;
    for (let attempt = 1; ; attempt++) {
      const progress = { received: 0 };
      let inBody = false;
      try {
        const output = await this.getPart(key, part, object.etag, bytes.byteLength, whole, signal);
        // GETs asked for before the first answer came carry no If-Match: their answers are compared here.
        if (object.etag !== undefined && output.ETag !== object.etag) {
          destroy(output.Body);
          throw new ArtifactMismatch('the object changed during the download', false);
        }
        object.etag ??= output.ETag;
        headersSeen?.();
        headersSeen = undefined;
        inBody = true;
        await copyInto(output.Body, bytes, part.start, part.end + 1 - part.start, signal, progress);
        return;
      } catch (error) {
        signal.throwIfAborted();
        // A range past the object's end (asked for before any answer told its size): the object is shorter
        // than config.json says, which is config.json's or the object's fault, as a wrong size in an answer.
        if (!inBody && httpStatus(error) === 416) {
          const mismatch = new ArtifactMismatch(
            `the object ends before bytes ${part.start}-${part.end}, config.json says ${bytes.byteLength} bytes`,
          );
          throw new PartFailed(mismatch.message, mismatch);
        }
        if (!isRetryable(error)) throw error;
        // E.g. 'connection reset after 4.1 MB' (in the body) or 'asked for 8388608 bytes, got 4096' (headers).
        const reason = inBody
          ? `${bodyFault(error)} after ${formatBytes(progress.received)}`
          : bodyFault(error);
        if (attempt >= this.retry.attempts) {
          const of =
            part.count === 1 ? formatBytes(bytes.byteLength) : `part ${part.index + 1} of ${part.count}`;
          throw new PartFailed(`${reason} ${inBody ? 'of' : 'for'} ${of} (${attempts(attempt)})`, error);
        }
        await this.backOff(retried(part, attempt, reason), signal);
      }
    }
  }

  /** Waits out the jittered backoff before `retry.attempt + 1`, after telling `onRetry`. */
  private async backOff(
    retry: Omit<DownloadRetry, 'delayMs'>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const ceiling = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (retry.attempt - 1));
    const delayMs = Math.round(Math.random() * ceiling);
    this.onRetry?.({ ...retry, delayMs });
    await sleep(delayMs, undefined, signal === undefined ? {} : { signal });
  }

  /** One GET of a part (a plain GET for a whole artifact), refused unless it is exactly the part asked for. */
  private async getPart(
    key: string,
    part: Part,
    etag: string | undefined,
    size: number,
    whole: boolean,
    signal: AbortSignal,
  ): Promise<GetObjectCommandOutput> {
    const output = await this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ...(whole ? {} : { Range: `bytes=${part.start}-${part.end}` }),
        ...(etag === undefined ? {} : { IfMatch: etag }),
      }),
      { abortSignal: signal },
    );
    const problem = whole ? checkWhole(output, size, etag) : checkRange(output, part, size, etag);
    if (problem !== undefined) {
      destroy(output.Body);
      throw problem;
    }
    return output;
  }

  private translate(error: unknown, model: string, version: string, file: string): Error {
    if (error instanceof ServingError) return error;
    const what = `model '${model}' version '${version}'`;
    // Bytes that keep disagreeing with config.json fail the integrity check as a wrong hash does: the
    // core then reads config.json again, which may be the one at fault.
    if (error instanceof PartFailed) {
      return error.last instanceof ArtifactMismatch
        ? new IntegrityError(
            `${what}: ${file} in the model store does not match config.json: ${error.message}`,
            {
              cause: error.last,
            },
          )
        : new ModelLoadError(`${what}: reading ${file} from the model store failed: ${error.message}`, {
            cause: error.last,
          });
    }
    if (error instanceof ArtifactMismatch) {
      const message = `${what}: ${file} in the model store does not match config.json: ${error.message}`;
      return error.retryable ? new IntegrityError(message) : new ModelLoadError(message);
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
): ArtifactMismatch | undefined {
  if (etag !== undefined && output.ETag !== etag) {
    return new ArtifactMismatch('the object changed during the download', false);
  }
  const match = CONTENT_RANGE.exec(output.ContentRange ?? '');
  if (match === null) {
    return new ArtifactMismatch(
      `expected a partial answer, got Content-Range '${output.ContentRange ?? ''}'`,
    );
  }
  const total = match[3] === '*' ? undefined : Number(match[3]);
  if (total !== undefined && total !== size) {
    return new ArtifactMismatch(`the object is ${total} bytes, config.json says ${size}`);
  }
  if (Number(match[1]) !== range.start || Number(match[2]) !== range.end) {
    return new ArtifactMismatch(`asked for bytes ${range.start}-${range.end}, got ${match[1]}-${match[2]}`);
  }
  const length = range.end + 1 - range.start;
  if (output.ContentLength !== undefined && output.ContentLength !== length) {
    return new ArtifactMismatch(`asked for ${length} bytes, got ${output.ContentLength}`);
  }
  return undefined;
}

/** Why a plain GET of the whole artifact cannot be used, or `undefined`. */
function checkWhole(
  output: GetObjectCommandOutput,
  size: number,
  etag: string | undefined,
): ArtifactMismatch | undefined {
  if (etag !== undefined && output.ETag !== etag) {
    return new ArtifactMismatch('the object changed during the download', false);
  }
  if (output.ContentLength !== undefined && output.ContentLength !== size) {
    return new ArtifactMismatch(`the object is ${output.ContentLength} bytes, config.json says ${size}`);
  }
  return undefined;
}

function isAsyncIterable(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === 'object' && body !== null && Symbol.asyncIterator in body;
}

/**
 * Streams `body` into `bytes[offset, offset + length)`; more or fewer bytes than that is a mismatch.
 * `progress.received` counts the bytes written so far, for the error that names where a body broke.
 */
async function copyInto(
  body: Body | undefined,
  bytes: Uint8Array,
  offset: number,
  length: number,
  signal: AbortSignal,
  progress: { received: number },
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
    progress.received = at - offset;
  }
  if (at !== end) throw new ArtifactMismatch(`the body ended at ${at - offset} of ${length} bytes`);
}

/** The body of a config.json answer as text, counting bytes; fewer bytes than its Content-Length fail. */
async function readText(output: GetObjectCommandOutput, progress: { received: number }): Promise<string> {
  const body = output.Body;
  if (body === undefined) return '';
  if (!isAsyncIterable(body)) throw new ArtifactMismatch('the answer has no readable body');
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) {
    chunks.push(chunk);
    progress.received += chunk.byteLength;
  }
  const length = output.ContentLength;
  if (length !== undefined && progress.received !== length) {
    throw new ArtifactMismatch(`the body ended at ${progress.received} of ${length} bytes`);
  }
  return Buffer.concat(chunks).toString('utf-8');
}

/**
 * Whether reading a part again may help. Errors thrown before the headers come from the SDK, which has
 * retried them already (or they are final: a missing key, a denied request, an object replaced); what
 * fails in the body (a connection lost, a socket timeout) or does not fit the request (a short or
 * mislabelled answer) is ours to retry.
 */
function isRetryable(error: unknown): boolean {
  if (error instanceof ArtifactMismatch) return error.retryable;
  if (httpStatus(error) !== undefined) return false;
  const name = errorName(error);
  const code = (error as { code?: unknown } | undefined)?.code;
  return (
    name === 'TimeoutError' ||
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    code === 'ETIMEDOUT'
  );
}

/** The cause of a body failure in words, e.g. `connection reset`. */
function bodyFault(error: unknown): string {
  if (error instanceof ArtifactMismatch) return error.message;
  const message = (error as { message?: unknown } | undefined)?.message;
  const code = (error as { code?: unknown } | undefined)?.code;
  if (errorName(error) === 'TimeoutError') return 'the connection stalled past the socket timeout';
  // Node names a response whose connection ended before its Content-Length was complete 'aborted'.
  if (message === 'aborted') return 'the connection ended before the body was complete';
  if (code === 'ECONNRESET') return 'connection reset';
  if (code === 'ERR_STREAM_PREMATURE_CLOSE') return 'the body stream closed early';
  if (typeof code === 'string') return `connection error ${code}`;
  return describe(error);
}

/** `1 attempt`, `3 attempts`. */
function attempts(n: number): string {
  return n === 1 ? '1 attempt' : `${n} attempts`;
}

/** Bytes for people: `512 B`, `4.1 kB`, `4.1 MB` (decimal units). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(1)} kB`;
  if (n < 1_000_000_000) return `${(n / 1_000_000).toFixed(1)} MB`;
  return `${(n / 1_000_000_000).toFixed(1)} GB`;
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
  if (name === 'CredentialsProviderError') {
    return 'CredentialsProviderError: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (dummy ones for an S3-compatible server that checks none) or a role';
  }
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
