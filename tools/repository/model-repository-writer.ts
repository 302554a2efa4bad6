/**
 * The write side of a model repository, for tooling: the serving side only ever reads (`ModelStore`).
 * Two adapters implement it, a local folder and an S3 bucket, with the same layout:
 * `<root>/<model>/config.json` and `<root>/<model>/<version>/model.onnx` (and `model.ort`).
 */
import { isValidModelName, isValidVersion, printable } from '../../shared/core/names';

/**
 * File names a version may hold: `model.onnx`, `model.ort` and precision variants such as
 * `model.fp16.onnx` (see `versions.<v>.variants` in config.json).
 */
const VERSION_FILE = /^model(\.[a-z0-9][a-z0-9_-]{0,31})?\.(onnx|ort)$/;

export function isVersionFileName(file: string): boolean {
  return VERSION_FILE.test(file);
}

/** A config.json as read, with the token that {@link ModelRepositoryWriter.writeConfig} compares against. */
export interface ConfigSnapshot {
  readonly text: string;
  /** Folder: the sha256 of the text; S3: the object's ETag. */
  readonly etag: string;
}

/** The sha256 and byte size of a stored version file. */
export interface StoredFileDigest {
  readonly sha256: string;
  readonly size: number;
}

export interface PutVersionFileOptions {
  /** Replace an existing file (default: refuse with {@link VersionExistsError}). */
  readonly replace?: boolean;
}

/**
 * Writes versions and config.json into a repository. Names reaching a writer were validated by the caller
 * (`assertWritableNames`); writers check them again, so nothing lands outside the repository.
 *
 * @example
 * const writer = new FolderRepositoryWriter('models');
 * await writer.putVersionFile('mlp', '1', 'model.onnx', bytes);
 * await updateModelConfig(writer, 'mlp', (current) => ({ ...current, versions: { 1: { sha256, size } } }));
 */
export interface ModelRepositoryWriter {
  /** `file:///abs/path` or `s3://bucket/prefix` (never credentials). */
  readonly location: string;
  /** Fails with {@link RepositoryUnreachableError} when the repository cannot be used at all. */
  probe(): Promise<void>;
  listModels(): Promise<string[]>;
  /** `undefined` when the model has no config.json. */
  readConfig(model: string): Promise<ConfigSnapshot | undefined>;
  /**
   * Writes config.json if it is still the one read as `expectedEtag` (`undefined`: it must not exist yet).
   * Throws {@link ConfigConflictError} when another writer got there first; a reader sees the old or the
   * new text, never a mix.
   */
  writeConfig(model: string, text: string, expectedEtag: string | undefined): Promise<void>;
  /** The size of a version file, or `undefined` when there is none. */
  statVersionFile(model: string, version: string, file: string): Promise<number | undefined>;
  readVersionFile(model: string, version: string, file: string): Promise<Uint8Array>;
  /** Streams a version file through sha256; `undefined` when there is none. */
  digestVersionFile(model: string, version: string, file: string): Promise<StoredFileDigest | undefined>;
  /**
   * Stores a version file whole or not at all (folder: temporary file then link or rename; S3: one PUT, or
   * a multipart upload for large files). Refuses an existing file unless `replace`.
   */
  putVersionFile(
    model: string,
    version: string,
    file: string,
    bytes: Uint8Array,
    options?: PutVersionFileOptions,
  ): Promise<void>;
  /** Removes a version file; no error when it is not there. */
  deleteVersionFile(model: string, version: string, file: string): Promise<void>;
  /** Frees sockets; the writer is not used afterwards. */
  close(): void;
}

/** A repository problem the user can act on; the message says what to do. */
export class RepositoryError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The repository cannot be reached or used: no server, no bucket, no credentials, no folder. */
export class RepositoryUnreachableError extends RepositoryError {}

/** The version (or its file) already exists: versions are immutable. */
export class VersionExistsError extends RepositoryError {}

/** config.json changed between the read and the write (another writer). */
export class ConfigConflictError extends RepositoryError {}

/** A model name or version the repository would refuse. */
export class InvalidNameError extends RepositoryError {}

/**
 * Throws {@link InvalidNameError} unless `model`, `version` and `file` are names the repository takes, and
 * returns them as path segments. The rules are the serving side's, so whatever is written can be served.
 */
export function checkedSegments(model: string, version?: string, file?: string): string[] {
  if (!isValidModelName(model)) {
    throw new InvalidNameError(
      `model name '${printable(model)}' is rejected by the repository: use letters, digits, '_', '-' and '.', ` +
        `starting with a letter or digit, no '..', at most 128 characters`,
    );
  }
  const segments = [model];
  if (version !== undefined) {
    if (!isValidVersion(version)) {
      throw new InvalidNameError(
        `version '${printable(version)}' is rejected by the repository: versions are positive integers`,
      );
    }
    segments.push(version);
  }
  if (file !== undefined) {
    if (!isVersionFileName(file))
      throw new InvalidNameError(`'${printable(file)}' is not a version file name`);
    segments.push(file);
  }
  return segments;
}
