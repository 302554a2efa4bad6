/**
 * The Step Functions definition in functions/batch/state-machine.asl.json, run locally: a small
 * interpreter of the subset of the Amazon States Language it uses (test/support/asl-interpreter.ts) drives
 * the real batch handler against s3rver, child executions running at once. The union of the shards must
 * equal a single run.
 */

import aslValidator from 'asl-validator';
import type { Context } from 'aws-lambda';
import type { JobOutcome } from '../../shared/core/batch/batch-job';
import type { Manifest } from '../../shared/core/batch/job-state';
import {
  definition,
  execute,
  FUNCTION_ARN,
  type Json,
  type Services,
  type StateMachine,
} from '../support/asl-interpreter';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy';
import { expectClose } from '../support/golden';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type BatchHarness,
  batchHarness,
  budgetContext,
  dataset,
  EventLog,
  getText,
  INPUT_PREFIX,
  jsonLines,
  listKeys,
  OUTPUT_PREFIX,
  publishLinear,
  upload,
} from './batch-harness';

let s3: S3Server;
let events: EventLog;
let proxy: FaultProxy;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  await publishLinear(s3);
  proxy = await startFaultProxy(s3.endpoint);
});

afterAll(async () => {
  await proxy.close();
  await s3.close();
});

/** Runs the state machine with the handler as its Lambda function; each invocation gets `context()`. */
async function runStateMachine(
  h: BatchHarness,
  input: unknown,
  context: () => Context = () => budgetContext(() => 900_000),
) {
  const trace: string[] = [];
  const invocations: unknown[] = [];
  const services: Services = {
    invoke: async (functionName, payload) => {
      expect(functionName).toBe(FUNCTION_ARN);
      invocations.push(payload);
      // Through JSON both ways, as Lambda and Step Functions pass them.
      return JSON.parse(JSON.stringify(await h.invoke(payload, context())));
    },
    getObject: async (bucket, key) => {
      const text = await getText(s3, key);
      if (text === undefined || bucket !== s3.bucket) throw new Error(`S3.NoSuchKey: ${bucket}/${key}`);
      return text;
    },
  };
  const output = await execute(definition(), input, services, trace);
  return { output, trace, invocations };
}

describe('the batch state machine (Distributed Map over byte-range shards)', () => {
  it('is valid Amazon States Language (asl-validator), its substitution applied', () => {
    const { isValid, errorsText } = aslValidator(definition());
    expect(errorsText('\n')).toBe('');
    expect(isValid).toBe(true);
    const broken = definition() as unknown as { States: Record<string, Json> };
    delete broken.States.Commit?.End;
    expect(aslValidator(broken).isValid).toBe(false);
  });

  it('is a Distributed Map over the plan, whose every Lambda task is the batch function', () => {
    const machine = definition();
    const states = Object.entries(machine.States);
    const map = machine.States['Score shards'] as Json;
    expect(map).toMatchObject({
      Type: 'Map',
      ItemProcessor: { ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' } },
      ItemReader: { Resource: 'arn:aws:states:::s3:getObject', ReaderConfig: { InputType: 'JSON' } },
      ItemBatcher: { MaxItemsPerBatch: expect.any(Number), BatchInput: { 'job.$': '$.planned.plan.job' } },
      ToleratedFailurePercentage: 0,
    });
    const inner = Object.entries((map.ItemProcessor as StateMachine).States);
    for (const [, state] of [...states, ...inner]) {
      if (state.Type === 'Task') {
        expect(state.Resource).toBe('arn:aws:states:::lambda:invoke');
        expect((state.Parameters as Json).FunctionName).toBe(FUNCTION_ARN);
      }
    }
    // The function answers terminal failures and throws only retryable ones: every task retries them all.
    for (const [, state] of [...states, ...inner]) {
      if (state.Type === 'Task') {
        expect(state.Retry).toEqual([expect.objectContaining({ ErrorEquals: ['States.TaskFailed'] })]);
      }
    }
    const names = new Set([...states, ...inner].map(([name]) => name));
    for (const [, state] of [...states, ...inner]) {
      for (const next of [
        state.Next,
        state.Default,
        ...((state.Choices as Json[] | undefined) ?? []).map((c) => c.Next),
      ]) {
        if (next !== undefined) expect(names).toContain(next);
      }
    }
  });

  describe('on 6,000 records with 1% malformed lines', () => {
    const data = dataset(6_000, 5);
    const env = { ONNX_SERVE_BATCH_PART_RECORDS: '500', ONNX_SERVE_BATCH_SHARD_BYTES: String(32 * 1024) };
    let single: { out: string; errors: string; manifest: Manifest };

    beforeAll(async () => {
      const h = await batchHarness(s3, env);
      const key = `${INPUT_PREFIX}/linear/single.jsonl`;
      await upload(s3, key, data.text);
      const result = (await h.invoke(events.lastFor(key))) as { outcomes: readonly JobOutcome[] };
      expect(result.outcomes[0]?.status).toBe('succeeded');
      single = {
        out: (await getText(s3, `${OUTPUT_PREFIX}/linear/single.out.jsonl`)) ?? '',
        errors: (await getText(s3, `${OUTPUT_PREFIX}/linear/single.errors.jsonl`)) ?? '',
        manifest: JSON.parse((await getText(s3, `${OUTPUT_PREFIX}/linear/single.manifest.json`)) ?? '{}'),
      };
    });

    async function expectUnionEqualsSingle(name: string) {
      const out = (await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.out.jsonl`)) ?? '';
      const errors = (await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.errors.jsonl`)) ?? '';
      const lines = jsonLines(out);
      const expected = jsonLines(single.out);
      // The same records, each once, in input order; no duplicate and no gap.
      expect(lines.map((l) => l.id)).toEqual(expected.map((l) => l.id));
      expect(new Set(lines.map((l) => JSON.stringify(l.id))).size).toBe(data.good.size);
      lines.forEach((line, i) => {
        const want = (expected[i]?.outputs as { y: number[] } | undefined)?.y ?? [];
        expectClose((line.outputs as { y: number[] }).y, want, { atol: 1e-6, rtol: 1e-6 });
      });
      expect(errors).toBe(single.errors);
      const manifest = JSON.parse(
        (await getText(s3, `${OUTPUT_PREFIX}/linear/${name}.manifest.json`)) ?? '{}',
      ) as Manifest;
      expect(manifest.status).toBe('succeeded');
      expect(manifest.counts).toEqual(single.manifest.counts);
      expect(manifest.counts).toEqual({ read: 6_000, scored: 5_940, failed: 60 });
      // Parts cover the input once: each starts where the one before ended.
      const ranges = manifest.parts.map((p) => [p.start, p.end] as const);
      ranges.forEach(([start], i) => {
        expect(start).toBe(i === 0 ? 0 : ranges[i - 1]?.[1]);
      });
      expect(ranges.at(-1)?.[1]).toBe(Buffer.byteLength(data.text));
      return manifest;
    }

    it('scores the shards of a plan in parallel children into a union equal to a single run', async () => {
      const h = await batchHarness(s3, env);
      const key = `${INPUT_PREFIX}/linear/sharded.jsonl`;
      await upload(s3, key, data.text);
      const { output, trace } = await runStateMachine(h, { bucket: s3.bucket, key });
      expect(output).toMatchObject({
        status: 'succeeded',
        counts: { read: 6_000, scored: 5_940, failed: 60 },
      });
      const shards = Math.ceil(Buffer.byteLength(data.text) / (32 * 1024));
      expect(trace.filter((s) => s === 'Score a batch of shards')).toHaveLength(Math.ceil(shards / 4));
      const manifest = await expectUnionEqualsSingle('sharded');
      expect(new Set(manifest.parts.map((p) => p.shard[0])).size).toBe(shards);
      // The plan, the shard list, checkpoints and parts are gone after the commit.
      expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/sharded.`)).toEqual([
        `${OUTPUT_PREFIX}/linear/sharded.errors.jsonl`,
        `${OUTPUT_PREFIX}/linear/sharded.manifest.json`,
        `${OUTPUT_PREFIX}/linear/sharded.out.jsonl`,
      ]);
    });

    it('loops a child whose time runs short until its shards are done, to the same union', async () => {
      const h = await batchHarness(s3, {
        ...env,
        ONNX_SERVE_BATCH_PART_RECORDS: '100',
        ONNX_SERVE_BATCH_TIME_MARGIN_MS: '60000',
      });
      const key = `${INPUT_PREFIX}/linear/short.jsonl`;
      await upload(s3, key, data.text);
      // 60 s of margin and 30 s left: every invocation does one part, then answers done: false.
      const { trace } = await runStateMachine(h, { bucket: s3.bucket, key }, () =>
        budgetContext(() => 30_000),
      );
      const shards = Math.ceil(Buffer.byteLength(data.text) / (32 * 1024));
      // A shard holds about 400 records: four parts, so about four invocations per shard.
      expect(trace.filter((s) => s === 'Score a batch of shards').length).toBeGreaterThan(3 * shards);
      await expectUnionEqualsSingle('short');
    });

    it('retries a plan whose HEAD lied about the size, and resumes shard reads cut short, to the same union', async () => {
      const h = await batchHarness(s3, env, { client: proxy.client });
      const key = `${INPUT_PREFIX}/linear/faulty.jsonl`;
      await upload(s3, key, data.text);
      // HEAD says 0 bytes once: without the GET's word a plan would pin an empty job and commit it.
      proxy.inject({ method: 'HEAD', key, fault: { kind: 'headers', set: { 'content-length': '0' } } });
      // Three ranged reads (shards, the plan's newline count) end at half with a Content-Length that agrees.
      const cut = proxy.inject({
        method: 'GET',
        key,
        ranged: true,
        skip: 2,
        times: 3,
        fault: { kind: 'truncate', to: { fraction: 0.5 } },
      });
      try {
        const { output, trace } = await runStateMachine(h, { bucket: s3.bucket, key });
        expect(output).toMatchObject({ status: 'succeeded' });
        expect(trace.slice(0, 3)).toEqual(['Plan', 'retry InputMismatchError', 'Ready to score?']);
        expect(cut.hits).toBe(3);
        await expectUnionEqualsSingle('faulty');
      } finally {
        proxy.clear();
      }
    });

    it('checks what the execution input says the S3 event said: another size fails the plan, a replaced ETag ends it', async () => {
      const h = await batchHarness(s3, env);
      const key = `${INPUT_PREFIX}/linear/facts.jsonl`;
      await upload(s3, key, data.text);
      const { eTag: etag, size } = events.lastFor(key).Records[0]?.s3.object ?? {};
      expect(size).toBe(Buffer.byteLength(data.text));
      // Retried by the Plan state's Retry, to no avail: the execution fails and nothing is committed.
      await expect(
        runStateMachine(h, { bucket: s3.bucket, key, etag, size: (size ?? 0) + 1 }),
      ).rejects.toThrow(/the event says \d+ bytes, HEAD says \d+/);
      expect(await getText(s3, `${OUTPUT_PREFIX}/linear/facts.manifest.json`)).toBeUndefined();
      const stale = await runStateMachine(h, { bucket: s3.bucket, key, etag: 'f'.repeat(32), size });
      expect(stale.output).toEqual({ status: 'skipped', reason: 'the object was replaced since the event' });
      const { output } = await runStateMachine(h, { bucket: s3.bucket, key, etag, size });
      expect(output).toMatchObject({ status: 'succeeded', counts: { read: 6_000 } });
    });

    it('ends without scoring when the input was already committed', async () => {
      const h = await batchHarness(s3, env);
      const { output, trace } = await runStateMachine(h, {
        bucket: s3.bucket,
        key: `${INPUT_PREFIX}/linear/single.jsonl`,
      });
      expect(output).toEqual({
        status: 'skipped',
        reason: `already committed (succeeded): ${OUTPUT_PREFIX}/linear/single.manifest.json`,
      });
      expect(trace).toEqual(['Plan', 'Ready to score?', 'Nothing to score']);
    });
  });

  it('ends with a failed manifest and no output when the model does not exist', async () => {
    const h = await batchHarness(s3);
    const key = `${INPUT_PREFIX}/absent/x.jsonl`;
    await upload(s3, key, '[1]\n');
    const { output, trace } = await runStateMachine(h, { bucket: s3.bucket, key });
    expect(output).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
    expect(trace).toEqual(['Plan', 'Ready to score?', 'Nothing to score']);
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/absent/`)).toEqual([
      `${OUTPUT_PREFIX}/absent/x.manifest.json`,
    ]);
  });
});
