import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactCache } from '../core/ports';

/** Options of {@link DiskArtifactCache}. */
export interface DiskArtifactCacheOptions {
  /** The cache folder, e.g. `/tmp/models`; created on first use. One process uses it at a time. */
  readonly dir: string;
  /** Bytes the cached files may take in all; 0 turns the tier off. */
  readonly maxBytes: number;
}

const SHA256 = /^[0-9a-f]{64}$/;
const TEMPORARY = /^\.[0-9a-f]{64}\.[0-9]+\.[0-9a-f]+\.tmp$/;

/**
 * The `/tmp` tier of the warm cache: model files named by their sha256, bounded by bytes, least recently
 * used evicted first. A file appears under its real name only complete (written to a temporary name in the
 * same folder, then renamed), so a process restarted on a warm instance reuses what it finds there.
 *
 * `put` throws on I/O errors (the caller logs them off the critical path); `get` treats any error as a miss.
 * `get` does not hash the bytes again: the caller verifies them as it does bytes from the store.
 *
 * @example
 * const disk = new DiskArtifactCache({ dir: '/tmp/models', maxBytes: 8 * 1024 ** 3 });
 * const bytes = (await disk.get(sha256, size)) ?? (await download());
 */
export class DiskArtifactCache implements ArtifactCache {
  private readonly dir: string;
  private readonly maxBytes: number;
  /** sha256 -> size, least recently used first (a Map keeps insertion order). */
  private readonly entries = new Map<string, number>();
  private total = 0;
  private indexed: Promise<void> | undefined;
  /** Writes run one after another, so two of them never evict against the same free space. */
  private writes: Promise<void> = Promise.resolve();

  constructor(options: DiskArtifactCacheOptions) {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0) {
      throw new RangeError(`'maxBytes' must be a non-negative integer, got ${options.maxBytes}`);
    }
    this.dir = options.dir;
    this.maxBytes = options.maxBytes;
  }

  /** Bytes the indexed files take now. */
  get usedBytes(): number {
    return this.total;
  }

  async get(sha256: string, size: number): Promise<Uint8Array | undefined> {
    if (this.maxBytes === 0 || !SHA256.test(sha256)) return undefined;
    try {
      await this.index();
    } catch {
      return undefined;
    }
    const known = this.entries.get(sha256);
    if (known === undefined) return undefined;
    const path = join(this.dir, sha256);
    try {
      const bytes = known === size ? await readExactly(path, size) : undefined;
      if (bytes === undefined) {
        await this.remove(sha256);
        return undefined;
      }
      this.entries.delete(sha256);
      this.entries.set(sha256, size);
      // The modification time orders the files when a restarted process indexes the folder again.
      const now = new Date();
      await utimes(path, now, now).catch(() => {});
      return bytes;
    } catch {
      this.forget(sha256);
      return undefined;
    }
  }

  put(sha256: string, bytes: Uint8Array): Promise<void> {
    if (!SHA256.test(sha256))
      return Promise.reject(new TypeError('the cache key must be a sha256 in lowercase hex'));
    if (this.maxBytes === 0 || bytes.byteLength > this.maxBytes) return Promise.resolve();
    const write = this.writes.then(() => this.write(sha256, bytes));
    this.writes = write.catch(() => {});
    return write;
  }

  private async write(sha256: string, bytes: Uint8Array): Promise<void> {
    await this.index();
    const path = join(this.dir, sha256);
    const known = this.entries.get(sha256);
    if (known === bytes.byteLength) {
      this.entries.delete(sha256);
      this.entries.set(sha256, known);
      return;
    }
    if (known !== undefined) await this.remove(sha256);
    await this.evict(bytes.byteLength);
    const temporary = join(this.dir, `.${sha256}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await writeFile(temporary, bytes, { flag: 'wx' });
      await rename(temporary, path);
    } catch (error) {
      await rm(temporary, { force: true }).catch(() => {});
      throw error;
    }
    this.entries.set(sha256, bytes.byteLength);
    this.total += bytes.byteLength;
  }

  private index(): Promise<void> {
    this.indexed ??= this.scan().catch((error: unknown) => {
      this.indexed = undefined;
      throw error;
    });
    return this.indexed;
  }

  /** Indexes the files a previous process left, oldest first, and removes its unfinished writes. */
  private async scan(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const found: { sha256: string; size: number; mtimeMs: number }[] = [];
    for (const name of await readdir(this.dir)) {
      const path = join(this.dir, name);
      if (TEMPORARY.test(name)) {
        await rm(path, { force: true });
      } else if (SHA256.test(name)) {
        const info = await stat(path).catch(() => undefined);
        if (info?.isFile() === true) found.push({ sha256: name, size: info.size, mtimeMs: info.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { sha256, size } of found) {
      this.entries.set(sha256, size);
      this.total += size;
    }
    await this.evict(0);
  }

  /** Removes least recently used files until `incoming` more bytes fit within the budget. */
  private async evict(incoming: number): Promise<void> {
    for (const sha256 of this.entries.keys()) {
      if (this.total + incoming <= this.maxBytes) return;
      await this.remove(sha256);
    }
  }

  async delete(sha256: string): Promise<void> {
    if (SHA256.test(sha256)) await this.remove(sha256);
  }

  private async remove(sha256: string): Promise<void> {
    this.forget(sha256);
    await rm(join(this.dir, sha256), { force: true });
  }

  private forget(sha256: string): void {
    const size = this.entries.get(sha256);
    if (size === undefined) return;
    this.entries.delete(sha256);
    this.total -= size;
  }
}

/** The file's bytes when it holds exactly `size` of them, else `undefined`. */
async function readExactly(path: string, size: number): Promise<Uint8Array | undefined> {
  const handle = await open(path, 'r');
  try {
    if ((await handle.stat()).size !== size) return undefined;
    // Never a slice of Node's buffer pool: onnxruntime may keep using this memory as the model's weights.
    const bytes = Buffer.allocUnsafeSlow(size);
    let at = 0;
    while (at < size) {
      const { bytesRead } = await handle.read(bytes, at, size - at, at);
      if (bytesRead === 0) return undefined;
      at += bytesRead;
    }
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } finally {
    await handle.close();
  }
}
