/** An in-memory fake of the batch door's own object-store port, for unit tests of the core. */
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { InputChangedError, InputMismatchError } from '../../../shared/core/batch/errors';
import type {
  BatchObjectStore,
  ExpectedObject,
  ObjectInfo,
  ObjectRef,
  ReadOptions,
  StoredPart,
  WriteOptions,
} from '../../../shared/core/batch/ports';

interface Stored {
  readonly bytes: Uint8Array;
  readonly etag: string;
  readonly contentEncoding?: string;
}

export class MemoryObjectStore implements BatchObjectStore {
  readonly objects = new Map<string, Stored>();
  /** Every mutation, in order: `put <key>`, `delete <key>`. */
  readonly log: string[] = [];
  /** Throws this from the next call of the named method whose key matches. */
  failures: { method: string; key: RegExp; error: Error }[] = [];
  /** Bytes per chunk handed out by `read`. */
  chunkSize = 7;
  /**
   * Reads of a key matching `key` end this many bytes early, as a broken adapter that took a cut body
   * for a whole one would.
   */
  shortReads: { key: RegExp; bytes: number } | undefined;

  set(bucket: string, key: string, bytes: Uint8Array | string, contentEncoding?: string): string {
    const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
    const etag = createHash('md5').update(data).digest('hex');
    this.objects.set(`${bucket}/${key}`, {
      bytes: data,
      etag,
      ...(contentEncoding === undefined ? {} : { contentEncoding }),
    });
    return etag;
  }

  text(bucket: string, key: string): string | undefined {
    const stored = this.objects.get(`${bucket}/${key}`);
    return stored === undefined ? undefined : Buffer.from(stored.bytes).toString('utf8');
  }

  keys(prefix = ''): string[] {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  async head(ref: ObjectRef): Promise<ObjectInfo | undefined> {
    this.#maybeFail('head', ref.key);
    const stored = this.objects.get(`${ref.bucket}/${ref.key}`);
    if (stored === undefined) return undefined;
    return {
      size: stored.bytes.byteLength,
      etag: stored.etag,
      contentEncoding: stored.contentEncoding,
      versionId: undefined,
    };
  }

  read(ref: ObjectRef, options: ReadOptions = {}): AsyncIterable<Uint8Array> {
    const self = this;
    return (async function* () {
      self.#maybeFail('read', ref.key);
      const stored = self.objects.get(`${ref.bucket}/${ref.key}`);
      if (stored === undefined) throw new Error(`no object ${ref.key}`);
      const bytes = options.gunzip === true ? new Uint8Array(gunzipSync(stored.bytes)) : stored.bytes;
      const short = self.shortReads?.key.test(ref.key) === true ? self.shortReads.bytes : 0;
      const end = Math.min(options.end ?? bytes.byteLength, bytes.byteLength - short);
      for (let at = options.start ?? 0; at < end; at += self.chunkSize) {
        yield bytes.slice(at, Math.min(end, at + self.chunkSize));
      }
    })();
  }

  async verify(ref: ObjectRef, expected: ExpectedObject): Promise<void> {
    this.#maybeFail('verify', ref.key);
    const stored = this.objects.get(`${ref.bucket}/${ref.key}`);
    if (stored === undefined || (expected.etag !== undefined && expected.etag !== stored.etag)) {
      throw new InputChangedError(`the input '${ref.key}' was replaced or deleted`);
    }
    if (expected.size !== undefined && expected.size !== stored.bytes.byteLength) {
      throw new InputMismatchError(`the sizes of the input '${ref.key}' disagree`);
    }
  }

  async getText(ref: ObjectRef): Promise<string | undefined> {
    this.#maybeFail('getText', ref.key);
    return this.text(ref.bucket, ref.key);
  }

  async putText(ref: ObjectRef, text: string): Promise<void> {
    this.#maybeFail('putText', ref.key);
    this.log.push(`put ${ref.key}`);
    this.set(ref.bucket, ref.key, text);
  }

  async write(
    ref: ObjectRef,
    chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
    options: WriteOptions,
  ): Promise<number> {
    this.#maybeFail('write', ref.key);
    const parts: Uint8Array[] = [];
    for await (const chunk of chunks) parts.push(chunk);
    const joined = Buffer.concat(parts);
    const bytes = options.gzip ? gzipSync(joined) : joined;
    this.log.push(`put ${ref.key}`);
    this.set(ref.bucket, ref.key, bytes);
    return bytes.byteLength;
  }

  async concat(target: ObjectRef, sources: readonly StoredPart[]): Promise<number> {
    this.#maybeFail('concat', target.key);
    const parts = sources.map((s) => {
      const stored = this.objects.get(`${target.bucket}/${s.key}`);
      if (stored?.bytes.byteLength !== s.bytes) throw new Error(`part ${s.key} changed`);
      return stored.bytes;
    });
    const bytes = Buffer.concat(parts);
    this.log.push(`put ${target.key}`);
    this.set(target.bucket, target.key, bytes);
    return bytes.byteLength;
  }

  async remove(bucket: string, keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      this.log.push(`delete ${key}`);
      this.objects.delete(`${bucket}/${key}`);
    }
  }

  #maybeFail(method: string, key: string): void {
    const index = this.failures.findIndex((f) => f.method === method && f.key.test(key));
    if (index === -1) return;
    const [failure] = this.failures.splice(index, 1);
    throw failure?.error;
  }
}
