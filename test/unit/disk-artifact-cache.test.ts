import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskArtifactCache } from '../../shared/adapters/disk-artifact-cache';

let dir: string;

beforeEach(async () => {
  dir = join(await mkdtemp(join(tmpdir(), 'disk-artifact-cache-')), 'cache');
});

afterEach(async () => {
  await rm(join(dir, '..'), { recursive: true, force: true });
});

function artifact(size: number): { sha256: string; bytes: Buffer } {
  const bytes = randomBytes(size);
  return { sha256: createHash('sha256').update(bytes).digest('hex'), bytes };
}

describe('DiskArtifactCache', () => {
  describe('put', () => {
    it('stores bytes that get returns, under the sha256 and nothing else', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000_000 });
      const { sha256, bytes } = artifact(10_000);

      await cache.put(sha256, bytes);

      expect(await readdir(dir)).toEqual([sha256]);
      const read = await cache.get(sha256, bytes.byteLength);
      expect(read !== undefined && Buffer.from(read).equals(bytes)).toBe(true);
      expect(cache.usedBytes).toBe(10_000);
    });

    it('deletes a file and its share of the budget', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000_000 });
      const { sha256, bytes } = artifact(1_000);
      await cache.put(sha256, bytes);

      await cache.delete(sha256);

      expect(await readdir(dir)).toEqual([]);
      expect(await cache.get(sha256, 1_000)).toBeUndefined();
      expect(cache.usedBytes).toBe(0);
    });

    it('evicts the least recently used files to stay within maxBytes', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 3_000 });
      const [a, b, c, d] = [artifact(1_000), artifact(1_000), artifact(1_000), artifact(1_000)];
      if (a === undefined || b === undefined || c === undefined || d === undefined)
        throw new Error('unreachable');
      await cache.put(a.sha256, a.bytes);
      await cache.put(b.sha256, b.bytes);
      await cache.put(c.sha256, c.bytes);
      expect(await cache.get(a.sha256, 1_000)).toBeDefined();

      await cache.put(d.sha256, d.bytes);

      expect(await cache.get(b.sha256, 1_000)).toBeUndefined();
      expect((await readdir(dir)).sort()).toEqual([a.sha256, c.sha256, d.sha256].sort());
      expect(cache.usedBytes).toBe(3_000);
    });

    it('keeps the budget when writes run concurrently', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 2_500 });
      const items = Array.from({ length: 6 }, () => artifact(1_000));

      await Promise.all(items.map(({ sha256, bytes }) => cache.put(sha256, bytes)));

      expect(await readdir(dir)).toHaveLength(2);
      expect(cache.usedBytes).toBe(2_000);
    });

    it('does not store an artifact larger than maxBytes, nor evict for it', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_500 });
      const small = artifact(1_000);
      const huge = artifact(2_000);
      await cache.put(small.sha256, small.bytes);

      await cache.put(huge.sha256, huge.bytes);

      expect(await readdir(dir)).toEqual([small.sha256]);
    });

    it('does nothing when maxBytes is 0', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 0 });
      const { sha256, bytes } = artifact(10);

      await cache.put(sha256, bytes);

      expect(await cache.get(sha256, 10)).toBeUndefined();
      await expect(stat(dir)).rejects.toThrow();
    });

    it('refuses a key that is not a sha256', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      await expect(cache.put('../escape', Buffer.from('x'))).rejects.toThrow(TypeError);
    });

    it('throws I/O errors, such as a folder it cannot create', async () => {
      await mkdir(join(dir, '..'), { recursive: true });
      await writeFile(dir, 'a file where the folder should be');
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      const { sha256, bytes } = artifact(10);

      await expect(cache.put(sha256, bytes)).rejects.toThrow();
    });

    it('replaces a file renamed into place, so no reader sees a partial write', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 10_000_000 });
      const { sha256, bytes } = artifact(4_000_000);
      const seen = new Set<string>();
      let writing = true;
      const watch = (async () => {
        while (writing) {
          for (const name of await readdir(dir).catch(() => [])) seen.add(name);
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();

      await cache.put(sha256, bytes);
      writing = false;
      await watch;

      for (const name of seen) expect(name === sha256 || /^\..*\.tmp$/.test(name)).toBe(true);
      expect(await readdir(dir)).toEqual([sha256]);
      expect((await stat(join(dir, sha256))).size).toBe(4_000_000);
    });
  });

  describe('get', () => {
    it('misses an unknown sha256 and a key that is not a sha256', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      expect(await cache.get('0'.repeat(64), 10)).toBeUndefined();
      expect(await cache.get('../../etc/passwd', 10)).toBeUndefined();
    });

    it('misses and deletes the file when its size differs from the one asked for', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      const { sha256, bytes } = artifact(100);
      await cache.put(sha256, bytes);

      expect(await cache.get(sha256, 101)).toBeUndefined();

      expect(await readdir(dir)).toEqual([]);
      expect(cache.usedBytes).toBe(0);
    });

    it('misses when the file was truncated behind its back', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      const { sha256, bytes } = artifact(100);
      await cache.put(sha256, bytes);
      await writeFile(join(dir, sha256), bytes.subarray(0, 50));

      expect(await cache.get(sha256, 100)).toBeUndefined();
      expect(await readdir(dir)).toEqual([]);
    });

    it('misses when the file was deleted behind its back', async () => {
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });
      const { sha256, bytes } = artifact(100);
      await cache.put(sha256, bytes);
      await rm(join(dir, sha256));

      expect(await cache.get(sha256, 100)).toBeUndefined();
      expect(cache.usedBytes).toBe(0);
    });
  });

  describe('indexing', () => {
    it('reuses files a previous process left, oldest first for eviction', async () => {
      await mkdir(dir, { recursive: true });
      const old = artifact(1_000);
      const recent = artifact(1_000);
      await writeFile(join(dir, old.sha256), old.bytes);
      await writeFile(join(dir, recent.sha256), recent.bytes);
      await utimes(join(dir, old.sha256), new Date(1_000_000), new Date(1_000_000));
      const cache = new DiskArtifactCache({ dir, maxBytes: 2_000 });

      const read = await cache.get(recent.sha256, 1_000);
      expect(read !== undefined && Buffer.from(read).equals(recent.bytes)).toBe(true);
      const next = artifact(1_000);
      await cache.put(next.sha256, next.bytes);

      expect((await readdir(dir)).sort()).toEqual([recent.sha256, next.sha256].sort());
    });

    it('removes leftover temporary files and ignores foreign ones', async () => {
      await mkdir(dir, { recursive: true });
      const leftover = `.${'a'.repeat(64)}.1234.deadbeef.tmp`;
      await writeFile(join(dir, leftover), 'half a model');
      await writeFile(join(dir, 'notes.txt'), 'not ours');
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_000 });

      expect(await cache.get('b'.repeat(64), 10)).toBeUndefined();

      expect((await readdir(dir)).sort()).toEqual(['notes.txt']);
      expect(cache.usedBytes).toBe(0);
    });

    it('evicts down to maxBytes when the folder holds more than the budget', async () => {
      await mkdir(dir, { recursive: true });
      const items = [artifact(600), artifact(600), artifact(600)];
      for (const [i, { sha256, bytes }] of items.entries()) {
        await writeFile(join(dir, sha256), bytes);
        await utimes(join(dir, sha256), new Date(1_000_000 + i * 1000), new Date(1_000_000 + i * 1000));
      }
      const cache = new DiskArtifactCache({ dir, maxBytes: 1_300 });

      expect(await cache.get(items[0]?.sha256 ?? '', 600)).toBeUndefined();

      expect(cache.usedBytes).toBe(1_200);
      expect(await readdir(dir)).toHaveLength(2);
    });
  });
});
