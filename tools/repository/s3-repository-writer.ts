import { createHash } from 'node:crypto';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import {
  ConfigConflictError,
  type ConfigSnapshot,
  checkedSegments,
  type ModelRepositoryWriter,
  type PutVersionFileOptions,
  RepositoryError,
  RepositoryUnreachableError,
  type StoredFileDigest,
  VersionExistsError,
} from './model-repository-writer';

/** Options of {@link S3RepositoryWriter}. */
export interface S3RepositoryWriterOptions {
  /** Built with `createS3Client` (path style and WHEN_REQUIRED checksums against S3-compatible servers). */
  readonly client: S3Client;
  readonly bucket: string;
  /** Key prefix without leading or trailing `/`; `''` is the bucket's root. */
  readonly prefix: string;
  /** Where the client sends requests, for messages (`undefined`: AWS itself). */
  readonly endpoint?: string | undefined;
  /** Files above this size go up as a multipart upload of parts this big. Default 8 MiB (S3's minimum is 5). */
  readonly partSize?: number;
  /** Parts in flight at once. Default 4. */
  readonly queueSize?: number;
  /** How long {@link S3RepositoryWriter.probe} waits for an answer. Default 10 s. */
  readonly probeTimeoutMs?: number;
}

const MiB = 1024 * 1024;

/**
 * A model repository in an S3 bucket. Version files are uploaded with `If-None-Match: *` (one PUT, or a
 * multipart upload whose completion carries the condition) after a HEAD found no object, and config.json
 * is written with `If-Match` on the ETag that was read (`If-None-Match: *` when creating it), so two
 * concurrent writers cannot both win. S3-compatible servers that ignore conditional writes (s3rver does)
 * keep only the HEAD and ETag re-checks done just before each write: they narrow the window but cannot
 * close it.
 *
 * @example
 * const writer = new S3RepositoryWriter({ client: createS3Client(), bucket: 'models', prefix: 'prod' });
 * await writer.putVersionFile('mlp', '2', 'model.onnx', bytes);
 */
export class S3RepositoryWriter implements ModelRepositoryWriter {
  readonly location: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  /** `''` or the prefix followed by `/`. */
  readonly #base: string;
  readonly #endpoint: string | undefined;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #probeTimeoutMs: number;
  readonly #store: S3ModelStore;

  constructor(options: S3RepositoryWriterOptions) {
    this.#client = options.client;
    this.#bucket = options.bucket;
    this.#base = options.prefix === '' ? '' : `${options.prefix}/`;
    this.#endpoint = options.endpoint;
    this.#partSize = Math.max(5 * MiB, options.partSize ?? 8 * MiB);
    this.#queueSize = options.queueSize ?? 4;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? 10_000;
    this.location = `s3://${options.bucket}/${options.prefix}`;
    this.#store = new S3ModelStore({
      client: options.client,
      bucket: options.bucket,
      prefix: options.prefix,
    });
  }

  async probe(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }), {
        abortSignal: AbortSignal.timeout(this.#probeTimeoutMs),
      });
    } catch (error) {
      throw this.#failure('reaching the repository', error);
    }
  }

  async listModels(): Promise<string[]> {
    try {
      return await this.#store.listModels();
    } catch (error) {
      throw this.#failure('listing the models', error);
    }
  }

  async readConfig(model: string): Promise<ConfigSnapshot | undefined> {
    const key = this.#key(...checkedSegments(model), 'config.json');
    try {
      const output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      const text = (await output.Body?.transformToString('utf-8')) ?? '';
      return { text, etag: output.ETag ?? '' };
    } catch (error) {
      if (errorName(error) === 'NoSuchKey') return undefined;
      throw this.#failure(`reading ${model}/config.json`, error);
    }
  }

  async writeConfig(model: string, text: string, expectedEtag: string | undefined): Promise<void> {
    const key = this.#key(...checkedSegments(model), 'config.json');
    const what = `${model}/config.json`;
    // The condition below is what makes this safe on S3; this re-check covers servers that ignore it.
    const current = await this.#headEtag(key, what);
    if (current !== expectedEtag) throw new ConfigConflictError(`${what} was changed by another writer`);
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.#bucket,
          Key: key,
          Body: text,
          ContentType: 'application/json',
          ...(expectedEtag === undefined ? { IfNoneMatch: '*' } : { IfMatch: expectedEtag }),
        }),
      );
    } catch (error) {
      if (isConditionFailure(error)) {
        throw new ConfigConflictError(`${what} was changed by another writer`, { cause: error });
      }
      throw this.#failure(`writing ${what}`, error);
    }
  }

  async statVersionFile(model: string, version: string, file: string): Promise<number | undefined> {
    const key = this.#key(...checkedSegments(model, version, file));
    try {
      const output = await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return output.ContentLength ?? 0;
    } catch (error) {
      if (httpStatus(error) === 404) return undefined;
      throw this.#failure(`reading ${model}/${version}/${file}`, error);
    }
  }

  async readVersionFile(model: string, version: string, file: string): Promise<Uint8Array> {
    const key = this.#key(...checkedSegments(model, version, file));
    try {
      const output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      if (output.Body === undefined) throw new RepositoryError(`${model}/${version}/${file} has no body`);
      return await output.Body.transformToByteArray();
    } catch (error) {
      throw this.#failure(`reading ${model}/${version}/${file}`, error);
    }
  }

  async digestVersionFile(
    model: string,
    version: string,
    file: string,
  ): Promise<StoredFileDigest | undefined> {
    const key = this.#key(...checkedSegments(model, version, file));
    const hash = createHash('sha256');
    let size = 0;
    try {
      const output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      for await (const chunk of output.Body as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        size += chunk.byteLength;
      }
    } catch (error) {
      if (errorName(error) === 'NoSuchKey') return undefined;
      throw this.#failure(`reading ${model}/${version}/${file}`, error);
    }
    return { sha256: hash.digest('hex'), size };
  }

  async putVersionFile(
    model: string,
    version: string,
    file: string,
    bytes: Uint8Array,
    options: PutVersionFileOptions = {},
  ): Promise<void> {
    const key = this.#key(...checkedSegments(model, version, file));
    const what = `${model}/${version}/${file}`;
    const replace = options.replace ?? false;
    if (!replace && (await this.statVersionFile(model, version, file)) !== undefined) {
      throw new VersionExistsError(`${what} already exists in ${this.location}`);
    }
    try {
      // Upload sends one PutObject up to partSize, a multipart upload above it (aborted on failure). The
      // params, condition included, go to PutObject and CompleteMultipartUpload alike.
      await new Upload({
        client: this.#client,
        params: {
          Bucket: this.#bucket,
          Key: key,
          Body: bytes,
          ContentType: 'application/octet-stream',
          ...(replace ? {} : { IfNoneMatch: '*' }),
        },
        partSize: this.#partSize,
        queueSize: this.#queueSize,
      }).done();
    } catch (error) {
      if (!replace && isConditionFailure(error)) {
        throw new VersionExistsError(`${what} already exists in ${this.location}`, { cause: error });
      }
      throw this.#failure(`uploading ${what}`, error);
    }
    const stored = await this.statVersionFile(model, version, file);
    if (stored !== bytes.byteLength) {
      throw new RepositoryError(
        `${what}: the repository holds ${stored ?? 'no'} bytes after the upload of ${bytes.byteLength}`,
      );
    }
  }

  async deleteVersionFile(model: string, version: string, file: string): Promise<void> {
    const key = this.#key(...checkedSegments(model, version, file));
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (error) {
      throw this.#failure(`removing ${model}/${version}/${file}`, error);
    }
  }

  close(): void {
    this.#client.destroy();
  }

  async #headEtag(key: string, what: string): Promise<string | undefined> {
    try {
      const output = await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return output.ETag ?? '';
    } catch (error) {
      if (httpStatus(error) === 404) return undefined;
      throw this.#failure(`reading ${what}`, error);
    }
  }

  #key(...segments: string[]): string {
    return this.#base + segments.join('/');
  }

  /** Turns an SDK or network error into a message that says what to check; the cause keeps the rest. */
  #failure(what: string, error: unknown): RepositoryError {
    if (error instanceof RepositoryError) return error;
    const where = `${this.location}${this.#endpoint === undefined ? '' : ` at ${this.#endpoint}`}`;
    const code = networkCode(error);
    if (code !== undefined) {
      const hint =
        this.#endpoint === undefined ? 'check the network' : 'check --endpoint and that the server runs';
      return new RepositoryUnreachableError(`cannot reach the repository ${where} (${code}): ${hint}`, {
        cause: error,
      });
    }
    const name = errorName(error) ?? 'unknown error';
    const status = httpStatus(error);
    if (name === 'CredentialsProviderError' || name === 'ProviderError') {
      return new RepositoryUnreachableError(
        `no AWS credentials for ${where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is available`,
        { cause: error },
      );
    }
    if (name === 'NoSuchBucket' || (status === 404 && what === 'reaching the repository')) {
      // S3 answers a HEAD without a body, so its 404 is 'NotFound'; anything else may not be S3 at all.
      const doubt =
        name === 'NoSuchBucket' || name === 'NotFound' ? '' : ` (HTTP 404, ${name}: is it an S3 endpoint?)`;
      return new RepositoryUnreachableError(
        `the bucket '${this.#bucket}' of ${where} does not exist${doubt}`,
        {
          cause: error,
        },
      );
    }
    if (
      status === 403 ||
      name === 'AccessDenied' ||
      name === 'InvalidAccessKeyId' ||
      name === 'SignatureDoesNotMatch'
    ) {
      return new RepositoryUnreachableError(
        `access to ${where} was denied (${name}): check the credentials and the bucket policy`,
        { cause: error },
      );
    }
    return new RepositoryError(
      `${what} in ${where} failed (${name}${status === undefined ? '' : `, HTTP ${status}`})`,
      {
        cause: error,
      },
    );
  }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
]);

/** The network failure behind an error (the SDK wraps some), e.g. `ECONNREFUSED`; a timeout counts. */
function networkCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const { code, name, message, errors, cause } = e as Record<string, unknown>;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
    if (name === 'TimeoutError' || name === 'AbortError') return 'no answer in time';
    // An error from another realm (e.g. jest's vm) reaches us as "AWS SDK error wrapper for Error: connect
    // ECONNREFUSED ...", with only the message left.
    const inMessage = typeof message === 'string' ? NETWORK_CODE_IN_MESSAGE.exec(message)?.[1] : undefined;
    if (inMessage !== undefined) return inMessage;
    e = Array.isArray(errors) && errors.length > 0 ? errors[0] : cause;
  }
  return undefined;
}

const NETWORK_CODE_IN_MESSAGE = new RegExp(`\\b(${[...NETWORK_CODES].join('|')})\\b`);

/** 412 Precondition Failed, or 409 when S3 saw a concurrent conditional write to the same key. */
function isConditionFailure(error: unknown): boolean {
  const name = errorName(error);
  const status = httpStatus(error);
  return (
    name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || status === 412 || status === 409
  );
}

// Duck-typed: errors of Node's own modules may come from another realm (jest's vm) than `Error`.
function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}
