import type { BatchConfig } from '../../../shared/core/batch/batch-config';
import { BatchJobRunner, type JobOutcome, type PlanOutcome } from '../../../shared/core/batch/batch-job';
import {
  BatchStateError,
  InputMismatchError,
  InputReadError,
  UnsupportedInputError,
} from '../../../shared/core/batch/errors';
import {
  CHECKPOINT_FORMAT,
  type Checkpoint,
  checkpointKey,
  type Manifest,
  parseCheckpoint,
} from '../../../shared/core/batch/job-state';
import type { ContinuationPayload } from '../../../shared/core/batch/ports';
import { ModelLoadError } from '../../../shared/core/errors';
import { InferenceService } from '../../../shared/core/inference-service';
import { ModelCache } from '../../../shared/core/model-cache';
import { ModelLoader } from '../../../shared/core/model-loader';
import { ModelRegistry } from '../../../shared/core/model-registry';
import type { ModelSignature } from '../../../shared/core/tensor';
import { DOUBLER_SIGNATURE, FakeEngine, FakeStore } from '../../support/fakes';
import { MemoryObjectStore } from './memory-object-store';

const BUCKET = 'data';
const CONFIG: BatchConfig = {
  input: { bucket: undefined, prefix: 'in' },
  output: { bucket: undefined, prefix: 'out' },
  partRecords: 3,
  partBytes: 1 << 20,
  maxBatchBytes: 1 << 20,
  timeMarginMs: 0,
  csvIdColumn: 'id',
  joinInput: false,
  gzipOutput: false,
  parquetOutput: 'parquet',
  parquetCompression: 'snappy',
  parquetRowGroupRows: 122_880,
  shardBytes: 40,
  maxContinuations: 100,
  stateMachineArn: undefined,
  distributedMinBytes: 1 << 30,
  modelRechecks: 2,
  modelRecheckMs: 0,
};
const ENOUGH = { remainingMs: () => 900_000 };
const NONE = { remainingMs: () => 0 };

/** 20 records of the doubler (`x` [batch, 2]), two of them bad, one blank line. */
const INPUT = Array.from({ length: 22 }, (_, i) =>
  i === 5
    ? '{"x": [1, "two"]}'
    : i === 11
      ? ''
      : i === 17
        ? 'oops'
        : `{"id": "r${i}", "x": [${i}, ${i + 0.5}]}`,
).join('\n');

function setup(config: Partial<BatchConfig> = {}, signature: ModelSignature = DOUBLER_SIGNATURE) {
  const models = new FakeStore();
  models.addVersion('doubler', '1', Buffer.from('doubler-v1'), { maxBatchSize: 4 });
  const engine = new FakeEngine(signature);
  const registry = new ModelRegistry({ store: models, configTtlMs: 60_000 });
  const service = new InferenceService({
    registry,
    cache: new ModelCache({ maxBytes: 1 << 30 }),
    loader: new ModelLoader({ store: models, engine }),
    limits: { maxTensorElements: 1 << 20 },
  });
  const objects = new MemoryObjectStore();
  const queue: ContinuationPayload[] = [];
  /** Pauses the runner asked for; `onSleep` runs in each (e.g. the model appears). */
  const sleeps: number[] = [];
  const hooks: { onSleep?: () => void } = {};
  const runner = new BatchJobRunner({
    store: objects,
    registry,
    service,
    continuation: { schedule: async (payload) => void queue.push(payload) },
    config: { ...CONFIG, ...config },
    limits: { maxTensorElements: 1 << 20, maxLineBytes: 1 << 16 },
    now: () => Date.UTC(2026, 0, 1),
    sleep: async (ms) => {
      sleeps.push(ms);
      hooks.onSleep?.();
    },
  });
  return { models, engine, objects, queue, runner, sleeps, hooks };
}

type Setup = ReturnType<typeof setup>;

/** Runs the object's job and every continuation it schedules, each with the given clock. */
async function runToEnd(s: Setup, key: string, clock = ENOUGH): Promise<JobOutcome[]> {
  const outcomes = [await s.runner.runObject({ bucket: BUCKET, key }, clock)];
  for (let next = s.queue.shift(); next !== undefined; next = s.queue.shift()) {
    const { object, hop } = next.onnxServerlessBatch;
    outcomes.push(await s.runner.runObject(object, clock, hop));
  }
  return outcomes;
}

const manifestOf = (s: Setup, name: string) =>
  JSON.parse(s.objects.text(BUCKET, `out/doubler/${name}.manifest.json`) ?? 'null') as Manifest;

describe('BatchJobRunner', () => {
  describe('runObject', () => {
    it("takes a dim 0 where the model's config.json emptyDims allows it, as the doors do, and refuses it elsewhere", async () => {
      const s = setup(
        {},
        { ...DOUBLER_SIGNATURE, inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }] },
      );
      s.models.addVersion('seq', '1', Buffer.from('seq-v1'), { maxBatchSize: 4, emptyDims: { x: [1] } });
      s.models.addVersion('strict', '1', Buffer.from('strict-v1'), { maxBatchSize: 4 });
      const input = '{"id": "empty", "x": []}\n{"id": "two", "x": [1, 2]}\n';
      s.objects.set(BUCKET, 'in/seq/a.jsonl', input);
      s.objects.set(BUCKET, 'in/strict/a.jsonl', input);

      const [allowed] = await runToEnd(s, 'in/seq/a.jsonl');
      expect(allowed).toMatchObject({ status: 'succeeded', counts: { read: 2, scored: 2, failed: 0 } });
      expect(s.objects.text(BUCKET, 'out/seq/a.out.jsonl')).toContain('{"id":"empty","outputs":{"y":[]}}');

      const [refused] = await runToEnd(s, 'in/strict/a.jsonl');
      expect(refused).toMatchObject({ status: 'succeeded', counts: { read: 2, scored: 1, failed: 1 } });
      expect(s.objects.text(BUCKET, 'out/strict/a.errors.jsonl')).toContain(
        "input 'x': dim 1 is 0 (an empty tensor, shape [1,0]); this model does not take empty dims there",
      );
    });

    it('scores every good record once, files every bad one with its line, and commits a manifest', async () => {
      const s = setup();
      const etag = s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const [outcome] = await runToEnd(s, 'in/doubler/a.jsonl');
      expect(outcome).toEqual({
        status: 'succeeded',
        manifest: 'out/doubler/a.manifest.json',
        counts: { read: 21, scored: 19, failed: 2 },
      });
      const out = (s.objects.text(BUCKET, 'out/doubler/a.out.jsonl') ?? '').trim().split('\n');
      expect(out).toHaveLength(19);
      expect(out[0]).toBe('{"id":"r0","outputs":{"y":[0,1]}}');
      expect(out[5]).toBe('{"id":"r6","outputs":{"y":[12,13]}}');
      const errors = (s.objects.text(BUCKET, 'out/doubler/a.errors.jsonl') ?? '')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(errors.map((e) => [e.line, e.id, e.error.code])).toEqual([
        [6, 6, 'invalid_input'],
        [18, 18, 'invalid_input'],
      ]);
      const manifest = manifestOf(s, 'a');
      expect(manifest).toMatchObject({
        status: 'succeeded',
        input: { bucket: BUCKET, key: 'in/doubler/a.jsonl', etag, format: 'jsonl', gzip: false },
        model: { name: 'doubler', version: '1' },
        counts: { read: 21, scored: 19, failed: 2 },
        timings: { invocations: 1 },
      });
      expect(manifest.parts.map((p) => [p.firstLine, p.lastLine, p.read])).toEqual([
        [1, 3, 3],
        [4, 6, 3],
        [7, 9, 3],
        [10, 13, 3],
        [14, 16, 3],
        [17, 19, 3],
        [20, 22, 3],
      ]);
      // The work folder is gone: only the three results remain.
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([
        `${BUCKET}/out/doubler/a.errors.jsonl`,
        `${BUCKET}/out/doubler/a.manifest.json`,
        `${BUCKET}/out/doubler/a.out.jsonl`,
      ]);
      // The manifest is written after the results it commits.
      const puts = s.objects.log.filter((l) => l.startsWith('put out/doubler/a.'));
      expect(puts.at(-1)).toBe('put out/doubler/a.manifest.json');
    });

    it('stops at a part boundary when time is short, and a continuation resumes to the same result', async () => {
      const whole = setup();
      whole.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await runToEnd(whole, 'in/doubler/a.jsonl');

      const resumed = setup();
      resumed.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const outcomes = await runToEnd(resumed, 'in/doubler/a.jsonl', NONE);
      // One part per invocation (a first part is always done), then one to commit.
      expect(outcomes.map((o) => o.status)).toEqual([...Array(7).fill('continued'), 'succeeded']);
      expect(outcomes[2]).toEqual({ status: 'continued', hop: 3, parts: 3 });
      for (const file of ['out', 'errors']) {
        expect(resumed.objects.text(BUCKET, `out/doubler/a.${file}.jsonl`)).toBe(
          whole.objects.text(BUCKET, `out/doubler/a.${file}.jsonl`),
        );
      }
      expect(manifestOf(resumed, 'a').timings.invocations).toBe(8);
    });

    it('resumes exactly after a crash between a part and its checkpoint', async () => {
      const whole = setup();
      whole.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await runToEnd(whole, 'in/doubler/a.jsonl');

      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      expect(await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, NONE)).toMatchObject({
        status: 'continued',
        parts: 1,
      });
      const continuation = s.queue.shift() as ContinuationPayload;
      // Part 2 is written, then its checkpoint is lost: the invocation fails and Lambda retries it.
      s.objects.failures.push({ method: 'putText', key: /checkpoint/, error: new Error('socket hang up') });
      const { object, hop } = continuation.onnxServerlessBatch;
      await expect(s.runner.runObject(object, ENOUGH, hop)).rejects.toThrow('socket hang up');
      expect(
        s.objects.keys(`${BUCKET}/out/doubler/a.parts/`).filter((k) => k.endsWith('.out.jsonl')),
      ).toHaveLength(2);
      const outcomes = [await s.runner.runObject(object, ENOUGH, hop)];
      expect(outcomes.at(-1)?.status).toBe('succeeded');
      expect(s.objects.text(BUCKET, 'out/doubler/a.out.jsonl')).toBe(
        whole.objects.text(BUCKET, 'out/doubler/a.out.jsonl'),
      );
      expect(manifestOf(s, 'a').counts).toEqual({ read: 21, scored: 19, failed: 2 });
    });

    it.each([
      ['not JSON', '{"format": "onnx-serverless-batch-checkpoint'],
      ['not a checkpoint', '{"hello": "world"}'],
      ['incomplete', JSON.stringify({ format: CHECKPOINT_FORMAT, done: false })],
    ])(
      'fails the job for good on a checkpoint that does not parse (%s), and a re-run starts afresh',
      async (_, text) => {
        const s = setup();
        s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
        const object = { bucket: BUCKET, key: 'in/doubler/a.jsonl' };
        expect((await s.runner.runObject(object, NONE)).status).toBe('continued');
        const key = (
          s.objects.keys(`${BUCKET}/out/`).find((k) => k.endsWith('checkpoint.json')) as string
        ).slice(BUCKET.length + 1);
        s.objects.set(BUCKET, key, text);

        // Thrown, it would fail every retry the same way and end in the failure queue.
        const outcome = await s.runner.runObject(object, ENOUGH, 1);
        expect(outcome).toMatchObject({
          status: 'failed',
          error: { code: 'batch_state_unreadable', message: expect.stringContaining(key) },
        });
        expect(manifestOf(s, 'a')).toMatchObject({
          status: 'failed',
          error: { code: 'batch_state_unreadable' },
        });
        expect(s.objects.text(BUCKET, key)).toBeUndefined();
        expect(await s.runner.runObject(object, ENOUGH)).toMatchObject({ status: 'skipped' });

        // As docs/batch.md says: delete the manifest and deliver the event again.
        await s.objects.remove(BUCKET, ['out/doubler/a.manifest.json']);
        const [again] = await runToEnd(s, 'in/doubler/a.jsonl');
        expect(again).toMatchObject({ status: 'succeeded', counts: { read: 21, scored: 19, failed: 2 } });
      },
    );

    it('does nothing for a re-delivered event of a committed version', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await runToEnd(s, 'in/doubler/a.jsonl');
      const writes = s.objects.log.length;
      const again = await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, ENOUGH);
      expect(again).toEqual({
        status: 'skipped',
        reason: 'already committed (succeeded): out/doubler/a.manifest.json',
      });
      expect(s.objects.log).toHaveLength(writes);
    });

    it('runs again for a new version of the object', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await runToEnd(s, 'in/doubler/a.jsonl');
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', '[1, 1]\n');
      const [outcome] = await runToEnd(s, 'in/doubler/a.jsonl');
      expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 1, scored: 1, failed: 0 } });
    });

    it('skips an event whose object was replaced since', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const outcome = await s.runner.runObject(
        { bucket: BUCKET, key: 'in/doubler/a.jsonl', etag: 'older' },
        ENOUGH,
      );
      expect(outcome).toEqual({ status: 'skipped', reason: 'the object was replaced since the event' });
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([]);
    });

    it('fails the invocation, committing nothing, when the store hands over fewer bytes than the input holds', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      // A store that took a cut body for a whole one: the last 30 bytes never come.
      s.objects.shortReads = { key: /^in\//, bytes: 30 };
      const error = await s.runner
        .runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, ENOUGH)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InputReadError);
      expect((error as Error).message).toBe(
        `the input 'in/doubler/a.jsonl' ended at byte ${INPUT.length - 30} of ${INPUT.length}: nothing is scored from a partial read`,
      );
      expect(s.objects.keys(`${BUCKET}/out/doubler/a.`).filter((k) => !k.includes('.parts/'))).toEqual([]);
      // The store mends; the re-delivered event resumes from the checkpoint to the whole input.
      s.objects.shortReads = undefined;
      const [outcome] = await runToEnd(s, 'in/doubler/a.jsonl');
      expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 21, scored: 19, failed: 2 } });
    });

    it.each([
      ['the event says another size', { size: INPUT.length - 1 }],
      ['the event says size 0', { size: 0 }],
    ])('fails the invocation, writing nothing, when %s than HEAD', async (_, extra) => {
      const s = setup();
      const etag = s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await expect(
        s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl', etag, ...extra }, ENOUGH),
      ).rejects.toThrow(
        new InputMismatchError(
          `the sizes of the input 'in/doubler/a.jsonl' disagree: the event says ${extra.size} bytes, HEAD says ${INPUT.length}`,
        ),
      );
      expect(s.objects.log).toEqual([]);
    });

    it('fails the invocation when HEAD disagrees with a GET of the version it pins', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      s.objects.failures.push({
        method: 'verify',
        key: /a\.jsonl$/,
        error: new InputMismatchError('the sizes disagree'),
      });
      await expect(
        s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, ENOUGH),
      ).rejects.toBeInstanceOf(InputMismatchError);
      expect(s.objects.log).toEqual([]);
    });

    it('ignores keys outside the input prefix and writes nothing', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'out/doubler/a.out.jsonl', '{}');
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'out/doubler/a.out.jsonl' }, ENOUGH);
      expect(outcome).toEqual({ status: 'ignored', reason: "the key is outside the input prefix 'in/'" });
      expect(s.objects.log).toEqual([]);
    });

    it('fails with a clear manifest, and no output, when the model does not exist', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/nosuch@3/a.jsonl', INPUT);
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'in/nosuch@3/a.jsonl' }, ENOUGH);
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([`${BUCKET}/out/nosuch/a.manifest.json`]);
      const manifest = JSON.parse(s.objects.text(BUCKET, 'out/nosuch/a.manifest.json') ?? '') as Manifest;
      expect(manifest).toMatchObject({
        status: 'failed',
        model: { name: 'nosuch', version: '3' },
        counts: { read: 0, scored: 0, failed: 0 },
        error: { code: 'model_not_found', message: "model 'nosuch' not found" },
      });
      expect(manifest.outputs).toBeUndefined();
    });

    it('reads a missing model again, past the registry caches, and scores once it appears', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/late/a.jsonl', INPUT);
      s.hooks.onSleep = () => {
        if (s.sleeps.length === 2)
          s.models.addVersion('late', '1', Buffer.from('late-v1'), { maxBatchSize: 4 });
      };
      const [outcome] = await runToEnd(s, 'in/late/a.jsonl');
      expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 21, scored: 19, failed: 2 } });
      // modelRecheckMs 0 in these tests: the pauses double from there.
      expect(s.sleeps).toEqual([0, 0]);
      expect(s.models.count('config:late')).toBe(3);
    });

    it('fails with model_not_found only after its re-reads, and skips the re-delivered event', async () => {
      const s = setup({ modelRecheckMs: 100 });
      s.objects.set(BUCKET, 'in/nosuch/a.jsonl', INPUT);
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'in/nosuch/a.jsonl' }, ENOUGH);
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
      expect(s.sleeps).toEqual([100, 200]);
      expect(s.models.count('config:nosuch')).toBe(3);
      const again = await s.runner.runObject({ bucket: BUCKET, key: 'in/nosuch/a.jsonl' }, ENOUGH);
      expect(again).toMatchObject({ status: 'skipped' });
    });

    it('fails a started job on a terminal error with a manifest, deleting the parts it wrote', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const first = await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, NONE);
      expect(first).toMatchObject({ status: 'continued' });
      expect(s.objects.keys(`${BUCKET}/out/doubler/a.parts/`).length).toBeGreaterThan(1);
      s.objects.failures.push({
        method: 'read',
        key: /a\.jsonl$/,
        error: new UnsupportedInputError('the input is not a valid gzip stream'),
      });
      const next = s.queue.shift()?.onnxServerlessBatch;
      const outcome = await s.runner.runObject(
        next?.object ?? { bucket: BUCKET, key: '' },
        ENOUGH,
        next?.hop,
      );
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'unsupported_input' } });
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([`${BUCKET}/out/doubler/a.manifest.json`]);
      expect(manifestOf(s, 'a')).toMatchObject({
        status: 'failed',
        model: { name: 'doubler', version: '1' },
      });
    });

    it('throws, writing no manifest, when the model cannot be loaded now (a retry may succeed)', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      s.engine.failNext = new Error('out of memory');
      await expect(
        s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, ENOUGH),
      ).rejects.toBeInstanceOf(ModelLoadError);
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([]);
    });

    it('fails a job that needs more continuations than allowed', async () => {
      const s = setup({ maxContinuations: 2 });
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const outcomes = await runToEnd(s, 'in/doubler/a.jsonl', NONE);
      expect(outcomes.map((o) => o.status)).toEqual(['continued', 'continued', 'continued', 'failed']);
      expect(manifestOf(s, 'a')).toMatchObject({
        status: 'failed',
        error: { code: 'too_many_continuations' },
      });
    });

    it('fails a CSV input for a model that is not tabular, before scoring anything', async () => {
      const pair: ModelSignature = {
        inputs: [
          { name: 'x', datatype: 'FP32', shape: [-1, 2] },
          { name: 'b', datatype: 'FP32', shape: [-1, 2] },
        ],
        outputs: DOUBLER_SIGNATURE.outputs,
      };
      const s = setup({}, pair);
      s.objects.set(BUCKET, 'in/doubler/t.csv', 'a,b\n1,2\n');
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/t.csv' }, ENOUGH);
      expect(outcome).toMatchObject({ status: 'failed', error: { code: 'unsupported_input' } });
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([`${BUCKET}/out/doubler/t.manifest.json`]);
    });

    it('fails a Parquet input in a runtime without a Parquet codec, instead of reading it as lines', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/t.parquet', 'PAR1\n{"x": [1, 2]}\nPAR1');
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/t.parquet' }, ENOUGH);
      expect(outcome).toMatchObject({
        status: 'failed',
        error: { code: 'unsupported_input', message: expect.stringContaining('Parquet') },
      });
      expect(s.objects.keys(`${BUCKET}/out/`)).toEqual([`${BUCKET}/out/doubler/t.manifest.json`]);
    });

    it('scores CSV rows, naming the header line 1 and failing rows that do not fit', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/t.csv', 'id,a,b\nr1,1,2\nr2,1,2,3\n\nr4,3,4');
      const outcome = await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/t.csv' }, ENOUGH);
      expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 3, scored: 2, failed: 1 } });
      expect(s.objects.text(BUCKET, 'out/doubler/t.out.jsonl')).toBe(
        '{"id":"r1","outputs":{"y":[2,4]}}\n{"id":"r4","outputs":{"y":[6,8]}}\n',
      );
      expect(JSON.parse(s.objects.text(BUCKET, 'out/doubler/t.errors.jsonl') ?? '')).toMatchObject({
        line: 3,
        id: 'r2',
        error: { message: 'the row has 4 fields but the header has 3' },
      });
    });
  });

  describe('Step Functions states', () => {
    async function planned(s: Setup, key: string): Promise<Extract<PlanOutcome, { status: 'ready' }>> {
      const plan = await s.runner.plan({ bucket: BUCKET, key });
      if (plan.status !== 'ready') throw new Error(`not planned: ${JSON.stringify(plan)}`);
      return plan;
    }

    it('plans byte-range shards with the newlines before each, as a JSON array of items', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const plan = await planned(s, 'in/doubler/a.jsonl');
      const items = JSON.parse(s.objects.text(plan.items.bucket, plan.items.key) ?? '[]');
      expect(items.length).toBe(Math.ceil(INPUT.length / 40));
      expect(items[0]).toEqual({
        bucket: BUCKET,
        key: 'in/doubler/a.jsonl',
        range: [0, 40],
        newlinesBefore: 0,
      });
      for (const item of items) {
        expect(item.newlinesBefore).toBe(INPUT.slice(0, item.range[0]).split('\n').length - 1);
      }
      expect(items.at(-1).range[1]).toBeNull();
    });

    it('scores shards cut anywhere into a union equal to a single run', async () => {
      const single = setup();
      single.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      await runToEnd(single, 'in/doubler/a.jsonl');

      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const { job } = await planned(s, 'in/doubler/a.jsonl');
      // Cuts at a line start, inside lines, on a newline and past the last byte; no newline counts given.
      const lineStart = INPUT.indexOf('\n', 100) + 1;
      const cuts = [0, 17, lineStart, lineStart + 1, INPUT.indexOf('\n', 250), 300, INPUT.length + 5];
      const items = cuts.slice(0, -1).map((start, i) => ({
        bucket: BUCKET,
        key: 'in/doubler/a.jsonl',
        range: [start, i === cuts.length - 2 ? null : (cuts[i + 1] as number)] as [number, number | null],
      }));
      expect(await s.runner.scoreShards(job, items, ENOUGH)).toEqual({ done: true, shards: 6, finished: 6 });
      const union: string[] = [];
      const errors: string[] = [];
      for (const item of items) {
        const shard = { start: item.range[0], end: item.range[1] };
        const checkpoint = parseCheckpoint(
          s.objects.text(BUCKET, checkpointKey(job.output.work, shard)) ?? '',
        );
        for (const part of checkpoint.parts) {
          if (part.out !== undefined) union.push(s.objects.text(BUCKET, part.out.key) ?? '');
          if (part.errors !== undefined) errors.push(s.objects.text(BUCKET, part.errors.key) ?? '');
        }
      }
      expect(union.join('')).toBe(single.objects.text(BUCKET, 'out/doubler/a.out.jsonl'));
      expect(errors.join('')).toBe(single.objects.text(BUCKET, 'out/doubler/a.errors.jsonl'));
    });

    it('answers done: false when time runs short, and finishes when invoked again', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const plan = await planned(s, 'in/doubler/a.jsonl');
      const items = JSON.parse(s.objects.text(BUCKET, plan.items.key) ?? '[]');
      const first = await s.runner.scoreShards(plan.job, items, NONE);
      expect(first).toEqual({ done: false, shards: items.length, finished: 1 });
      let rounds = 1;
      while (!(await s.runner.scoreShards(plan.job, items, NONE)).done) rounds++;
      expect(rounds).toBeGreaterThan(1);
      const outcome = await s.runner.commitShards(plan.job);
      expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 21, scored: 19, failed: 2 } });
    });

    it('fails the job for good when a shard checkpoint does not parse, scoring or committing', async () => {
      for (const stage of ['score', 'commit'] as const) {
        const s = setup();
        s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
        const plan = await planned(s, 'in/doubler/a.jsonl');
        const items = JSON.parse(s.objects.text(BUCKET, plan.items.key) ?? '[]');
        await s.runner.scoreShards(plan.job, items.slice(0, 1), ENOUGH);
        const key = (
          s.objects.keys(`${BUCKET}/out/`).find((k) => k.endsWith('checkpoint.json')) as string
        ).slice(BUCKET.length + 1);
        s.objects.set(BUCKET, key, 'garbage');
        const outcome =
          stage === 'score'
            ? await s.runner.scoreShards(plan.job, items, ENOUGH)
            : await s.runner.commitShards(plan.job);
        if (stage === 'score') expect(outcome).toMatchObject({ done: true });
        else expect(outcome).toMatchObject({ status: 'failed', error: { code: 'batch_state_unreadable' } });
        expect(manifestOf(s, 'a')).toMatchObject({
          status: 'failed',
          error: { code: 'batch_state_unreadable' },
        });
        expect(s.objects.text(BUCKET, key)).toBeUndefined();
      }
    });

    it('refuses to commit while a shard is not done', async () => {
      const s = setup();
      s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
      const plan = await planned(s, 'in/doubler/a.jsonl');
      const items = JSON.parse(s.objects.text(BUCKET, plan.items.key) ?? '[]');
      await s.runner.scoreShards(plan.job, items.slice(0, 1), ENOUGH);
      await expect(s.runner.commitShards(plan.job)).rejects.toBeInstanceOf(BatchStateError);
      await expect(s.runner.commitShards(plan.job)).rejects.toThrow(
        /shard \[40, 80\) of 'in\/doubler\/a.jsonl' is not done/,
      );
    });
  });

  it('keeps the model version resolved at the start for every continuation', async () => {
    const s = setup();
    s.objects.set(BUCKET, 'in/doubler/a.jsonl', INPUT);
    await s.runner.runObject({ bucket: BUCKET, key: 'in/doubler/a.jsonl' }, NONE);
    s.models.addVersion('doubler', '2', Buffer.from('doubler-v2'), { maxBatchSize: 4 });
    const checkpointText = [...s.objects.objects.entries()].find(([k]) => k.endsWith('checkpoint.json'))?.[1];
    const checkpoint = JSON.parse(Buffer.from(checkpointText?.bytes ?? []).toString()) as Checkpoint;
    expect(checkpoint.job.model.version).toBe('1');
    for (let next = s.queue.shift(); next !== undefined; next = s.queue.shift()) {
      await s.runner.runObject(next.onnxServerlessBatch.object, ENOUGH, next.onnxServerlessBatch.hop);
    }
    expect(manifestOf(s, 'a').model.version).toBe('1');
  });
});
