/** The batch door's S3 adapter against s3rver on loopback. */
import { gunzipSync, gzipSync } from 'node:zlib';
import { S3ObjectIo } from '../../shared/adapters/s3-object-io';
import { BatchStateError, InputChangedError } from '../../shared/core/batch/errors';
import { type S3Server, startS3Server } from '../support/s3-server';
import { getBytes, getText, listKeys } from './batch-harness';

let s3: S3Server;
let io: S3ObjectIo;
const TEXT = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'io' });
  io = new S3ObjectIo({ client: s3.client });
  await s3.putObject('io', 'plain.txt', TEXT);
  await s3.putObject('io', 'zipped.gz', gzipSync(TEXT));
});

afterAll(async () => {
  await s3.close();
});

async function read(key: string, options: Parameters<S3ObjectIo['read']>[1]): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of io.read({ bucket: 'io', key }, options)) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

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
