import { randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { parseS3Url } from '../../shared/adapters/s3-client';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { ConfigError, ModelLoadError, ModelNotFoundError } from '../../shared/core/errors';
import { type S3Server, startS3Server } from '../support/s3-server';

const MiB = 1024 * 1024;

let server: S3Server;

beforeAll(async () => {
  server = await startS3Server();
});

afterAll(async () => {
  await server.close();
});

beforeEach(() => {
  server.requests.clear();
});

function store(
  options: { prefix?: string; partSize?: number; concurrency?: number; listPageSize?: number } = {},
) {
  return new S3ModelStore({ client: server.client, bucket: server.bucket, prefix: 'repo', ...options });
}

async function put(key: string, bytes: Uint8Array | string): Promise<string> {
  return server.putObject(server.bucket, key, bytes);
}

async function expectRejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome).toBeInstanceOf(Error);
  return outcome as Error;
}

describe('S3ModelStore', () => {
  describe('constructor', () => {
    it('refuses a prefix that climbs out of the bucket and a part size of zero', () => {
      expect(() => new S3ModelStore({ client: server.client, bucket: 'b', prefix: 'a/../b' })).toThrow(
        ConfigError,
      );
      expect(() => new S3ModelStore({ client: server.client, bucket: 'b', partSize: 0 })).toThrow(
        ConfigError,
      );
    });

    it('describes its location without credentials', () => {
      expect(store({ prefix: '/models/prod/' }).location).toBe(`s3://${server.bucket}/models/prod`);
    });
  });

  describe('readConfig', () => {
    it('returns the text and ETag, then not-modified while the ETag matches', async () => {
      await put('repo/linear/config.json', '{"versions":{}}');
      const s3 = store();

      const first = await s3.readConfig('linear');
      expect(first).toEqual({ text: '{"versions":{}}', etag: expect.stringMatching(/.+/) });
      const etag = (first as { etag: string }).etag;
      expect(await s3.readConfig('linear', etag)).toBe('not-modified');
      expect(server.requests.count('GetObject', 'repo/linear/config.json')).toBe(2);
    });

    it('returns the new document once the object changed', async () => {
      await put('repo/changing/config.json', '{"a":1}');
      const s3 = store();
      const first = await s3.readConfig('changing');
      await put('repo/changing/config.json', '{"a":2}');

      const second = await s3.readConfig('changing', (first as { etag: string }).etag);

      expect(second).toEqual({ text: '{"a":2}', etag: expect.any(String) });
      expect((second as { etag: string }).etag).not.toBe((first as { etag: string }).etag);
    });

    it('returns undefined for a model that does not exist', async () => {
      expect(await store().readConfig('missing')).toBeUndefined();
    });

    it('turns other S3 errors into a ModelLoadError that keeps the cause', async () => {
      const s3 = new S3ModelStore({ client: server.client, bucket: 'no-such-bucket' });

      const error = await expectRejection(s3.readConfig('linear'));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).toContain("model 'linear'");
      expect(error.message).toContain('NoSuchBucket');
      expect(error.message).not.toContain(server.endpoint);
      expect(error.cause).toBeInstanceOf(Error);
    });

    it('refuses names that would leave the prefix without sending a request', async () => {
      for (const name of ['..', '../secret', 'a/b', '/etc', '.hidden', '']) {
        await expect(store().readConfig(name)).rejects.toThrow(ModelNotFoundError);
      }
      expect(server.requests.count()).toBe(0);
    });
  });

  describe('readArtifact', () => {
    const size = 20 * MiB + 12_345;
    const big = randomBytes(size);
    const key = 'repo/big/1/model.onnx';

    beforeAll(async () => {
      await put(key, big);
    });

    it('downloads a 20 MB artifact in 1 MiB ranged GETs, byte for byte', async () => {
      const bytes = await store({ partSize: MiB, concurrency: 4 }).readArtifact('big', '1', 'onnx', size);

      expect(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(big)).toBe(true);
      const gets = server.requests.entries.filter((entry) => entry.command === 'GetObject');
      expect(gets).toHaveLength(21);
      const ranges = gets.map((entry) => entry.range).sort((a, b) => rangeStart(a) - rangeStart(b));
      expect(ranges[0]).toBe(`bytes=0-${MiB - 1}`);
      expect(ranges[20]).toBe(`bytes=${20 * MiB}-${size - 1}`);
      expect(new Set(ranges).size).toBe(21);
    });

    it('returns a buffer that owns its memory from offset 0', async () => {
      const bytes = await store({ partSize: MiB }).readArtifact('big', '1', 'onnx', size);

      expect(bytes.byteOffset).toBe(0);
      expect(bytes.buffer.byteLength).toBe(size);
    });

    it('keeps at most `concurrency` GETs waiting for an answer', async () => {
      let inFlight = 0;
      let most = 0;
      server.client.middlewareStack.add(
        (next) => async (args) => {
          inFlight++;
          most = Math.max(most, inFlight);
          try {
            return await next(args);
          } finally {
            inFlight--;
          }
        },
        { step: 'deserialize', name: 'inFlight' },
      );
      try {
        await store({ partSize: MiB, concurrency: 3 }).readArtifact('big', '1', 'onnx', size);
      } finally {
        server.client.middlewareStack.remove('inFlight');
      }
      expect(most).toBeLessThanOrEqual(3);
    });

    it('says once when the download is under way: first headers in, every concurrent GET asked for', async () => {
      const sent: string[] = [];
      server.client.middlewareStack.add(
        (next) => async (args) => {
          sent.push(String((args.input as { Range?: string }).Range));
          return next(args);
        },
        { step: 'initialize', name: 'sent' },
      );
      const underWay: number[] = [];
      try {
        const { bytes } = await store({ partSize: MiB, concurrency: 4 }).readArtifactHashed(
          'big',
          '1',
          'onnx',
          size,
          undefined,
          () => underWay.push(sent.length),
        );
        expect(Buffer.from(bytes).equals(big)).toBe(true);
      } finally {
        server.client.middlewareStack.remove('sent');
      }
      // The first part, then the three others read at once; 21 parts in all.
      expect(underWay).toEqual([4]);
      expect(sent).toHaveLength(21);
    });

    it('asks for the first `concurrency` parts at once, before any answer is in', async () => {
      const events: string[] = [];
      server.client.middlewareStack.add(
        (next) => async (args) => {
          events.push('asked');
          const output = await next(args);
          events.push('answered');
          return output;
        },
        { step: 'initialize', name: 'order' },
      );
      try {
        const bytes = await store({ partSize: MiB, concurrency: 4 }).readArtifact('big', '1', 'onnx', size);
        expect(Buffer.from(bytes).equals(big)).toBe(true);
      } finally {
        server.client.middlewareStack.remove('order');
      }
      // Before, the first part went alone and the three others followed its headers.
      expect(events.slice(0, 5)).toEqual(['asked', 'asked', 'asked', 'asked', 'answered']);
    });

    it('says the download of a one-part artifact is under way once its headers are in', async () => {
      const small = randomBytes(4096);
      await put('repo/small/3/model.ort', small);
      const underWay: number[] = [];
      await store().readArtifactHashed('small', '3', 'ort', small.byteLength, undefined, () =>
        underWay.push(server.requests.count('GetObject')),
      );
      expect(underWay).toEqual([1]);
    });

    it('uses one plain GET when the artifact fits in one part', async () => {
      const small = randomBytes(4096);
      await put('repo/small/2/model.ort', small);

      const bytes = await store().readArtifact('small', '2', 'ort', small.byteLength);

      expect(Buffer.from(bytes).equals(small)).toBe(true);
      expect(server.requests.entries).toEqual([
        { command: 'GetObject', key: 'repo/small/2/model.ort', range: undefined },
      ]);
    });

    it('splits an exact multiple of the part size into whole parts', async () => {
      const exact = randomBytes(4 * MiB);
      await put('repo/exact/1/model.onnx', exact);

      const bytes = await store({ partSize: MiB, concurrency: 8 }).readArtifact(
        'exact',
        '1',
        'onnx',
        exact.byteLength,
      );

      expect(Buffer.from(bytes).equals(exact)).toBe(true);
      expect(server.requests.count('GetObject')).toBe(4);
    });

    it.each([
      ['larger, ranged', 3 * MiB + 1, 3 * MiB],
      ['smaller, ranged', 3 * MiB - 1, 3 * MiB],
      ['larger, one GET', 1001, 1000],
      ['smaller, one GET', 999, 1000],
    ])(
      'fails with ModelLoadError when the object is %s than config.json says',
      async (_, actual, declared) => {
        await put('repo/mismatch/1/model.onnx', randomBytes(actual));

        const error = await expectRejection(
          store({ partSize: MiB }).readArtifact('mismatch', '1', 'onnx', declared),
        );

        expect(error).toBeInstanceOf(ModelLoadError);
        expect(error.message).toContain("model 'mismatch' version '1'");
        expect(error.message).toContain('does not match config.json');
      },
    );

    it('fails with ModelLoadError when the object is replaced between two parts', async () => {
      const original = randomBytes(4 * MiB);
      const replacedKey = 'repo/replaced/1/model.onnx';
      await put(replacedKey, original);
      let gets = 0;
      // Before the second part is sent: s3rver ignores If-Match, so this proves the ETag comparison.
      server.client.middlewareStack.add(
        (next) => async (args) => {
          if (++gets === 2) await put(replacedKey, randomBytes(4 * MiB));
          return next(args);
        },
        { step: 'build', name: 'replaceBeforeSecondPart' },
      );
      try {
        const error = await expectRejection(
          store({ partSize: MiB, concurrency: 1 }).readArtifact('replaced', '1', 'onnx', original.byteLength),
        );
        expect(error).toBeInstanceOf(ModelLoadError);
        expect(error.message).toContain('changed during the download');
      } finally {
        server.client.middlewareStack.remove('replaceBeforeSecondPart');
      }
      expect(server.requests.count('GetObject', replacedKey)).toBe(2);
    });

    it('throws ModelNotFoundError naming the model and the missing version', async () => {
      const error = await expectRejection(store().readArtifact('big', '7', 'onnx', 10));

      expect(error).toBeInstanceOf(ModelNotFoundError);
      expect(error.message).toContain("model 'big'");
      expect(error.message).toContain("version '7'");
    });

    it('throws ModelNotFoundError for a missing version that is larger than one part', async () => {
      await expect(store({ partSize: MiB }).readArtifact('big', '8', 'onnx', 5 * MiB)).rejects.toThrow(
        ModelNotFoundError,
      );
    });

    it('turns other S3 errors into ModelLoadError naming the model and version', async () => {
      const s3 = new S3ModelStore({ client: server.client, bucket: 'no-such-bucket' });

      const error = await expectRejection(s3.readArtifact('big', '1', 'onnx', 10));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).toContain("model 'big' version '1'");
      expect(error.cause).toBeInstanceOf(Error);
    });

    it.each([
      ['..', '1'],
      ['a/../..', '1'],
      ['big', '../1'],
      ['big', '1/../../x'],
      ['big', '01'],
    ])('refuses model %j version %j without sending a request', async (model, version) => {
      await expect(store().readArtifact(model, version, 'onnx', 10)).rejects.toThrow(ModelNotFoundError);
      expect(server.requests.count()).toBe(0);
    });

    it('reads keys at the bucket root when the prefix is empty', async () => {
      const bytes = randomBytes(100);
      await put('rooted/3/model.onnx', bytes);

      const read = await store({ prefix: '' }).readArtifact('rooted', '3', 'onnx', 100);

      expect(Buffer.from(read).equals(bytes)).toBe(true);
      expect(server.requests.entries[0]?.key).toBe('rooted/3/model.onnx');
    });
  });

  describe('listModels', () => {
    it('lists the prefixes that hold a config.json', async () => {
      for (const name of ['alpha', 'beta', 'gamma']) await put(`catalogue/${name}/config.json`, '{}');
      await put('catalogue/no-config/1/model.onnx', 'x');
      await put('catalogue/stray.txt', 'x');
      await put('catalogue/bad name/config.json', '{}');

      const names = await store({ prefix: 'catalogue' }).listModels();

      expect(names).toEqual(['alpha', 'beta', 'gamma']);
      expect(server.requests.count('ListObjectsV2')).toBe(1);
    });

    // s3rver's continuation tokens are DES-encrypted, which OpenSSL 3 refuses (an InternalError on page 2),
    // so the pagination is driven through a client that answers two pages itself.
    it('follows continuation tokens', async () => {
      const inputs: Record<string, unknown>[] = [];
      const client = {
        send: async (command: { constructor: { name: string }; input: Record<string, unknown> }) => {
          inputs.push(command.input);
          if (command.constructor.name === 'HeadObjectCommand') return {};
          return command.input.ContinuationToken === undefined
            ? { CommonPrefixes: [{ Prefix: 'p/one/' }], IsTruncated: true, NextContinuationToken: 'page-2' }
            : { CommonPrefixes: [{ Prefix: 'p/two/' }], IsTruncated: false };
        },
      } as unknown as S3Client;

      const names = await new S3ModelStore({
        client,
        bucket: 'b',
        prefix: 'p',
        listPageSize: 1,
      }).listModels();

      expect(names).toEqual(['one', 'two']);
      expect(
        inputs.filter((input) => input.Delimiter === '/').map((input) => input.ContinuationToken),
      ).toEqual([undefined, 'page-2']);
    });

    it('returns an empty list for an empty prefix', async () => {
      expect(await store({ prefix: 'nothing-here' }).listModels()).toEqual([]);
    });
  });
});

describe('parseS3Url', () => {
  it('splits a bucket and a prefix, dropping the trailing slash', () => {
    expect(parseS3Url('s3://models/prod/v2/')).toEqual({ bucket: 'models', prefix: 'prod/v2' });
    expect(parseS3Url('s3://models')).toEqual({ bucket: 'models', prefix: '' });
  });

  it.each(['https://models/x', 's3://', 's3://Bad_Bucket/x', 's3://models/a/../b', 's3://models//x'])(
    'refuses %j',
    (url) => {
      expect(parseS3Url(url)).toBeUndefined();
    },
  );
});

function rangeStart(range: string | undefined): number {
  return Number(/^bytes=(\d+)-/.exec(range ?? '')?.[1] ?? Number.NaN);
}
