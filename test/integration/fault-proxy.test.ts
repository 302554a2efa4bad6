/**
 * The fault-injecting proxy is a fixture other tests trust to break things exactly as asked: each fault is
 * checked here as the real S3 client sees it, through s3rver.
 */
import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../support/s3-server';

const KEY = 'm/1/model.onnx';
const BYTES = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 7) % 251);

let s3: S3Server;
let proxy: FaultProxy;
let etag: string;

beforeAll(async () => {
  s3 = await startS3Server();
  etag = await s3.putObject(s3.bucket, KEY, BYTES);
  proxy = await startFaultProxy(s3.endpoint);
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
});

afterEach(() => {
  proxy.clear();
  proxy.requests.clear();
});

async function get(
  range?: string,
): Promise<{ bytes: Uint8Array; etag: string | undefined; length: number | undefined }> {
  const output = await proxy.client.send(
    new GetObjectCommand({ Bucket: s3.bucket, Key: KEY, ...(range === undefined ? {} : { Range: range }) }),
  );
  const bytes = await (output.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
  return { bytes, etag: output.ETag, length: output.ContentLength };
}

describe('startFaultProxy', () => {
  it('passes requests through unchanged and logs them', async () => {
    const got = await get();
    expect(Buffer.from(got.bytes).equals(Buffer.from(BYTES))).toBe(true);
    expect(got.etag).toBe(etag);
    expect(proxy.log.at(-1)).toEqual({
      method: 'GET',
      key: KEY,
      range: undefined,
      status: 200,
      fault: undefined,
    });
  });

  it('answers an injected 500 once, which the SDK retries', async () => {
    const fault = proxy.inject({ method: 'GET', key: KEY, fault: { kind: 'status', status: 500 } });
    const got = await get();
    expect(got.bytes.length).toBe(BYTES.length);
    expect(fault.hits).toBe(1);
    expect(proxy.requests.count('GetObject', KEY)).toBe(2);
  });

  it('skips the first matching requests and stops after `times`', async () => {
    const fault = proxy.inject({ key: KEY, skip: 1, times: 2, fault: { kind: 'status', status: 503 } });
    await get(); // skipped
    await get(); // two 503s, then the retry gets through
    expect(fault.hits).toBe(2);
    expect(proxy.log.slice(-4).map((r) => r.status)).toEqual([200, 503, 503, 200]);
  });

  it('matches ranged and unranged requests apart', async () => {
    proxy.inject({
      key: KEY,
      ranged: true,
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'status', status: 404, code: 'NoSuchKey' },
    });
    await expect(get()).resolves.toBeDefined();
    await expect(get('bytes=0-99')).rejects.toMatchObject({ name: 'NoSuchKey' });
  });

  it('matches one exact Range, so a fault hits one part of a download', async () => {
    const fault = proxy.inject({
      key: KEY,
      range: 'bytes=100-199',
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'status', status: 404, code: 'NoSuchKey' },
    });
    await expect(get('bytes=0-99')).resolves.toBeDefined();
    await expect(get('bytes=100-199')).rejects.toMatchObject({ name: 'NoSuchKey' });
    expect(fault.hits).toBe(1);
  });

  it('resets the connection mid-body: the headers arrive, the body stream fails', async () => {
    proxy.inject({ key: KEY, fault: { kind: 'reset', after: { fraction: 0.5 } } });
    await expect(get()).rejects.toThrow();
    expect(proxy.log.at(-1)?.fault).toBe('reset');
  });

  it('closes the connection early with the full Content-Length promised', async () => {
    proxy.inject({ key: KEY, fault: { kind: 'close', after: 1000 } });
    await expect(get()).rejects.toThrow();
  });

  it('truncates with a matching Content-Length: the transport sees a complete response', async () => {
    proxy.inject({ key: KEY, fault: { kind: 'truncate', to: { fraction: 0.5 } } });
    const got = await get();
    expect(got.bytes.length).toBe(5000);
    expect(got.length).toBe(5000);
    expect(Buffer.from(got.bytes).equals(Buffer.from(BYTES.subarray(0, 5000)))).toBe(true);
  });

  it('serves other bytes under the real ETag', async () => {
    const other = new Uint8Array(BYTES.length).fill(9);
    proxy.inject({ key: KEY, fault: { kind: 'body', bytes: other } });
    const got = await get();
    expect(got.etag).toBe(etag);
    expect(Buffer.from(got.bytes).equals(Buffer.from(other))).toBe(true);
  });

  it('rewrites headers: a wrong ETag on GET, a lying Content-Length on HEAD', async () => {
    proxy.inject({ method: 'GET', key: KEY, fault: { kind: 'headers', set: { etag: '"other"' } } });
    expect((await get()).etag).toBe('"other"');
    proxy.inject({ method: 'HEAD', key: KEY, fault: { kind: 'headers', set: { 'content-length': '0' } } });
    const head = await proxy.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: KEY }));
    expect(head.ContentLength).toBe(0);
    const honest = await proxy.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: KEY }));
    expect(honest.ContentLength).toBe(BYTES.length);
  });

  it('ends the connection after a body shorter than a Content-Length it was made to promise', async () => {
    proxy.inject({ method: 'GET', key: KEY, fault: { kind: 'headers', set: { 'content-length': '20000' } } });
    await expect(get()).rejects.toThrow();
  });

  it('stalls mid-body: a client with a shorter socket timeout gives up', async () => {
    // The shared clients wait 30 s for the next byte; this one 1 s, against a 10 s stall. On a loaded
    // machine the timeout may already fire before the headers (then the SDK's own retries meet the same
    // stall): either way the read fails, which is what the fault is for.
    const impatient = new S3Client({
      endpoint: proxy.endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: S3RVER_CREDENTIALS,
      requestHandler: { socketTimeout: 1_000 },
    });
    proxy.inject({
      key: KEY,
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'stall', ms: 10_000, after: 100 },
    });
    try {
      const read = impatient
        .send(new GetObjectCommand({ Bucket: s3.bucket, Key: KEY }))
        .then((output) =>
          (output.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
        );
      await expect(read).rejects.toThrow();
    } finally {
      impatient.destroy();
    }
  });
});
