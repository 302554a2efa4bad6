import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isValidModelName } from '../../shared/core/names';
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

/** Options of {@link FolderRepositoryWriter}. */
export interface FolderRepositoryWriterOptions {
  /** Create the folder (and its parents) on the first write; otherwise it must exist. Default false. */
  readonly create?: boolean;
  /** How long a config.json update waits for another writer's lock. Default 5 s. */
  readonly lockWaitMs?: number;
  /** A lock older than this is left over from a crashed writer and is broken. Default 60 s. */
  readonly staleLockMs?: number;
}

/**
 * A model repository in a local folder. Files appear whole or not at all: each is written to a temporary
 * name in its final folder, flushed, then linked (a new file: fails if one exists) or renamed (a
 * replacement) into place. config.json updates are serialised by a lock file created with `O_EXCL`, and
 * compared against the content read before (its sha256 is the ETag).
 *
 * @example
 * const writer = new FolderRepositoryWriter('models', { create: true });
 * await writer.putVersionFile('mlp', '1', 'model.onnx', bytes);
 */
export class FolderRepositoryWriter implements ModelRepositoryWriter {
  readonly location: string;
  readonly root: string;
  readonly #create: boolean;
  readonly #lockWaitMs: number;
  readonly #staleLockMs: number;

  constructor(root: string, options: FolderRepositoryWriterOptions = {}) {
    this.root = resolve(root);
    this.location = `file://${this.root}`;
    this.#create = options.create ?? false;
    this.#lockWaitMs = options.lockWaitMs ?? 5_000;
    this.#staleLockMs = options.staleLockMs ?? 60_000;
  }

  async probe(): Promise<void> {
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(this.root)).isDirectory();
    } catch (error) {
      if (errno(error) === 'ENOENT' && this.#create) {
        await this.#mkdir(this.root);
        return;
      }
      throw new RepositoryUnreachableError(
        `the repository folder ${this.root} cannot be used (${errno(error)})${errno(error) === 'ENOENT' ? ': it does not exist' : ''}`,
        { cause: error },
      );
    }
    if (!isDirectory) throw new RepositoryUnreachableError(`the repository ${this.root} is not a folder`);
  }

  async listModels(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch (error) {
      if (errno(error) === 'ENOENT') return [];
      throw this.#failure('listing the models', error);
    }
    const names = entries.filter(isValidModelName);
    const found = await Promise.all(names.map((name) => isFile(join(this.root, name, 'config.json'))));
    return names.filter((_, i) => found[i]).sort();
  }

  async readConfig(model: string): Promise<ConfigSnapshot | undefined> {
    const path = this.#path(model, 'config.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (errno(error) === 'ENOENT' || errno(error) === 'ENOTDIR') return undefined;
      throw this.#failure(`reading ${model}/config.json`, error);
    }
    return { text, etag: sha256(text) };
  }

  async writeConfig(model: string, text: string, expectedEtag: string | undefined): Promise<void> {
    const path = this.#path(model, 'config.json');
    await this.#mkdir(dirname(path));
    const release = await this.#lock(`${path}.lock`, model);
    try {
      const current = await this.readConfig(model);
      if (current?.etag !== expectedEtag) {
        throw new ConfigConflictError(`${model}/config.json was changed by another writer`);
      }
      const temporary = await writeTemporary(path, text).catch((error: unknown) => {
        throw this.#failure(`writing ${model}/config.json`, error);
      });
      await rename(temporary, path).catch(async (error: unknown) => {
        await rm(temporary, { force: true });
        throw this.#failure(`writing ${model}/config.json`, error);
      });
    } finally {
      await release();
    }
  }

  async statVersionFile(model: string, version: string, file: string): Promise<number | undefined> {
    try {
      const info = await stat(this.#path(model, version, file));
      return info.isFile() ? info.size : undefined;
    } catch (error) {
      if (errno(error) === 'ENOENT' || errno(error) === 'ENOTDIR') return undefined;
      throw this.#failure(`reading ${model}/${version}/${file}`, error);
    }
  }

  async readVersionFile(model: string, version: string, file: string): Promise<Uint8Array> {
    try {
      const bytes = await readFile(this.#path(model, version, file));
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (error) {
      throw this.#failure(`reading ${model}/${version}/${file}`, error);
    }
  }

  async digestVersionFile(
    model: string,
    version: string,
    file: string,
  ): Promise<StoredFileDigest | undefined> {
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of createReadStream(this.#path(model, version, file))) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).byteLength;
      }
    } catch (error) {
      if (errno(error) === 'ENOENT') return undefined;
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
    const path = this.#path(model, version, file);
    await this.#mkdir(dirname(path));
    const temporary = await writeTemporary(path, bytes).catch((error: unknown) => {
      throw this.#failure(`writing ${model}/${version}/${file}`, error);
    });
    try {
      if (options.replace) {
        await rename(temporary, path);
        return;
      }
      // link() fails with EEXIST instead of replacing: two writers of one version cannot both succeed.
      await link(temporary, path);
    } catch (error) {
      if (errno(error) === 'EEXIST') {
        throw new VersionExistsError(`${model}/${version}/${file} already exists in ${this.location}`);
      }
      throw this.#failure(`writing ${model}/${version}/${file}`, error);
    } finally {
      await rm(temporary, { force: true });
    }
  }

  async deleteVersionFile(model: string, version: string, file: string): Promise<void> {
    try {
      await rm(this.#path(model, version, file), { force: true });
    } catch (error) {
      throw this.#failure(`removing ${model}/${version}/${file}`, error);
    }
  }

  close(): void {}

  /** Takes the lock file; returns its release. Waits for another writer, and breaks a stale lock. */
  async #lock(path: string, model: string): Promise<() => Promise<void>> {
    const deadline = Date.now() + this.#lockWaitMs;
    for (;;) {
      try {
        const handle = await open(path, 'wx');
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        return () => unlink(path).catch(() => undefined);
      } catch (error) {
        if (errno(error) !== 'EEXIST') throw this.#failure(`locking ${model}/config.json`, error);
      }
      const age = await stat(path).then(
        (info) => Date.now() - info.mtimeMs,
        () => 0,
      );
      if (age > this.#staleLockMs) {
        await unlink(path).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) {
        throw new ConfigConflictError(
          `${model}/config.json is locked by another writer (${path}); if no other command is running, delete the lock file`,
        );
      }
      await sleep(20 + Math.random() * 30);
    }
  }

  async #mkdir(path: string): Promise<void> {
    try {
      await mkdir(path, { recursive: true });
    } catch (error) {
      throw this.#failure(`creating ${path}`, error);
    }
  }

  #path(...names: [string, ...string[]]): string {
    const [model, second, third] = names;
    const segments =
      names.length === 2 && second === 'config.json'
        ? [...checkedSegments(model), 'config.json']
        : checkedSegments(model, second, third);
    const path = resolve(this.root, ...segments);
    if (!path.startsWith(this.root + sep)) throw new RepositoryError(`'${path}' is outside the repository`);
    return path;
  }

  #failure(what: string, error: unknown): RepositoryError {
    const code = errno(error);
    const Kind =
      code === 'EACCES' || code === 'EROFS' || code === 'EPERM'
        ? RepositoryUnreachableError
        : RepositoryError;
    return new Kind(`${what} in ${this.location} failed (${code})`, { cause: error });
  }
}

/** Writes `data` next to `path` under a unique temporary name, flushed to disk; returns that name. */
async function writeTemporary(path: string, data: Uint8Array | string): Promise<string> {
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(temporary, 'wx');
  try {
    await handle.writeFile(data);
    // Without the flush a crash after the rename could leave an empty file under the final name.
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  return temporary;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function errno(error: unknown): string {
  return (error as NodeJS.ErrnoException | undefined)?.code ?? 'unknown error';
}
