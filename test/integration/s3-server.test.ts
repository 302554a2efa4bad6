/**
 * The s3rver fixture keeps S3's read-after-write consistency (test/support/s3rver-durable-writes.ts): a PUT
 * is answered only once its bytes are on disk, and a GET during a PUT sees the old object whole.
 */
import { WriteStream } from 'node:fs';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { deferred } from '../support/fakes';
import { type S3Server, startS3Server } from '../support/s3-server';

let s3: S3Server;

beforeAll(async () => {
  s3 = await startS3Server();
});

afterAll(async () => {
  await s3.close();
});

afterEach(() => {
  jest.restoreAllMocks();
});

async function read(key: string): Promise<string> {
  const output = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  return (await output.Body?.transformToString('utf-8')) ?? '';
}

/** Holds every file-stream write until `open()`; `held` settles when the first one is waiting. */
function holdFileWrites(): { held: Promise<void>; open: () => void } {
  const gate = deferred();
  const held = deferred();
  for (const method of ['_write', '_writev'] as const) {
    const original = WriteStream.prototype[method] as (...args: unknown[]) => void;
    jest.spyOn(WriteStream.prototype, method).mockImplementation(function (this: WriteStream, ...args) {
      held.resolve();
      void gate.promise.then(() => original.apply(this, args));
    });
  }
  return { held: held.promise, open: gate.resolve };
}

describe('the s3rver fixture', () => {
  it('answers a PUT only once the bytes are written, and serves the old object whole meanwhile', async () => {
    const key = 'consistency/1/model.onnx';
    await s3.putObject(s3.bucket, key, 'old bytes');
    const writes = holdFileWrites();
    let answered = false;
    const put = s3.putObject(s3.bucket, key, 'new bytes, longer').then(() => {
      answered = true;
    });
    await writes.held;

    expect(await read(key)).toBe('old bytes');
    expect(answered).toBe(false);

    writes.open();
    await put;
    expect(await read(key)).toBe('new bytes, longer');
  });
});
