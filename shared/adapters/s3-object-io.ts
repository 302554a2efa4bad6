/**
 * Object I/O of the batch door on S3 (or an S3-compatible server): streaming ranged reads with gunzip,
 * streaming writes through lib-storage's multipart `Upload`, and concatenation of part objects into one
 * object by streaming them through one `Upload`. Memory is bounded by the upload's part buffers
 * (`partSize` x (`queueSize` + 1)), whatever the size of the objects.
 */
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BatchStateError, InputChangedError } from '../core/batch/errors';
import type {
  BatchObjectStore,
  ObjectInfo,
  ObjectRef,
  ReadOptions,
  StoredPart,
  WriteOptions,
} from '../core/batch/ports';

/** The client and multipart sizing of an {@link S3ObjectIo}. */
export interface S3ObjectIoOptions {
  readonly client: S3Client;
  /** Bytes per multipart part (S3's minimum, 5 MiB, is the default: it bounds the memory an upload holds). */
  readonly partSize?: number;
  /** Parts uploaded at once. Default 2. */
  readonly queueSize?: number;
}

const MiB = 1024 * 1024;
const DELETE_BATCH = 1000;

/**
 * @example
 * const io = new S3ObjectIo({ client: createS3Client() });
 * for await (const chunk of io.read({ bucket: 'data', key: 'in/linear/a.jsonl.gz' }, { gunzip: true })) { ... }
 */
export class S3ObjectIo implements BatchObjectStore {
  readonly #client: S3Client;
  readonly #partSize: number;
  readonly #queueSize: number;

  constructor(options: S3ObjectIoOptions) {
    this.#client = options.client;
    this.#partSize = Math.max(5 * MiB, options.partSize ?? 5 * MiB);
    this.#queueSize = Math.max(1, options.queueSize ?? 2);
  }

  async head(ref: ObjectRef, versionId?: string): Promise<ObjectInfo | undefined> {
    try {
      const output = await this.#client.send(
        new HeadObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          ...(versionId === undefined ? {} : { VersionId: versionId }),
        }),
      );
      return {
        size: output.ContentLength ?? 0,
        etag: (output.ETag ?? '').replace(/"/g, ''),
        contentEncoding: output.ContentEncoding,
        versionId: output.VersionId,
      };
    } catch (error) {
      // HEAD answers carry no body, so a missing key is a bare 404.
      if (httpStatus(error) === 404) return undefined;
      throw error;
    }
  }

  read(ref: ObjectRef, options: ReadOptions = {}): AsyncIterable<Uint8Array> {
    return this.#read(ref, options);
  }

  async *#read(ref: ObjectRef, options: ReadOptions): AsyncGenerator<Uint8Array> {
    const start = options.start ?? 0;
    const end = options.end;
    if (end !== undefined && end <= start) return;
    // A gzip stream cannot be entered in the middle: read it whole and skip the decompressed bytes.
    const ranged = options.gunzip !== true && (start > 0 || end !== undefined);
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(
        new GetObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          ...(ranged ? { Range: `bytes=${start}-${end === undefined ? '' : end - 1}` } : {}),
          ...(options.etag === undefined ? {} : { IfMatch: `"${options.etag}"` }),
          ...(options.versionId === undefined ? {} : { VersionId: options.versionId }),
        }),
      );
    } catch (error) {
      if (httpStatus(error) === 412 || errorName(error) === 'NoSuchKey') {
        throw new InputChangedError(`the input '${ref.key}' was replaced or deleted while it was read`, {
          cause: error,
        });
      }
      throw error;
    }
    const body = output.Body as Readable | undefined;
    if (body === undefined) return;
    if (options.gunzip !== true) {
      // Leaving this loop early (the consumer stopped) destroys the stream, which frees the socket.
      for await (const chunk of body) yield chunk as Uint8Array;
      return;
    }
    const gunzip = createGunzip();
    body.on('error', (error) => gunzip.destroy(error));
    body.pipe(gunzip);
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
    } finally {
      body.destroy();
      gunzip.destroy();
    }
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

// Duck-typed: SDK errors may come from another realm (jest's vm) than `Error`.
function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}
