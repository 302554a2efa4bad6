import type { EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../shared/adapters/s3-client';
import { makeS3rverWritesDurable } from './s3rver-durable-writes';

/** The part of s3rver's API the harness uses (the package ships no typings). */
interface S3rverInstance extends EventEmitter {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  port: number;
  address: string;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

const S3rver = require('s3rver') as S3rverConstructor;
// Without this, a GET right after a PUT may see the object empty or still old (see the module).
makeS3rverWritesDurable();

/** s3rver's fixed credentials: it checks signatures, so every client of it signs with these. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** One request the SDK sent (each retry counts): the command, its key and its `Range` header. */
export interface RecordedRequest {
  readonly command: string;
  readonly key: string | undefined;
  readonly range: string | undefined;
}

/** What {@link countRequests} records: enough to prove that a cache spared a request. */
export interface RequestLog {
  readonly entries: readonly RecordedRequest[];
  /** Requests of `command` (all when omitted), for `key` when given. */
  count(command?: string, key?: string): number;
  clear(): void;
}

let middlewares = 0;

/**
 * Records every HTTP request `client` sends, retries included, by adding a middleware to its stack.
 *
 * @example
 * const log = countRequests(client);
 * await store.readConfig('linear');
 * expect(log.count('GetObject')).toBe(1);
 */
export function countRequests(client: S3Client): RequestLog {
  const entries: RecordedRequest[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Key?: string };
      const request = (args as { request?: { headers?: Record<string, string> } }).request;
      entries.push({
        command: commandName(context.commandName),
        key: input.Key,
        range: request?.headers?.range,
      });
      return next(args);
    },
    // The deserialize step runs once per attempt, inside the retry loop of finalizeRequest.
    { step: 'deserialize', name: `countRequests${++middlewares}` },
  );
  return {
    entries,
    count: (command, key) =>
      entries.filter(
        (entry) =>
          (command === undefined || entry.command === command) && (key === undefined || entry.key === key),
      ).length,
    clear: () => {
      entries.length = 0;
    },
  };
}

function commandName(name: string | undefined): string {
  return (name ?? 'unknown').replace(/Command$/, '');
}

/** A running s3rver with one bucket, and a client to it whose requests are counted. */
export interface S3Server {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  /** Counted in {@link S3Server.requests}. */
  readonly client: S3Client;
  readonly bucket: string;
  readonly requests: RequestLog;
  /** The s3rver instance: it emits AWS-shaped S3 event records as `'event'`. */
  readonly events: EventEmitter;
  /** Stores `bytes` under `key` through a client of its own, so the upload is not counted. Returns the ETag. */
  putObject(bucket: string, key: string, bytes: Uint8Array | string): Promise<string>;
  close(): Promise<void>;
}

/** Starts s3rver in-process on a free loopback port, with data in a fresh temporary folder. */
export async function startS3Server(options: { bucket?: string } = {}): Promise<S3Server> {
  const bucket = options.bucket ?? 'models';
  const directory = await mkdtemp(join(tmpdir(), 's3rver-'));
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  const client = createS3Client({ endpoint, credentials: S3RVER_CREDENTIALS });
  const uploader = createS3Client({ endpoint, credentials: S3RVER_CREDENTIALS });
  const requests = countRequests(client);
  return {
    endpoint,
    client,
    bucket,
    requests,
    events: server,
    async putObject(target, key, bytes) {
      const output = await uploader.send(new PutObjectCommand({ Bucket: target, Key: key, Body: bytes }));
      return output.ETag ?? '';
    },
    async close() {
      client.destroy();
      uploader.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
