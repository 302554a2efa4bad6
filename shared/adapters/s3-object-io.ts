/**
 * Object I/O of the batch door on S3 (or an S3-compatible server): streaming ranged reads with gunzip,
 * streaming writes through lib-storage's multipart `Upload`, and concatenation of part objects into one
 * object by streaming them through one `Upload`. Memory is bounded by the upload's part buffers
 * (`partSize` x (`queueSize` + 1)), whatever the size of the objects.
 *
 * Input reads are held to the size the job pinned: what a GET says of the object (ETag, version, total
 * size) must agree with it, and a body that breaks or ends early is resumed from the first byte not yet
 * read, bounded and with backoff (docs/batch.md, "Reading the input whole").
 */
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGunzip, createGzip } from 'node:zlib';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import {
  BatchStateError,
  InputChangedError,
  InputMismatchError,
  InputReadError,
  UnsupportedInputError,
} from '../core/batch/errors';
import type {
  BatchObjectStore,
  ExpectedObject,
  ObjectInfo,
  ObjectRef,
  ReadOptions,
  StoredPart,
  WriteOptions,
} from '../core/batch/ports';
import { ServingError } from '../core/errors';

/** The client and multipart sizing of an {@link S3ObjectIo}. */
export interface S3ObjectIoOptions {
  readonly client: S3Client;
  /** Bytes per multipart part (S3's minimum, 5 MiB, is the default: it bounds the memory an upload holds). */
  readonly partSize?: number;
  /** Parts uploaded at once. Default 2. */
  readonly queueSize?: number;
  /** Resumes in a row, without a byte of progress, of a read whose body broke or ended early. Default 4. */
  readonly readRetries?: number;
  /** Pause before such a resume, doubled with each one in a row that made no progress. Default 250 ms. */
  readonly readRetryDelayMs?: number;
}

const MiB = 1024 * 1024;
const DELETE_BATCH = 1000;
/** A read gives up after this many resumes even when each made progress (a bound, not a budget). */
const MAX_RESUMES = 64;
const MAX_RETRY_DELAY_MS = 5_000;

/**
 * @example
 * const io = new S3ObjectIo({ client: createS3Client() });
 * for await (const chunk of io.read({ bucket: 'data', key: 'in/linear/a.jsonl.gz' }, { gunzip: true })) { ... }
 */
export class S3ObjectIo implements BatchObjectStore {
  readonly #client: S3Client;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #readRetries: number;
  readonly #readRetryDelayMs: number;

  constructor(options: S3ObjectIoOptions) {
    this.#client = options.client;
    this.#partSize = Math.max(5 * MiB, options.partSize ?? 5 * MiB);
    this.#queueSize = Math.max(1, options.queueSize ?? 2);
    this.#readRetries = Math.max(0, options.readRetries ?? 4);
    this.#readRetryDelayMs = Math.max(0, options.readRetryDelayMs ?? 250);
  }

  async head(ref: ObjectRef, versionId?: string): Promise<ObjectInfo | undefined> {
    let output: HeadObjectCommandOutput;
    try {
      output = await this.#client.send(
        new HeadObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          ...(versionId === undefined ? {} : { VersionId: versionId }),
        }),
      );
    } catch (error) {
      // HEAD answers carry no body, so a missing key is a bare 404.
      if (httpStatus(error) === 404) return undefined;
      throw error;
    }
    // A size guessed as 0 would make an empty job of any input (issue 10).
    if (output.ContentLength === undefined) {
      throw new InputMismatchError(`HEAD of the input '${ref.key}' answered no Content-Length`);
    }
    return {
      size: output.ContentLength,
      etag: unquote(output.ETag ?? ''),
      contentEncoding: output.ContentEncoding,
      versionId: output.VersionId,
    };
  }

  async verify(ref: ObjectRef, expected: ExpectedObject): Promise<void> {
    // One byte, whose Content-Range names the total; an empty (or unknown) object has no byte to ask for.
    const ranged = expected.size !== undefined && expected.size > 0;
    const output = await this.#get(ref, expected, ranged ? 'bytes=0-0' : undefined);
    const total = ranged ? contentRange(output.ContentRange)?.total : output.ContentLength;
    // Drained when it is the one byte asked for (the socket is reused), else dropped unread.
    if (output.ContentLength !== undefined && output.ContentLength <= 1)
      await output.Body?.transformToByteArray();
    else (output.Body as Readable | undefined)?.destroy();
    if (expected.size !== undefined && total !== expected.size) {
      throw new InputMismatchError(
        `the sizes of the input '${ref.key}' disagree: ${expected.size} bytes before, GET says ${total ?? 'nothing'}`,
      );
    }
  }

  read(ref: ObjectRef, options: ReadOptions = {}): AsyncIterable<Uint8Array> {
    return this.#read(ref, options);
  }

  async *#read(ref: ObjectRef, options: ReadOptions): AsyncGenerator<Uint8Array> {
    const start = options.start ?? 0;
    const end = options.end;
    if (end !== undefined && end <= start) return;
    if (options.gunzip !== true) {
      yield* this.#stored(ref, start, end, options);
      return;
    }
    // A gzip stream cannot be entered in the middle: read it whole and skip the decompressed bytes. The
    // stored bytes are resumed below gunzip, so a broken body never reaches it.
    const source = Readable.from(this.#stored(ref, 0, undefined, options), { objectMode: false });
    const gunzip = createGunzip();
    // Its error (the source's, or a zlib one) surfaces in the loop below.
    const piping = pipeline(source, gunzip).catch(() => undefined);
    let skip = start;
    let remaining = end === undefined ? Number.POSITIVE_INFINITY : end - start;
    try {
      for await (const raw of gunzip) {
        let chunk = raw as Buffer;
        if (skip > 0) {
          if (chunk.byteLength <= skip) {
            skip -= chunk.byteLength;
            continue;
          }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        if (chunk.byteLength >= remaining) {
          yield chunk.subarray(0, remaining);
          return;
        }
        remaining -= chunk.byteLength;
        yield chunk;
      }
    } catch (error) {
      // Every stored byte was read (or the source's own error is thrown): the object is not valid gzip.
      if (isZlibError(error)) {
        throw new UnsupportedInputError(`the input is not a valid gzip stream (${describe(error)})`, {
          cause: error,
        });
      }
      throw error;
    } finally {
      gunzip.destroy();
      source.destroy();
      await piping;
    }
  }

  /**
   * The stored bytes [from, to) (to the end when `to` is absent). A body that breaks (reset, early close)
   * or ends before the object's size is resumed with a ranged GET from the first byte not yet read; the
   * AWS SDK retries a GET only up to its headers.
   */
  async *#stored(
    ref: ObjectRef,
    from: number,
    to: number | undefined,
    options: ReadOptions,
  ): AsyncGenerator<Uint8Array> {
    const size = options.size;
    const last = to ?? size;
    let at = from;
    let stalled = 0;
    let resumes = 0;
    for (;;) {
      const ranged = at > 0 || to !== undefined;
      const output = await this.#get(
        ref,
        options,
        ranged ? `bytes=${at}-${to === undefined ? '' : to - 1}` : undefined,
      );
      if (size !== undefined) checkSize(ref, output, size, ranged ? at : undefined);
      const body = (output.Body as Readable | undefined) ?? Readable.from([]);
      const began = at;
      let broke: unknown;
      try {
        for await (const raw of body) {
          const chunk = raw as Uint8Array;
          if (last !== undefined && at + chunk.byteLength > last) {
            throw new InputMismatchError(
              `the sizes of the input '${ref.key}' disagree: GET serves more than the ${size ?? last} bytes expected`,
            );
          }
          at += chunk.byteLength;
          yield chunk;
        }
      } catch (error) {
        if (error instanceof ServingError) throw error;
        broke = error;
      } finally {
        // Also when the consumer stopped early: frees the socket.
        body.destroy();
      }
      if (broke === undefined && (last === undefined || at === last)) return;
      resumes += 1;
      stalled = at > began ? 0 : stalled + 1;
      if (stalled > this.#readRetries || resumes > MAX_RESUMES) {
        const why = broke === undefined ? 'the body ended early' : describe(broke);
        throw new InputReadError(
          `the input '${ref.key}' could not be read whole: ${at} of ${last ?? 'unknown'} bytes after ${resumes} attempts (${why})`,
          { cause: broke },
        );
      }
      await sleep(Math.min(MAX_RETRY_DELAY_MS, this.#readRetryDelayMs * 2 ** Math.max(0, stalled - 1)));
    }
  }

  /** A GET of the input, refused (as changed) when it serves another ETag or version than asked for. */
  async #get(
    ref: ObjectRef,
    expected: ExpectedObject,
    range: string | undefined,
  ): Promise<GetObjectCommandOutput> {
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(
        new GetObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          ...(range === undefined ? {} : { Range: range }),
          ...(expected.etag === undefined ? {} : { IfMatch: `"${expected.etag}"` }),
          ...(expected.versionId === undefined ? {} : { VersionId: expected.versionId }),
        }),
      );
    } catch (error) {
      if (httpStatus(error) === 412 || errorName(error) === 'NoSuchKey') {
        throw new InputChangedError(`the input '${ref.key}' was replaced or deleted while it was read`, {
          cause: error,
        });
      }
      if (httpStatus(error) === 416) {
        throw new InputMismatchError(
          `the sizes of the input '${ref.key}' disagree: GET has no bytes at ${range ?? 'all'}`,
          { cause: error },
        );
      }
      throw error;
    }
    // If-Match is the guard on S3; this is the guard where it is ignored (some S3-compatible servers).
    const etag = output.ETag === undefined ? undefined : unquote(output.ETag);
    const version = output.VersionId;
    if (
      (expected.etag !== undefined && etag !== undefined && etag !== unquote(expected.etag)) ||
      (expected.versionId !== undefined && version !== undefined && version !== expected.versionId)
    ) {
      (output.Body as Readable | undefined)?.destroy();
      throw new InputChangedError(
        `the input '${ref.key}' was replaced: GET serves ETag ${etag ?? '?'}${version === undefined ? '' : ` version ${version}`}, the job reads ${expected.etag ?? '?'}`,
      );
    }
    return output;
  }

  async getText(ref: ObjectRef): Promise<string | undefined> {
    try {
      const output = await this.#client.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
      return (await output.Body?.transformToString('utf-8')) ?? '';
    } catch (error) {
      if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return undefined;
      throw error;
    }
  }

  async putText(ref: ObjectRef, text: string, contentType = 'application/json'): Promise<void> {
    await this.#client.send(
      new PutObjectCommand({ Bucket: ref.bucket, Key: ref.key, Body: text, ContentType: contentType }),
    );
  }

  async write(
    ref: ObjectRef,
    chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
    options: WriteOptions,
  ): Promise<number> {
    const source = Readable.from(chunks, { objectMode: false });
    return this.#upload(ref, source, options.contentType, options.gzip);
  }

  async concat(target: ObjectRef, sources: readonly StoredPart[], contentType: string): Promise<number> {
    const client = this.#client;
    async function* parts(): AsyncGenerator<Uint8Array> {
      for (const source of sources) {
        const output = await client.send(new GetObjectCommand({ Bucket: target.bucket, Key: source.key }));
        let bytes = 0;
        for await (const chunk of (output.Body as Readable | undefined) ?? []) {
          bytes += (chunk as Uint8Array).byteLength;
          yield chunk as Uint8Array;
        }
        if (bytes !== source.bytes) {
          throw new BatchStateError(
            `the part ${source.key} holds ${bytes} bytes, its checkpoint says ${source.bytes}`,
          );
        }
      }
    }
    return this.#upload(target, Readable.from(parts(), { objectMode: false }), contentType, false);
  }

  async remove(bucket: string, keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const output = await this.#client.send(
        new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      const failed = output.Errors ?? [];
      if (failed.length > 0) {
        throw new Error(
          `${failed.length} objects could not be deleted (first: ${failed[0]?.Code ?? 'unknown'})`,
        );
      }
    }
  }

  /** Streams `source` (gzipped on the way when asked) into one object; returns the bytes stored. */
  async #upload(ref: ObjectRef, source: Readable, contentType: string, gzip: boolean): Promise<number> {
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.byteLength;
        callback(null, chunk);
      },
    });
    const body = new PassThrough();
    const piping = gzip ? pipeline(source, createGzip(), counter, body) : pipeline(source, counter, body);
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: ref.bucket, Key: ref.key, Body: body, ContentType: contentType },
      partSize: this.#partSize,
      queueSize: this.#queueSize,
      leavePartsOnError: false,
    });
    // A failing source (e.g. a part that changed size) must fail the upload, not leave it waiting.
    const failed = piping.catch(async (error: unknown) => {
      await upload.abort().catch(() => undefined);
      throw error;
    });
    const [uploaded, piped] = await Promise.allSettled([upload.done(), failed]);
    // The source's own error says why; the upload's is then only "aborted".
    if (piped.status === 'rejected') throw piped.reason;
    if (uploaded.status === 'rejected') throw uploaded.reason;
    return bytes;
  }
}

/**
 * Checks what a GET's headers say of the object against the size the job pinned: a ranged answer names
 * the total (and must start where asked); a whole answer longer than the size is another object. A whole
 * answer *shorter* than the size is read and resumed: a cut body with a matching Content-Length looks so.
 */
function checkSize(ref: ObjectRef, output: GetObjectCommandOutput, size: number, start: number | undefined) {
  const disagree = (says: string) =>
    new InputMismatchError(
      `the sizes of the input '${ref.key}' disagree: ${size} bytes expected, GET ${says}`,
    );
  if (start === undefined) {
    if (output.ContentLength !== undefined && output.ContentLength > size) {
      throw disagree(`serves ${output.ContentLength}`);
    }
    return;
  }
  const range = contentRange(output.ContentRange);
  // A server that ignored the Range header would hand over bytes from the wrong offset.
  if (range === undefined || range.start !== start)
    throw disagree(`answers range ${output.ContentRange ?? 'none'}`);
  if (range.total !== undefined && range.total !== size) throw disagree(`says ${range.total}`);
}

/** `bytes 100-199/1000` (total `*`: unknown). */
function contentRange(header: string | undefined): { start: number; total: number | undefined } | undefined {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header?.trim() ?? '');
  if (match === null) return undefined;
  return { start: Number(match[1]), total: match[2] === '*' ? undefined : Number(match[2]) };
}

function unquote(etag: string): string {
  return etag.replace(/"/g, '');
}

function isZlibError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('Z_');
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
}

// Duck-typed: SDK errors may come from another realm (jest's vm) than `Error`.
function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}
