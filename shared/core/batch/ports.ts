/**
 * Ports of the batch door: object I/O, the continuation of a job in a fresh invocation, and logging.
 * Adapters: `S3ObjectIo` (S3, streaming) and `LambdaContinuation` (asynchronous self-invocation).
 */

/** An object in a bucket. */
export interface ObjectRef {
  readonly bucket: string;
  readonly key: string;
}

/** What a HEAD tells. */
export interface ObjectInfo {
  readonly size: number;
  /** Without quotes, as S3 event records give it. */
  readonly etag: string;
  readonly contentEncoding: string | undefined;
  readonly versionId: string | undefined;
}

/** Which bytes of which version {@link BatchObjectStore.read} returns. */
export interface ReadOptions {
  /** First byte to return, in the decoded input (after gunzip). Default 0. */
  readonly start?: number;
  /** One past the last byte to return; default the end of the object. */
  readonly end?: number;
  /** Decompress the object (gzip); `start` and `end` then count decompressed bytes. */
  readonly gunzip?: boolean;
  /** Refuse to read another version than this ETag ({@link InputChangedError}). */
  readonly etag?: string;
  /** Read this version of a versioned bucket. */
  readonly versionId?: string;
  /**
   * The object's size as the job pinned it (stored bytes, compressed for gzip). A body that breaks or ends
   * before it is resumed from the first byte not yet read (bounded, with backoff; then
   * {@link InputReadError}); a response that says another size, or more bytes, is an
   * {@link InputMismatchError}. Without it a body that ends early is taken as the whole object.
   */
  readonly size?: number;
}

/** What a job expects of its input object, for {@link BatchObjectStore.verify}. */
export interface ExpectedObject {
  /** Stored bytes; unknown when absent (only the ETag and version are checked). */
  readonly size?: number;
  readonly etag?: string;
  readonly versionId?: string;
}

/** How {@link BatchObjectStore.write} stores the bytes. */
export interface WriteOptions {
  readonly contentType: string;
  /** Gzip the bytes on the way (the size returned is the stored, compressed one). */
  readonly gzip: boolean;
}

/** A stored object and its size in bytes, as a source of {@link BatchObjectStore.concat}. */
export interface StoredPart {
  readonly key: string;
  readonly bytes: number;
}

/** Object storage as the batch door needs it. Every method streams: nothing holds a whole object. */
export interface BatchObjectStore {
  /** Size, ETag and encoding (of version `versionId`, when given), or `undefined` when it does not exist. */
  head(ref: ObjectRef, versionId?: string): Promise<ObjectInfo | undefined>;
  /** The object's bytes from `start`, as a stream (a ranged GET, or gunzip and skip). */
  read(ref: ObjectRef, options?: ReadOptions): AsyncIterable<Uint8Array>;
  /**
   * Asks a GET (not HEAD) what the object is, and checks it against `expected`.
   *
   * @throws {@link InputChangedError} when GET serves another ETag or version (or none: deleted)
   * @throws {@link InputMismatchError} when GET says another size
   */
  verify(ref: ObjectRef, expected: ExpectedObject): Promise<void>;
  /** A small UTF-8 document (manifest, checkpoint, plan), or `undefined` when missing. */
  getText(ref: ObjectRef): Promise<string | undefined>;
  putText(ref: ObjectRef, text: string, contentType?: string): Promise<void>;
  /** Writes `chunks` as one object (a streaming multipart upload when large); returns the bytes stored. */
  write(
    ref: ObjectRef,
    chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
    options: WriteOptions,
  ): Promise<number>;
  /**
   * Writes the concatenation of `sources` (objects of `target.bucket`, in order) as `target`, streaming
   * them through one multipart upload; each source must still hold exactly `bytes`. Returns the size.
   */
  concat(target: ObjectRef, sources: readonly StoredPart[], contentType: string): Promise<number>;
  /** Deletes `keys` of `bucket`; missing keys are not an error. */
  remove(bucket: string, keys: readonly string[]): Promise<void>;
}

/** An object version a job is for: the S3 event's object, or the object a continuation carries on. */
export interface ObjectVersionRef {
  readonly bucket: string;
  readonly key: string;
  readonly etag?: string;
  readonly versionId?: string;
  /** Stored bytes, as the S3 event (or the job a continuation carries on) says. */
  readonly size?: number;
}

/** The payload of a continuation invocation: `{"onnxServerlessBatch": {...}}`. */
export interface ContinuationPayload {
  readonly onnxServerlessBatch: {
    readonly action: 'run';
    readonly object: ObjectVersionRef;
    /** How many continuations came before this one, to stop a runaway chain. */
    readonly hop: number;
  };
}

/** Runs the job again in a fresh invocation, which resumes from the job's checkpoint. */
export interface Continuation {
  schedule(payload: ContinuationPayload): Promise<void>;
}

/** Structured log lines. */
export interface BatchLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** A log that drops everything (tests, tools). */
export const NO_LOG: BatchLog = { info: () => {}, warn: () => {} };
