import { createS3Client, parseS3Url } from '../../shared/adapters/s3-client';
import { FolderRepositoryWriter } from './folder-repository-writer';
import { type ModelRepositoryWriter, RepositoryError } from './model-repository-writer';
import { S3RepositoryWriter } from './s3-repository-writer';

/** Where a repository is and how to reach it, as given on the command line. */
export interface RepositoryOptions {
  /** A folder, or `s3://bucket/prefix`. */
  readonly repo: string;
  /** An S3-compatible server, e.g. `http://127.0.0.1:9000` (S3 only). */
  readonly endpoint?: string | undefined;
  /** S3 region; with none, `AWS_REGION` and the rest of the SDK's chain. */
  readonly region?: string | undefined;
  /** A folder repository that does not exist yet is created on the first write. */
  readonly create?: boolean;
  /** Environment to read `AWS_REGION` from. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * Opens the writer for a `--repo` value and checks it can be reached ({@link ModelRepositoryWriter.probe}).
 * S3 credentials come from the SDK's default chain (environment, profile, SSO, instance or task role).
 *
 * @example
 * const writer = await openRepository({ repo: 's3://models/prod', endpoint: 'http://127.0.0.1:9000' });
 */
export async function openRepository(options: RepositoryOptions): Promise<ModelRepositoryWriter> {
  const writer = createRepositoryWriter(options);
  try {
    await writer.probe();
  } catch (error) {
    writer.close();
    throw error;
  }
  return writer;
}

/** The writer for a `--repo` value, not yet probed. Throws {@link RepositoryError} for a malformed value. */
export function createRepositoryWriter(options: RepositoryOptions): ModelRepositoryWriter {
  const { repo, endpoint } = options;
  if (!repo.startsWith('s3://')) {
    if (endpoint !== undefined) throw new RepositoryError(`--endpoint applies to an s3:// repository only`);
    if (options.region !== undefined)
      throw new RepositoryError(`--region applies to an s3:// repository only`);
    if (repo.trim() === '') throw new RepositoryError(`the repository location is empty`);
    return new FolderRepositoryWriter(repo, { create: options.create ?? false });
  }
  const location = parseS3Url(repo);
  if (location === undefined) {
    throw new RepositoryError(
      `'${repo}' is not a valid S3 repository: expected s3://bucket/prefix with a valid bucket name`,
    );
  }
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+/.test(endpoint)) {
    throw new RepositoryError(
      `--endpoint '${endpoint}' must be an http(s) URL such as http://127.0.0.1:9000`,
    );
  }
  const env = options.env ?? process.env;
  // createS3Client falls back to us-east-1 with a custom endpoint, so AWS_REGION is passed on here.
  const region = options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  const client = createS3Client({
    ...(region === undefined ? {} : { region }),
    ...(endpoint === undefined ? {} : { endpoint }),
  });
  return new S3RepositoryWriter({ client, bucket: location.bucket, prefix: location.prefix, endpoint });
}
