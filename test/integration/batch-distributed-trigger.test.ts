/**
 * One S3 trigger, two engines, end to end: the batch handler on s3rver's own upload events, with the AWS
 * SDK's Step Functions client talking to a local Step Functions endpoint (test/support/step-functions-stub.ts)
 * whose executions run the state machine definition in the local interpreter, on the same handler. Small
 * uploads are scored in the function; an upload at the threshold starts one execution named after its
 * version, however often its event is delivered.
 */
import { SFNClient } from '@aws-sdk/client-sfn';
import { executionName } from '../../shared/core/batch/distributed-trigger';
import type { Manifest } from '../../shared/core/batch/job-state';
import { definition, execute, FUNCTION_ARN } from '../support/asl-interpreter';
import { type S3Server, startS3Server } from '../support/s3-server';
import { type StepFunctionsStub, startStepFunctionsStub } from '../support/step-functions-stub';
import {
  type BatchHarness,
  batchHarness,
  EventLog,
  getText,
  INPUT_PREFIX,
  jsonLines,
  linear,
  listKeys,
  OUTPUT_PREFIX,
  publishLinear,
  upload,
} from './batch-harness';

const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:onnx-serverless-test-batch';
const MIB = 1024 * 1024;
const LINE_BYTES = 1000;
const SHARD_BYTES = 256 * 1024;

interface TriggerAnswer {
  readonly outcomes: readonly { status: string }[];
  readonly scheduled: number;
  readonly distributed?: readonly {
    status: string;
    key: string;
    execution: string;
    alreadyStarted: boolean;
  }[];
}

/** `count` records of `linear`, each line padded with spaces to {@link LINE_BYTES} (valid JSON). */
function paddedInput(count: number): { text: string; rows: number[][] } {
  const rows = Array.from({ length: count }, (_, r) =>
    Array.from({ length: 10 }, (_, i) => (((r + 1) * 31 + i * 7) % 97) / 24 - 2),
  );
  const lines = rows.map((x, r) => JSON.stringify({ id: `r${r}`, x }).padEnd(LINE_BYTES - 1, ' '));
  return { text: `${lines.join('\n')}\n`, rows };
}

let s3: S3Server;
let events: EventLog;
let stub: StepFunctionsStub;
let h: BatchHarness;
/** Executions wait for this before they run, so a test can deliver events while one is RUNNING. */
let gate: Promise<void> = Promise.resolve();

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  await publishLinear(s3);
  stub = await startStepFunctionsStub({
    stateMachineArn: STATE_MACHINE_ARN,
    // The state machine as deployed, on the same function: the Lambda tasks invoke the harness's handler.
    run: async (input) => {
      await gate;
      return execute(
        definition(),
        input,
        {
          invoke: async (functionName, payload) => {
            if (functionName !== FUNCTION_ARN) throw new Error(`invoked ${functionName}`);
            return JSON.parse(JSON.stringify(await h.invoke(payload)));
          },
          getObject: async (bucket, key) => {
            const text = await getText(s3, key);
            if (text === undefined || bucket !== s3.bucket) throw new Error(`S3.NoSuchKey: ${bucket}/${key}`);
            return text;
          },
        },
        [],
      );
    },
  });
  h = await batchHarness(
    s3,
    {
      ONNX_SERVE_BATCH_STATE_MACHINE_ARN: STATE_MACHINE_ARN,
      ONNX_SERVE_BATCH_DISTRIBUTED_MIN_MB: '1',
      ONNX_SERVE_BATCH_SHARD_BYTES: String(SHARD_BYTES),
    },
    {
      stepFunctionsClient: new SFNClient({
        endpoint: stub.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'STUB', secretAccessKey: 'STUB' },
        maxAttempts: 1,
      }),
    },
  );
});

afterAll(async () => {
  await stub?.idle();
  await stub?.close();
  await s3?.close();
});

function starts(): { name: string; input: unknown; status: number; errorType?: string }[] {
  return stub.calls
    .filter((call) => call.operation === 'StartExecution')
    .map((call) => ({
      name: String(call.body.name),
      input: JSON.parse(String(call.body.input)),
      status: call.status,
      ...(call.errorType === undefined ? {} : { errorType: call.errorType }),
    }));
}

describe('the batch trigger', () => {
  it('scores an upload under the threshold in the function and starts no execution', async () => {
    const key = `${INPUT_PREFIX}/linear/small.jsonl`;
    const { text, rows } = paddedInput(20);
    await upload(s3, key, text);
    const before = stub.calls.length;
    const answer = (await h.invoke(events.lastFor(key))) as TriggerAnswer;
    expect(answer.outcomes.map((o) => o.status)).toEqual(['succeeded']);
    expect(answer.distributed).toBeUndefined();
    expect(stub.calls.length).toBe(before);
    const out = jsonLines(await getText(s3, `${OUTPUT_PREFIX}/linear/small.out.jsonl`));
    expect(out.map((line) => line.id)).toEqual(rows.map((_, r) => `r${r}`));
  });

  describe('an upload at the threshold', () => {
    const key = `${INPUT_PREFIX}/linear/large day.jsonl`;
    const { text, rows } = paddedInput(Math.ceil((1.1 * MIB) / LINE_BYTES));
    let release: () => void = () => {};
    let first: TriggerAnswer;
    let again: TriggerAnswer;
    // Seen while the execution is held, so the tests below hold in any order (the last one releases it).
    let writtenWhileHeld: string[];
    let statusesWhileHeld: string[];
    /** This upload's StartExecution calls and executions (other tests start their own). */
    const mine = () => starts().filter((start) => (start.input as { key?: string }).key === key);
    const executionsOfKey = () =>
      [...stub.executions.values()].filter((e) => (JSON.parse(e.input) as { key?: string }).key === key);

    beforeAll(async () => {
      expect(Buffer.byteLength(text)).toBeGreaterThanOrEqual(MIB);
      gate = new Promise((resolve) => {
        release = resolve;
      });
      await upload(s3, key, text);
      first = (await h.invoke(events.lastFor(key))) as TriggerAnswer;
      // The same event again while the execution runs (S3 delivers at least once).
      again = (await h.invoke(events.lastFor(key))) as TriggerAnswer;
      writtenWhileHeld = await listKeys(s3, `${OUTPUT_PREFIX}/linear/large day.`);
      statusesWhileHeld = executionsOfKey().map((e) => e.status);
    });

    afterAll(() => release());

    it('starts one execution, named after the object version, instead of scoring in the function', async () => {
      const { eTag: etag, size } = events.lastFor(key).Records[0]?.s3.object ?? {};
      expect(first.outcomes).toEqual([]);
      expect(first.scheduled).toBe(0);
      expect(h.scheduled).toEqual([]);
      const [started] = first.distributed ?? [];
      expect(started).toMatchObject({ status: 'distributed', key, alreadyStarted: false });
      const name = started?.execution ?? '';
      expect(name).toMatch(/^batch_in_linear_large_day_jsonl-[0-9a-f]{24}$/);
      expect(mine()[0]).toEqual({ name, input: { bucket: s3.bucket, key, etag, size }, status: 200 });
      // Nothing was written for it yet: the execution has not run.
      expect(writtenWhileHeld).toEqual([]);
    });

    it('answers a re-delivered event with the running execution, starting no second one', () => {
      const [one, two] = mine();
      expect(two).toEqual(one);
      expect(again.distributed?.[0]?.execution).toBe(first.distributed?.[0]?.execution);
      expect(statusesWhileHeld).toEqual(['RUNNING']);
    });

    it('runs the state machine over several shards to a committed manifest', async () => {
      release();
      await stub.idle();
      const [execution] = executionsOfKey();
      expect(execution?.status).toBe('SUCCEEDED');
      expect(JSON.parse(execution?.output ?? '{}')).toMatchObject({ status: 'succeeded' });
      const manifest = JSON.parse(
        (await getText(s3, `${OUTPUT_PREFIX}/linear/large day.manifest.json`)) ?? '{}',
      ) as Manifest;
      expect(manifest.counts).toEqual({ read: rows.length, scored: rows.length, failed: 0 });
      expect(new Set(manifest.parts.map((p) => p.shard[0])).size).toBe(
        Math.ceil(Buffer.byteLength(text) / SHARD_BYTES),
      );
      const out = jsonLines(await getText(s3, `${OUTPUT_PREFIX}/linear/large day.out.jsonl`));
      expect(out.map((line) => line.id)).toEqual(rows.map((_, r) => `r${r}`));
      out.forEach((line, r) => {
        const y = (line.outputs as { y: number[] }).y;
        linear(rows[r] ?? []).forEach((value, c) => {
          expect(y[c]).toBeCloseTo(value, 5);
        });
      });
    });

    it('treats ExecutionAlreadyExists for the same input, after the execution ended, as started', async () => {
      release();
      await stub.idle();
      const answer = (await h.invoke(events.lastFor(key))) as TriggerAnswer;
      expect(answer.distributed?.[0]).toMatchObject({
        execution: first.distributed?.[0]?.execution,
        alreadyStarted: true,
      });
      expect(mine().at(-1)).toMatchObject({ status: 400, errorType: 'ExecutionAlreadyExists' });
      expect(stub.calls.at(-1)).toMatchObject({ operation: 'DescribeExecution', status: 200 });
      expect(executionsOfKey()).toHaveLength(1);
    });
  });

  it('fails the invocation when the name is taken by an execution with another input', async () => {
    const key = `${INPUT_PREFIX}/linear/taken.jsonl`;
    await upload(s3, key, paddedInput(Math.ceil((1.1 * MIB) / LINE_BYTES)).text);
    const event = events.lastFor(key);
    const etag = event.Records[0]?.s3.object.eTag ?? '';
    stub.seed(
      executionName({ bucket: s3.bucket, key, etag }),
      JSON.stringify({ bucket: s3.bucket, key: 'other' }),
    );
    const executions = stub.executions.size;
    await expect(h.invoke(event)).rejects.toThrow(/exists with another input/);
    expect(stub.executions.size).toBe(executions);
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/taken.`)).toEqual([]);
  });
});
