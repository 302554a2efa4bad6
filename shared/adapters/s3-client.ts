import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

/** How to reach the object store. Every field is optional: with none, the SDK's defaults for AWS apply. */
export interface S3ClientOptions {
  /** AWS region; with none, the SDK's region chain (`AWS_REGION`...), or `us-east-1` against a custom endpoint. */
  readonly region?: string | undefined;
  /** An S3-compatible server, e.g. `http://127.0.0.1:4568`. Unset for AWS itself. */
  readonly endpoint?: string | undefined;
  /** Path-style addressing (`endpoint/bucket/key`); defaults to on exactly when `endpoint` is set. */
  readonly forcePathStyle?: boolean | undefined;
  /** Static credentials (tests, S3-compatible servers); with none, the SDK's default provider chain. */
  readonly credentials?: S3ClientConfig['credentials'] | undefined;
}

const CONNECTION_TIMEOUT_MS = 5_000;
const SOCKET_IDLE_TIMEOUT_MS = 30_000;

/**
 * Builds the one S3 client of an instance.
 *
 * Against a custom endpoint the flexible checksums are only used when an operation requires them: with
 * the SDK's defaults, S3-compatible servers that do not understand `aws-chunked` uploads store the chunk
 * framing inside the object (silent corruption), and responses carry no checksums to validate.
 *
 * @example
 * const client = createS3Client({ endpoint: 'http://127.0.0.1:4568', credentials });
 */
export function createS3Client(options: S3ClientOptions = {}): S3Client {
  const config: S3ClientConfig = {
    // Without a socket timeout a stalled download would hang the (single-flight) load of a model forever.
    requestHandler: { connectionTimeout: CONNECTION_TIMEOUT_MS, socketTimeout: SOCKET_IDLE_TIMEOUT_MS },
  };
  if (options.region !== undefined) config.region = options.region;
  if (options.credentials !== undefined) config.credentials = options.credentials;
  if (options.endpoint !== undefined) {
    config.endpoint = options.endpoint;
    config.forcePathStyle = options.forcePathStyle ?? true;
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
    // The SDK refuses to sign without a region, and an S3-compatible server rarely cares which one.
    config.region ??= 'us-east-1';
  } else if (options.forcePathStyle !== undefined) {
    config.forcePathStyle = options.forcePathStyle;
  }
  return new S3Client(config);
}

/** A bucket and a key prefix (no leading or trailing `/`; `''` is the bucket's root). */
export interface S3Location {
  readonly bucket: string;
  readonly prefix: string;
}

const S3_URL = /^s3:\/\/([^/]+)(?:\/(.*))?$/;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Splits `s3://bucket/prefix` into its bucket and prefix. Returns `undefined` when the value is not such
 * a URL, the bucket name is not a valid one, or the prefix holds empty, `.` or `..` segments.
 *
 * @example
 * parseS3Url('s3://models/prod/'); // { bucket: 'models', prefix: 'prod' }
 */
export function parseS3Url(url: string): S3Location | undefined {
  const match = S3_URL.exec(url.trim());
  const bucket = match?.[1];
  if (bucket === undefined || !BUCKET.test(bucket) || bucket.includes('..')) return undefined;
  const prefix = (match?.[2] ?? '').replace(/\/+$/, '');
  if (
    prefix !== '' &&
    prefix.split('/').some((segment) => segment === '' || segment === '.' || segment === '..')
  ) {
    return undefined;
  }
  return { bucket, prefix };
}
