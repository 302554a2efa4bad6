/**
 * The batch door through a fault-injecting proxy (test/support/fault-proxy.ts) in front of s3rver, with the
 * real onnxruntime-node: an input is never committed from fewer bytes than it holds, a broken read is
 * resumed, disagreements between the event, HEAD and GET fail the invocation (Lambda retries it) without a
 * manifest, and only terminal failures write a `failed` one.
 */
import { gzipSync } from 'node:zlib';
import type { JobOutcome } from '../../shared/core/batch/batch-job';
import type { Manifest } from '../../shared/core/batch/job-state';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type BatchHarness,
  batchHarness,
  dataset,
  EventLog,
  getText,
  INPUT_PREFIX,
  listKeys,
  MODEL_PREFIX,
  OUTPUT_PREFIX,
  publishLinear,
  type S3Event,
  upload,
} from './batch-harness';

let s3: S3Server;
let proxy: FaultProxy;
let events: EventLog;

/** Parts of 500 records; a missing model is re-read twice, 10 ms apart, before the job fails. */
const ENV = {
  ONNX_SERVE_BATCH_PART_RECORDS: '500',
  ONNX_SERVE_BATCH_MODEL_RECHECKS: '2',
  ONNX_SERVE_BATCH_MODEL_RECHECK_MS: '10',
};
const data = dataset(4_000, 7);
const SIZE = Buffer.byteLength(data.text);
const CONFIG_KEY = `${MODEL_PREFIX}/linear/config.json`;

/** The outputs of a run with no fault, which every faulty run must reproduce byte for byte. */
let clean: { out: string; errors: string; counts: Manifest['counts'] };

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  await publishLinear(s3);
  proxy = await startFaultProxy(s3.endpoint);
  const h = await harness();
  const outcome = outcomeOf(await put(h, 'clean'));
  expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 4_000 } });
  const got = await outputs('clean');
  clean = { out: got.out ?? '', errors: got.errors ?? '', counts: (got.manifest as Manifest).counts };
  expect(clean.counts).toEqual({ read: 4_000, scored: 3_960, failed: 40 });
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
});

afterEach(() => {
  proxy.clear();
});

/** A fresh batch runtime (cold registry and caches) whose every S3 request goes through the proxy. */
function harness(env: Record<string, string> = {}): Promise<BatchHarness> {
  return batchHarness(s3, { ...ENV, ...env }, { client: proxy.client });
}

const inputKey = (name: string, ext = 'jsonl') => `${INPUT_PREFIX}/linear/${name}.${ext}`;

/** Uploads the data set as `name` (around the proxy) and invokes the handler with s3rver's event for it. */
async function put(h: BatchHarness, name: string, body: string | Uint8Array = data.text, ext = 'jsonl') {
  await upload(s3, inputKey(name, ext), body);
  return h.invoke(events.lastFor(inputKey(name, ext)));
}

function outcomeOf(result: unknown): JobOutcome {
  const outcomes = (result as { outcomes: JobOutcome[] }).outcomes;
  expect(outcomes).toHaveLength(1);
  return outcomes[0] as JobOutcome;
}

async function outputs(name: string) {
  const base = `${OUTPUT_PREFIX}/linear/${name}`;
  const manifest = await getText(s3, `${base}.manifest.json`);
  return {
    out: await getText(s3, `${base}.out.jsonl`),
    errors: await getText(s3, `${base}.errors.jsonl`),
    manifest: manifest === undefined ? undefined : (JSON.parse(manifest) as Manifest),
  };
}

/** The job committed `succeeded` with exactly the clean run's outputs. */
async function expectClean(name: string): Promise<void> {
  const got = await outputs(name);
  expect(got.manifest).toMatchObject({ status: 'succeeded', counts: clean.counts, input: { size: SIZE } });
  // Compared as strings first would print 300 KB on failure: compare lengths, then bytes.
  expect(got.out?.length).toBe(clean.out.length);
  expect(got.out === clean.out).toBe(true);
  expect(got.errors === clean.errors).toBe(true);
}

/** The invocation failed (so Lambda retries it) and nothing was committed. */
async function expectRetryable(invocation: Promise<unknown>, name: string, error: RegExp): Promise<void> {
  await expect(invocation).rejects.toThrow(error);
  expect(await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.manifest.json`)).toBeUndefined();
  expect(await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.out.jsonl`)).toBeUndefined();
}

/** GETs of `key` the proxy saw (since entry `since` of its log), as `range|status|fault`. */
function gets(key: string, since = 0): string[] {
  return proxy.log
    .slice(since)
    .filter((r) => r.method === 'GET' && r.key === key)
    .map((r) => `${r.range ?? 'all'}|${r.status}|${r.fault ?? ''}`);
}

describe('batch input reads through a faulty network', () => {
  it('resumes an input GET cut at half with a Content-Length that agrees, to the output of a clean run', async () => {
    const h = await harness();
    const key = inputKey('truncated');
    proxy.inject({ method: 'GET', key, ranged: false, fault: { kind: 'truncate', to: { fraction: 0.5 } } });
    expect(outcomeOf(await put(h, 'truncated')).status).toBe('succeeded');
    await expectClean('truncated');
    // The rest was read with a ranged GET from the first byte not yet read.
    const half = Math.floor(SIZE / 2);
    expect(gets(key)).toContain(`bytes=${half}-|206|`);
  });

  it('resumes after a reset and after an early close mid-body, the resumed request included', async () => {
    const h = await harness();
    const key = inputKey('broken');
    proxy.inject({ method: 'GET', key, ranged: false, fault: { kind: 'reset', after: { fraction: 0.4 } } });
    proxy.inject({ method: 'GET', key, ranged: true, fault: { kind: 'close', after: { fraction: 0.5 } } });
    expect(outcomeOf(await put(h, 'broken')).status).toBe('succeeded');
    await expectClean('broken');
    expect(gets(key).filter((g) => g.endsWith('|reset') || g.endsWith('|close'))).toHaveLength(2);
  });

  it('resumes the compressed bytes of a gzip input cut mid-body, to the same records', async () => {
    const h = await harness();
    const key = inputKey('zipped', 'jsonl.gz');
    proxy.inject({ method: 'GET', key, ranged: false, fault: { kind: 'reset', after: { fraction: 0.5 } } });
    proxy.inject({ method: 'GET', key, ranged: true, fault: { kind: 'truncate', to: { fraction: 0.5 } } });
    expect(outcomeOf(await put(h, 'zipped', gzipSync(data.text), 'jsonl.gz')).status).toBe('succeeded');
    const got = await outputs('zipped');
    expect(got.manifest).toMatchObject({ status: 'succeeded', counts: clean.counts, input: { gzip: true } });
    expect(got.out === clean.out).toBe(true);
    expect(got.errors === clean.errors).toBe(true);
  });

  it('fails the invocation, committing nothing, while the input stays short; a re-delivery then scores it', async () => {
    const h = await harness();
    const key = inputKey('short');
    proxy.inject({ method: 'GET', key, times: Number.POSITIVE_INFINITY, fault: { kind: 'truncate', to: 0 } });
    await upload(s3, key, data.text);
    const event = events.lastFor(key);
    await expectRetryable(h.invoke(event), 'short', /could not be read whole/);
    proxy.clear();
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('short');
  });

  it.each([
    ['0', '0'],
    ['half the size', String(Math.floor(SIZE / 2))],
    ['twice the size', String(SIZE * 2)],
  ])(
    'fails the invocation when HEAD answers a Content-Length of %s, then scores the re-delivered event',
    async (_, length) => {
      const h = await harness();
      const name = `head-${length}`;
      const key = inputKey(name);
      const fault = proxy.inject({
        method: 'HEAD',
        key,
        times: Number.POSITIVE_INFINITY,
        fault: { kind: 'headers', set: { 'content-length': length } },
      });
      await upload(s3, key, data.text);
      const event = events.lastFor(key);
      await expectRetryable(h.invoke(event), name, /disagree/);
      expect(fault.hits).toBeGreaterThan(0);
      proxy.clear();
      expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
      await expectClean(name);
    },
  );

  it('fails the invocation when HEAD and GET agree but the event says another size', async () => {
    const h = await harness();
    const key = inputKey('event-size');
    await upload(s3, key, data.text);
    const event = events.lastFor(key);
    for (const size of [SIZE - 1, SIZE + 1, 0]) {
      const wrong = structuredClone(event) as S3Event;
      (wrong.Records[0] as S3Event['Records'][number]).s3.object.size = size;
      await expectRetryable(h.invoke(wrong), 'event-size', /disagree/);
    }
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('event-size');
  });

  it('fails the invocation when HEAD names another ETag than the event while GET serves the event ETag', async () => {
    const h = await harness();
    const key = inputKey('head-etag');
    proxy.inject({
      method: 'HEAD',
      key,
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'headers', set: { etag: '"0123456789abcdef0123456789abcdef"' } },
    });
    await upload(s3, key, data.text);
    const event = events.lastFor(key);
    await expectRetryable(h.invoke(event), 'head-etag', /disagree/);
    proxy.clear();
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
  });

  it('stops a read whose GET answers another ETag than the job pinned, committing nothing', async () => {
    const h = await harness();
    const key = inputKey('get-etag');
    proxy.inject({
      method: 'GET',
      key,
      ranged: false,
      times: Number.POSITIVE_INFINITY,
      fault: { kind: 'headers', set: { etag: '"0123456789abcdef0123456789abcdef"' } },
    });
    await upload(s3, key, data.text);
    const event = events.lastFor(key);
    await expectRetryable(h.invoke(event), 'get-etag', /replaced|disagree/);
    proxy.clear();
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('get-etag');
  });
});

describe('batch failures: retryable ones throw, terminal ones write a failed manifest', () => {
  it('re-reads config.json that answered 404 once, bypassing the missing-name cache, and scores', async () => {
    const h = await harness();
    proxy.inject({
      method: 'GET',
      key: CONFIG_KEY,
      fault: { kind: 'status', status: 404, code: 'NoSuchKey' },
    });
    const before = proxy.log.length;
    expect(outcomeOf(await put(h, 'config-404')).status).toBe('succeeded');
    await expectClean('config-404');
    expect(gets(CONFIG_KEY, before).map((g) => g.split('|')[1])).toEqual(['404', '200']);
    // A re-delivered event of the committed version does nothing.
    const again = outcomeOf(await h.invoke(events.lastFor(inputKey('config-404'))));
    expect(again).toMatchObject({ status: 'skipped' });
  });

  it('re-reads a model file that answered 404 once, and scores', async () => {
    const h = await harness();
    const model = `${MODEL_PREFIX}/linear/1/model.onnx`;
    proxy.inject({ key: model, fault: { kind: 'status', status: 404, code: 'NoSuchKey' } });
    expect(outcomeOf(await put(h, 'model-404')).status).toBe('succeeded');
    await expectClean('model-404');
  });

  it('throws on config.json failing past the SDK retries (503), writing no manifest; the re-delivered event scores', async () => {
    const h = await harness();
    const fault = proxy.inject({
      method: 'GET',
      key: CONFIG_KEY,
      times: 3,
      fault: { kind: 'status', status: 503 },
    });
    await upload(s3, inputKey('config-503'), data.text);
    const event = events.lastFor(inputKey('config-503'));
    await expectRetryable(h.invoke(event), 'config-503', /config\.json/);
    expect(fault.hits).toBe(3);
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('config-503');
  });

  it('throws on part writes failing past the SDK retries (500); the re-delivered event resumes to the same output', async () => {
    const h = await harness();
    // The third part's result object: two parts are checkpointed before the failure.
    const part = /\.parts\/[^/]+\/all\/000002\.out\.jsonl$/;
    const fault = proxy.inject({
      method: 'PUT',
      key: part,
      times: 3,
      fault: { kind: 'status', status: 500 },
    });
    await upload(s3, inputKey('write-500'), data.text);
    const event = events.lastFor(inputKey('write-500'));
    await expectRetryable(h.invoke(event), 'write-500', /./);
    expect(fault.hits).toBe(3);
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('write-500');
    expect((await outputs('write-500')).manifest?.timings.invocations).toBe(2);
  });

  it('throws on the manifest write failing past the SDK retries; the re-delivered event commits', async () => {
    const h = await harness();
    const manifest = `${OUTPUT_PREFIX}/linear/manifest-500.manifest.json`;
    proxy.inject({ method: 'PUT', key: manifest, times: 3, fault: { kind: 'status', status: 500 } });
    await upload(s3, inputKey('manifest-500'), data.text);
    const event = events.lastFor(inputKey('manifest-500'));
    await expect(h.invoke(event)).rejects.toThrow();
    expect(await getText(s3, manifest)).toBeUndefined();
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    await expectClean('manifest-500');
  });

  it('fails a job whose model does not exist after the re-reads with a manifest, and skips its re-delivery', async () => {
    const h = await harness();
    const key = `${INPUT_PREFIX}/ghost/day.jsonl`;
    await upload(s3, key, '[1, 2]\n');
    const event = events.lastFor(key);
    const before = proxy.log.length;
    const outcome = outcomeOf(await h.invoke(event));
    expect(outcome).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
    // Read once, then re-read twice (ONNX_SERVE_BATCH_MODEL_RECHECKS), past the registry's missing-name cache.
    const reads = proxy.log.slice(before).filter((r) => r.key === `${MODEL_PREFIX}/ghost/config.json`);
    expect(reads.map((r) => r.status)).toEqual([404, 404, 404]);
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/ghost/`)).toEqual([
      `${OUTPUT_PREFIX}/ghost/day.manifest.json`,
    ]);
    expect(outcomeOf(await h.invoke(event))).toMatchObject({ status: 'skipped' });
  });

  it('fails a gzip input that is not valid gzip with an unsupported_input manifest and no output', async () => {
    const h = await harness();
    const bytes = gzipSync(data.text);
    bytes.fill(0x55, 200, 400);
    const outcome = outcomeOf(await put(h, 'corrupt', bytes, 'jsonl.gz'));
    expect(outcome).toMatchObject({ status: 'failed', error: { code: 'unsupported_input' } });
    const got = await outputs('corrupt');
    expect(got.manifest).toMatchObject({
      status: 'failed',
      error: { message: expect.stringMatching(/gzip/) },
    });
    expect(got.out).toBeUndefined();
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/corrupt.`)).toEqual([
      `${OUTPUT_PREFIX}/linear/corrupt.manifest.json`,
    ]);
  });
});
