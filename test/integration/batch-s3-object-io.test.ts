/** The batch door's S3 adapter against s3rver on loopback. */
import { gunzipSync, gzipSync } from 'node:zlib';
import { S3ObjectIo } from '../../shared/adapters/s3-object-io';
import {
  BatchStateError,
  InputChangedError,
  InputMismatchError,
  InputReadError,
  UnsupportedInputError,
} from '../../shared/core/batch/errors';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { type S3Server, startS3Server } from '../support/s3-server';
import { getBytes, getText, listKeys } from './batch-harness';

let s3: S3Server;
let io: S3ObjectIo;
let proxy: FaultProxy;
/** The adapter through the fault proxy; resumes wait 1 ms, and give up after 2 in a row without progress. */
let faulty: S3ObjectIo;
const TEXT = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
const SIZE = Buffer.byteLength(TEXT);
let etag: string;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'io' });
  io = new S3ObjectIo({ client: s3.client });
  etag = (await s3.putObject('io', 'plain.txt', TEXT)).replace(/"/g, '');
  await s3.putObject('io', 'zipped.gz', gzipSync(TEXT));
  proxy = await startFaultProxy(s3.endpoint);
  faulty = new S3ObjectIo({ client: proxy.client, readRetries: 2, readRetryDelayMs: 1 });
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
});

afterEach(() => {
  proxy.clear();
});

async function read(
  key: string,
  options: Parameters<S3ObjectIo['read']>[1],
  through: S3ObjectIo = io,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of through.read({ bucket: 'io', key }, options)) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** The Range headers of the GETs of `key` the proxy saw (`all` for none). */
const ranges = (key: string, since = 0) =>
  proxy.log
    .slice(since)
    .filter((r) => r.method === 'GET' && r.key === key)
    .map((r) => `${r.range ?? 'all'} ${r.fault ?? ''}`.trim());

describe('S3ObjectIo', () => {
  it('heads an object, and answers undefined for a missing one', async () => {
    expect(await io.head({ bucket: 'io', key: 'plain.txt' })).toEqual({
      size: Buffer.byteLength(TEXT),
      etag: expect.stringMatching(/^[0-9a-f]{32}$/),
      contentEncoding: undefined,
      versionId: undefined,
    });
    expect(await io.head({ bucket: 'io', key: 'nothing' })).toBeUndefined();
  });

  it('reads a byte range with one ranged GET', async () => {
    s3.requests.clear();
    expect(await read('plain.txt', { start: 7, end: 20 })).toBe(TEXT.slice(7, 20));
    expect(await read('plain.txt', { start: 15000 })).toBe(TEXT.slice(15000));
    expect(s3.requests.entries.map((e) => e.range)).toEqual(['bytes=7-19', 'bytes=15000-']);
    expect(await read('plain.txt', { start: 5, end: 5 })).toBe('');
  });

  it('gunzips, counting the range in decompressed bytes', async () => {
    expect(await read('zipped.gz', { gunzip: true })).toBe(TEXT);
    expect(await read('zipped.gz', { gunzip: true, start: 12_345, end: 12_400 })).toBe(
      TEXT.slice(12_345, 12_400),
    );
  });

  it('reports an input deleted while it is read as changed', async () => {
    await expect(read('gone.txt', { etag: 'abc' })).rejects.toBeInstanceOf(InputChangedError);
  });

  describe('reads held to the size (through a fault proxy)', () => {
    let since = 0;
    beforeEach(() => {
      since = proxy.log.length;
    });

    it('resumes a body that breaks or ends early with a ranged GET from the first byte not yet read', async () => {
      const key = 'plain.txt';
      proxy.inject({ method: 'GET', key, ranged: false, fault: { kind: 'reset', after: 5000 } });
      proxy.inject({ method: 'GET', key, ranged: true, fault: { kind: 'truncate', to: 3000 } });
      expect(await read(key, { size: SIZE, etag }, faulty)).toBe(TEXT);
      // The reset's bytes before the break may not all have arrived: the resume starts where they end.
      const log = ranges(key, since);
      expect(log).toHaveLength(3);
      expect(log[0]).toBe('all reset');
      const resumedAt = Number(/^bytes=(\d+)-/.exec(log[1] ?? '')?.[1]);
      expect(resumedAt).toBeGreaterThan(0);
      expect(resumedAt).toBeLessThanOrEqual(5000);
      expect(log.slice(1)).toEqual([`bytes=${resumedAt}- truncate`, `bytes=${resumedAt + 3000}-`]);
    });

    it('takes a cut body as the whole object without the size (the read nothing holds to it)', async () => {
      proxy.inject({ method: 'GET', key: 'plain.txt', fault: { kind: 'truncate', to: 100 } });
      expect(await read('plain.txt', {}, faulty)).toBe(TEXT.slice(0, 100));
    });

    it('resumes the compressed bytes of a gzip read under gunzip', async () => {
      proxy.inject({
        method: 'GET',
        key: 'zipped.gz',
        ranged: false,
        fault: { kind: 'close', after: { fraction: 0.5 } },
      });
      const size = gzipSync(TEXT).byteLength;
      expect(await read('zipped.gz', { gunzip: true, size }, faulty)).toBe(TEXT);
      expect(ranges('zipped.gz', since)).toHaveLength(2);
    });

    it('gives up after resumes in a row without progress, naming the bytes read', async () => {
      proxy.inject({
        method: 'GET',
        key: 'plain.txt',
        ranged: true,
        times: Number.POSITIVE_INFINITY,
        fault: { kind: 'truncate', to: 0 },
      });
      proxy.inject({ method: 'GET', key: 'plain.txt', ranged: false, fault: { kind: 'truncate', to: 1000 } });
      await expect(read('plain.txt', { size: SIZE }, faulty)).rejects.toThrow(
        new InputReadError(
          `the input 'plain.txt' could not be read whole: 1000 of ${SIZE} bytes after 4 attempts (the body ended early)`,
        ),
      );
      // The first GET made progress; then three that made none: the third in a row is over readRetries (2).
      expect(ranges('plain.txt', since)).toEqual(['all truncate', ...Array(3).fill('bytes=1000- truncate')]);
    });

    it.each([
      ['a whole answer longer than the size', { start: 0 }, SIZE - 1, {}],
      [
        'a ranged answer naming another total',
        { start: 10 },
        SIZE,
        { 'content-range': `bytes 10-${SIZE - 1}/${SIZE + 1}` },
      ],
      ['a ranged answer that ignored the Range', { start: 10 }, SIZE, { 'content-range': undefined }],
    ])('refuses %s as a disagreement', async (_, options, size, set) => {
      proxy.inject({ method: 'GET', key: 'plain.txt', fault: { kind: 'headers', set } });
      await expect(read('plain.txt', { ...options, size }, faulty)).rejects.toBeInstanceOf(
        InputMismatchError,
      );
    });

    it('refuses a GET that serves another ETag than the one read', async () => {
      proxy.inject({ method: 'GET', key: 'plain.txt', fault: { kind: 'headers', set: { etag: '"0000"' } } });
      await expect(read('plain.txt', { size: SIZE, etag }, faulty)).rejects.toBeInstanceOf(InputChangedError);
    });

    it('turns a gzip object that is not gzip into an unsupported input', async () => {
      await s3.putObject('io', 'not.gz', 'plain text, no gzip');
      await expect(read('not.gz', { gunzip: true, size: 19 }, faulty)).rejects.toBeInstanceOf(
        UnsupportedInputError,
      );
    });
  });

  describe('verify and head', () => {
    it('passes when a GET agrees with the size and ETag expected', async () => {
      await expect(
        faulty.verify({ bucket: 'io', key: 'plain.txt' }, { size: SIZE, etag }),
      ).resolves.toBeUndefined();
      await s3.putObject('io', 'empty.txt', '');
      await expect(faulty.verify({ bucket: 'io', key: 'empty.txt' }, { size: 0 })).resolves.toBeUndefined();
    });

    it('refuses another size as a disagreement, and another ETag or a missing object as a change', async () => {
      const ref = { bucket: 'io', key: 'plain.txt' };
      await expect(faulty.verify(ref, { size: SIZE / 2 })).rejects.toThrow(
        new InputMismatchError(
          `the sizes of the input 'plain.txt' disagree: ${SIZE / 2} bytes before, GET says ${SIZE}`,
        ),
      );
      await expect(faulty.verify(ref, { size: 0 })).rejects.toBeInstanceOf(InputMismatchError);
      await expect(faulty.verify(ref, { size: SIZE, etag: 'ffff' })).rejects.toBeInstanceOf(
        InputChangedError,
      );
      await expect(faulty.verify({ bucket: 'io', key: 'nothing' }, { size: 1 })).rejects.toBeInstanceOf(
        InputChangedError,
      );
    });

    it('refuses a HEAD answer without a Content-Length rather than guess 0', async () => {
      proxy.inject({
        method: 'HEAD',
        key: 'plain.txt',
        fault: { kind: 'headers', set: { 'content-length': undefined } },
      });
      await expect(faulty.head({ bucket: 'io', key: 'plain.txt' })).rejects.toBeInstanceOf(
        InputMismatchError,
      );
    });
  });

  it('writes a stream of chunks, gzipped on the way when asked, and tells the stored size', async () => {
    const chunks = Array.from({ length: 100 }, (_, i) => Buffer.from(`chunk ${i}\n`));
    const bytes = await io.write({ bucket: 'io', key: 'out.gz' }, chunks, {
      contentType: 'application/x-ndjson',
      gzip: true,
    });
    const stored = (await getBytes(s3, 'out.gz')) as Uint8Array;
    expect(stored.byteLength).toBe(bytes);
    expect(gunzipSync(stored).toString()).toBe(Buffer.concat(chunks).toString());
    expect(
      await io.write({ bucket: 'io', key: 'empty' }, [], { contentType: 'text/plain', gzip: false }),
    ).toBe(0);
    expect(await getText(s3, 'empty')).toBe('');
  });

  it('concatenates parts larger than one multipart part into one object', async () => {
    const big = Buffer.alloc(6 * 1024 * 1024, 'a');
    await s3.putObject('io', 'p/1', big);
    await s3.putObject('io', 'p/2', 'tail');
    s3.requests.clear();
    const bytes = await io.concat(
      { bucket: 'io', key: 'joined' },
      [
        { key: 'p/1', bytes: big.byteLength },
        { key: 'p/2', bytes: 4 },
      ],
      'text/plain',
    );
    expect(bytes).toBe(big.byteLength + 4);
    const joined = (await getBytes(s3, 'joined')) as Uint8Array;
    expect(joined.byteLength).toBe(bytes);
    expect(Buffer.from(joined.subarray(-5)).toString()).toBe('atail');
    expect(s3.requests.count('CreateMultipartUpload')).toBe(1);
    expect(s3.requests.count('UploadPart')).toBe(2);
  });

  it('refuses a part that does not hold the bytes its checkpoint says, and leaves no object', async () => {
    // Its own part: the test does not depend on another having written p/2.
    await s3.putObject('io', 'p/2', 'tail');
    const error = await io
      .concat({ bucket: 'io', key: 'broken' }, [{ key: 'p/2', bytes: 5 }], 'text/plain')
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BatchStateError);
    expect((error as Error).message).toBe('the part p/2 holds 4 bytes, its checkpoint says 5');
    expect(await getBytes(s3, 'broken')).toBeUndefined();
  });

  it('deletes keys, missing ones included', async () => {
    await s3.putObject('io', 'd/1', 'x');
    await s3.putObject('io', 'd/2', 'y');
    await io.remove('io', ['d/1', 'd/2', 'd/never']);
    expect(await listKeys(s3, 'd/')).toEqual([]);
  });
});
