import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open, readdir, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { ModelLoadError, ModelNotFoundError } from '../core/errors';
import { assertModelName, isValidModelName } from '../core/names';
import type { ArtifactFormat, ConfigDocument, HashedArtifact, ModelStore } from '../core/ports';
import { checkArtifactRequest } from './artifact-request';

/** Bytes read at once while hashing: each chunk is hashed while the next one is read. */
const READ_CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * The model repository in a local folder: the embedded default of the local server and of tests.
 *
 * The ETag of a config.json is derived from its modification time and size, so an unchanged file reads as
 * `'not-modified'`. Paths are resolved against the root and refused when they would leave it.
 *
 * @example
 * const store = new FileModelStore('./models');
 * const config = await store.readConfig('linear');
 */
export class FileModelStore implements ModelStore {
  readonly location: string;
  private readonly root: string;
  /** The root followed by one separator: every path the store opens starts with it. */
  private readonly inside: string;

  /** @param root The repository folder: `<root>/<model>/config.json`, `<root>/<model>/<version>/model.onnx`. */
  constructor(root: string) {
    this.root = resolve(root);
    this.inside = this.root.endsWith(sep) ? this.root : this.root + sep;
    this.location = `file://${this.root}`;
  }

  async readConfig(model: string, etag?: string): Promise<ConfigDocument | 'not-modified' | undefined> {
    assertModelName(model);
    const path = this.path(model, 'config.json');
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw new ModelLoadError(`model '${model}': reading config.json failed (${code(error)})`, {
        cause: error,
      });
    }
    try {
      const info = await handle.stat({ bigint: true });
      const current = `"${info.mtimeNs.toString(36)}-${info.size.toString(36)}"`;
      if (etag !== undefined && etag === current) return 'not-modified';
      return { text: await handle.readFile('utf-8'), etag: current };
    } catch (error) {
      throw new ModelLoadError(`model '${model}': reading config.json failed (${code(error)})`, {
        cause: error,
      });
    } finally {
      await handle.close();
    }
  }

  async readArtifact(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant?: string,
  ): Promise<Uint8Array> {
    return this.read(model, version, format, size, variant, undefined, undefined);
  }

  /**
   * {@link readArtifact} with the sha256 of the bytes, hashed a chunk at a time while the next chunk is
   * read (the read runs on libuv's thread pool, the hash on this thread), so that only the last chunk is
   * hashed after the read. `onUnderWay` is called once the first read has been asked for.
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
    const bytes = await this.read(model, version, format, size, variant, hash, onUnderWay);
    return { bytes, sha256: hash.digest('hex') };
  }

  private async read(
    model: string,
    version: string,
    format: ArtifactFormat,
    size: number,
    variant: string | undefined,
    hash: Hash | undefined,
    onUnderWay: (() => void) | undefined,
  ): Promise<Uint8Array> {
    const file = checkArtifactRequest(model, version, format, size, variant);
    const what = `model '${model}' version '${version}'`;
    const path = this.path(model, version, file);
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      if (isMissing(error)) {
        throw new ModelNotFoundError(`model '${model}' has no version '${version}' (${file} is missing)`, {
          cause: error,
        });
      }
      throw new ModelLoadError(`${what}: reading ${file} failed (${code(error)})`, { cause: error });
    }
    try {
      const actual = (await handle.stat()).size;
      if (actual !== size)
        throw new ModelLoadError(`${what}: ${file} is ${actual} bytes, config.json says ${size}`);
      // Never a slice of Node's buffer pool: onnxruntime may keep using this memory as the model's weights.
      const bytes = Buffer.allocUnsafeSlow(size);
      // Without a hash to overlap, one read asks for everything at once.
      const chunk = hash === undefined ? size : READ_CHUNK_BYTES;
      let at = 0;
      let hashed = 0;
      while (at < size) {
        const reading = handle.read(bytes, at, Math.min(chunk, size - at), at);
        if (at === 0) onUnderWay?.();
        if (hash !== undefined && hashed < at) {
          hash.update(bytes.subarray(hashed, at));
          hashed = at;
        }
        const { bytesRead } = await reading;
        if (bytesRead === 0) throw new ModelLoadError(`${what}: ${file} shrank while it was read`);
        at += bytesRead;
      }
      hash?.update(bytes.subarray(hashed, size));
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (error) {
      if (error instanceof ModelLoadError) throw error;
      throw new ModelLoadError(`${what}: reading ${file} failed (${code(error)})`, { cause: error });
    } finally {
      await handle.close();
    }
  }

  async listModels(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch (error) {
      if (isMissing(error)) return [];
      throw new ModelLoadError(`listing the models failed (${code(error)})`, { cause: error });
    }
    const names = entries.filter(isValidModelName);
    const found = await Promise.all(
      names.map(async (name) => {
        try {
          return (await stat(join(this.root, name, 'config.json'))).isFile();
        } catch {
          return false;
        }
      }),
    );
    return names.filter((_, i) => found[i]).sort();
  }

  /** Names reaching here were validated by the core; checked again so a path can never leave the root. */
  private path(...segments: string[]): string {
    const path = resolve(this.root, ...segments);
    if (
      !path.startsWith(this.inside) ||
      segments.some((segment) => segment.includes('/') || segment.includes('\\'))
    ) {
      throw new ModelNotFoundError('the model store refuses a name that would leave the repository');
    }
    return path;
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The errno code only: messages of file-system errors hold paths, which must not reach a client. */
function code(error: unknown): string {
  return (error as NodeJS.ErrnoException | undefined)?.code ?? 'unknown error';
}
