/**
 * s3rver 3.7.1 acknowledges a PUT before the object's bytes are on disk: its filesystem store resolves
 * `putObject` (and `putPart`) when the request body has gone *through* its md5 transform, not when the
 * write stream behind it has finished. On a busy machine a GET sent right after the PUT's answer then finds
 * the file still truncated (an empty object, Content-Length 0) or still holding the old bytes, which S3's
 * read-after-write consistency rules out. Seen here: 6 of 3,000 PUT-then-GET pairs of a 1 kB object came
 * back empty with eight busy loops on two cores; it made a test that re-uploads a fixed model flaky.
 *
 * {@link makeS3rverWritesDurable} replaces those two methods of s3rver's store with ones that answer only
 * once the bytes are written, and that replace an object atomically (a temporary file renamed over it, with
 * its md5 and metadata written first under a per-object lock that GETs also take), so a reader sees the
 * old object or the new one, never a mixture.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** The part of s3rver's FilesystemStore this replaces or calls (the package ships no typings). */
interface StoreObject {
  readonly bucket: string;
  readonly key: string;
  readonly content: Readable | Buffer;
  readonly metadata: Record<string, string>;
}
interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
  getObject(bucket: string, key: string, options?: unknown): Promise<unknown>;
  putObject(object: StoreObject): Promise<{ size: number; md5: string }>;
  putPart(
    bucket: string,
    uploadId: string,
    partNumber: number,
    content: Readable,
  ): Promise<{ size: number; md5: string }>;
}

const PATCHED = Symbol.for('onnx-serverless.s3rver-durable-writes');

/** Per-object lock: a GET never opens an object between its md5 being written and its bytes renamed in. */
const locks = new Map<string, Promise<unknown>>();

async function locked<T>(path: string, work: () => Promise<T>): Promise<T> {
  const previous = locks.get(path) ?? Promise.resolve();
  const next = previous.then(work, work);
  const tail = next.catch(() => undefined);
  locks.set(path, tail);
  try {
    return await next;
  } finally {
    if (locks.get(path) === tail) locks.delete(path);
  }
}

/** Streams `content` into a new file at `path`, resolving once every byte is written and the file closed. */
async function writeDurably(
  content: Readable | Buffer,
  path: string,
): Promise<{ size: number; md5: string }> {
  const md5 = createHash('md5');
  let size = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      md5.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  const source = Buffer.isBuffer(content) ? Readable.from([content]) : content;
  await pipeline(source, count, createWriteStream(path, { flags: 'wx' }));
  return { size, md5: md5.digest('hex') };
}

/** Patches s3rver's FilesystemStore once per module registry (jest gives each test file its own). */
export function makeS3rverWritesDurable(): void {
  const Store = require('s3rver/lib/stores/filesystem') as { prototype: FilesystemStore } & {
    [PATCHED]?: true;
  };
  if (Store[PATCHED] === true) return;
  Store[PATCHED] = true;
  const proto = Store.prototype;
  const getObject = proto.getObject;

  proto.getObject = function (this: FilesystemStore, bucket, key, options) {
    return locked(this.getResourcePath(bucket, key, 'object'), () =>
      getObject.call(this, bucket, key, options),
    );
  };

  proto.putObject = async function (this: FilesystemStore, object) {
    const path = this.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(dirname(path), { recursive: true });
    const temporary = `${path}.${randomBytes(6).toString('hex')}.uploading`;
    try {
      const written = await writeDurably(object.content, temporary);
      await locked(path, async () => {
        await this.putMetadata(object.bucket, object.key, object.metadata, written.md5);
        await rename(temporary, path);
      });
      return written;
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  };

  proto.putPart = async function (this: FilesystemStore, bucket, uploadId, partNumber, content) {
    const path = join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId, String(partNumber));
    await mkdir(dirname(path), { recursive: true });
    const temporary = `${path}.${randomBytes(6).toString('hex')}.uploading`;
    try {
      const written = await writeDurably(content, temporary);
      await rename(temporary, path);
      await writeFile(`${path}.md5`, written.md5);
      return written;
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  };
}
