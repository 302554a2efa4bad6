import crypto, { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, mkdtemp, open, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { ModelLoadError, ModelNotFoundError } from '../../shared/core/errors';

let root: string;
let outside: string;

beforeEach(async () => {
  const base = await mkdtemp(join(tmpdir(), 'file-model-store-'));
  root = join(base, 'models');
  outside = join(base, 'outside');
  await mkdir(root);
  await mkdir(outside);
});

afterEach(async () => {
  await rm(dirname(root), { recursive: true, force: true });
});

async function write(relative: string, bytes: Uint8Array | string): Promise<void> {
  await mkdir(dirname(join(root, relative)), { recursive: true });
  await writeFile(join(root, relative), bytes);
}

async function expectRejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome).toBeInstanceOf(Error);
  return outcome as Error;
}

describe('FileModelStore', () => {
  describe('readConfig', () => {
    it('returns the text with an ETag, then not-modified while the file is unchanged', async () => {
      await write('linear/config.json', '{"versions":{}}');
      const store = new FileModelStore(root);

      const first = await store.readConfig('linear');

      expect(first).toEqual({ text: '{"versions":{}}', etag: expect.stringMatching(/^".+"$/) });
      expect(await store.readConfig('linear', (first as { etag: string }).etag)).toBe('not-modified');
    });

    it('returns the new document once the file changed', async () => {
      await write('linear/config.json', '{"a":1}');
      const store = new FileModelStore(root);
      const first = (await store.readConfig('linear')) as { etag: string };
      await write('linear/config.json', '{"a":22}');
      const later = new Date(Date.now() + 5_000);
      await utimes(join(root, 'linear/config.json'), later, later);

      const second = await store.readConfig('linear', first.etag);

      expect(second).toEqual({ text: '{"a":22}', etag: expect.any(String) });
      expect((second as { etag: string }).etag).not.toBe(first.etag);
    });

    it('returns undefined for a model that does not exist', async () => {
      expect(await new FileModelStore(root).readConfig('missing')).toBeUndefined();
    });

    it('returns undefined when the repository folder does not exist', async () => {
      expect(await new FileModelStore(join(root, 'nope')).readConfig('linear')).toBeUndefined();
    });

    it.each(['..', '../outside', 'a/b', '/etc', '.hidden', ''])('refuses the name %j', async (name) => {
      await writeFile(join(outside, 'config.json'), '{}');
      await expect(new FileModelStore(root).readConfig(name)).rejects.toThrow(ModelNotFoundError);
    });
  });

  describe('readArtifact', () => {
    it('reads the file into one buffer of the declared size', async () => {
      const bytes = randomBytes(3 * 1024 * 1024 + 7);
      await write('linear/1/model.onnx', bytes);

      const read = await new FileModelStore(root).readArtifact('linear', '1', 'onnx', bytes.byteLength);

      expect(Buffer.from(read).equals(bytes)).toBe(true);
      expect(read.byteOffset).toBe(0);
      expect(read.buffer.byteLength).toBe(bytes.byteLength);
    });

    it("hashes while it reads: a chunk is hashed while the next is read, the digest is the whole file's", async () => {
      const size = 20 * 1024 * 1024 + 12_345;
      const big = randomBytes(size);
      await write('big/1/model.onnx', big);
      const digest = crypto.createHash('sha256').update(big).digest('hex');
      const events: string[] = [];
      const real = crypto.createHash;
      jest.spyOn(crypto, 'createHash').mockImplementation((algorithm, options) => {
        const hash = real(algorithm, options);
        const update = hash.update.bind(hash);
        hash.update = ((data: Uint8Array) => {
          events.push(`hash ${data.byteLength}`);
          return update(data);
        }) as typeof hash.update;
        return hash;
      });
      const probe = await open(join(root, 'big/1/model.onnx'), 'r');
      const handleType = Object.getPrototypeOf(probe) as FileHandle;
      await probe.close();
      const read = handleType.read;
      jest.spyOn(handleType, 'read').mockImplementation(function (this: FileHandle, ...args: unknown[]) {
        events.push(`read ${String(args[2])}`);
        return (read as (...a: unknown[]) => Promise<unknown>).apply(this, args);
      } as typeof handleType.read);
      const underWay: number[] = [];
      try {
        const { bytes, sha256 } = await new FileModelStore(root).readArtifactHashed(
          'big',
          '1',
          'onnx',
          size,
          undefined,
          () => underWay.push(events.length),
        );
        expect(Buffer.from(bytes).equals(big)).toBe(true);
        expect(sha256).toBe(digest);
      } finally {
        jest.restoreAllMocks();
      }
      const MiB8 = 8 * 1024 * 1024;
      expect(events).toEqual([
        `read ${MiB8}`,
        `read ${MiB8}`,
        `hash ${MiB8}`,
        `read ${size - 2 * MiB8}`,
        `hash ${MiB8}`,
        `hash ${size - 2 * MiB8}`,
      ]);
      expect(underWay).toEqual([1]);
    });

    it('reads the ORT-format file', async () => {
      await write('linear/2/model.ort', 'ort bytes');

      const read = await new FileModelStore(root).readArtifact('linear', '2', 'ort', 9);

      expect(Buffer.from(read).toString()).toBe('ort bytes');
    });

    it.each([
      ['larger', 11],
      ['smaller', 9],
    ])('fails with ModelLoadError when the file is %s than config.json says', async (_, actual) => {
      await write('linear/1/model.onnx', randomBytes(actual));

      const error = await expectRejection(new FileModelStore(root).readArtifact('linear', '1', 'onnx', 10));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).toBe(
        `model 'linear' version '1': model.onnx is ${actual} bytes, config.json says 10`,
      );
    });

    it('throws ModelNotFoundError naming the model and the missing version', async () => {
      await write('linear/config.json', '{}');

      const error = await expectRejection(new FileModelStore(root).readArtifact('linear', '4', 'onnx', 10));

      expect(error).toBeInstanceOf(ModelNotFoundError);
      expect(error.message).toContain("model 'linear'");
      expect(error.message).toContain("version '4'");
      expect(error.message).not.toContain(root);
    });

    it.each([
      ['..', '1'],
      ['../outside', '1'],
      ['linear', '..'],
      ['linear', '../../outside'],
      ['linear', '1/../..'],
    ])('refuses model %j version %j', async (model, version) => {
      await writeFile(join(outside, 'model.onnx'), 'x');
      await expect(new FileModelStore(root).readArtifact(model, version, 'onnx', 1)).rejects.toThrow(
        ModelNotFoundError,
      );
    });

    it('never includes a file-system path in an error message', async () => {
      await mkdir(join(root, 'linear/1/model.onnx'), { recursive: true });

      const error = await expectRejection(new FileModelStore(root).readArtifact('linear', '1', 'onnx', 10));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).not.toContain(root);
    });
  });

  describe('listModels', () => {
    it('lists the folders that hold a config.json', async () => {
      await write('beta/config.json', '{}');
      await write('alpha/config.json', '{}');
      await write('no-config/1/model.onnx', 'x');
      await write('stray.txt', 'x');
      await write('bad name/config.json', '{}');
      await symlink(outside, join(root, 'linked'));

      expect(await new FileModelStore(root).listModels()).toEqual(['alpha', 'beta']);
    });

    it('returns an empty list when the repository folder does not exist', async () => {
      expect(await new FileModelStore(join(root, 'nope')).listModels()).toEqual([]);
    });
  });

  it('describes its location', () => {
    expect(new FileModelStore(root).location).toBe(`file://${root}`);
  });
});
