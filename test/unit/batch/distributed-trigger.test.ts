import type { BatchConfig } from '../../../shared/core/batch/batch-config';
import type { BatchResult } from '../../../shared/core/batch/batch-job';
import {
  BatchTrigger,
  distributedInput,
  EXECUTION_NAME_MAX,
  type ExecutionRequest,
  type ExecutionStarter,
  executionName,
  goesDistributed,
} from '../../../shared/core/batch/distributed-trigger';
import type { BatchEvent } from '../../../shared/core/batch/events';
import type { ObjectVersionRef } from '../../../shared/core/batch/ports';

const MB = 1024 * 1024;
const CONFIG: BatchConfig = {
  input: { bucket: undefined, prefix: 'in' },
  output: { bucket: undefined, prefix: 'out' },
  partRecords: 3,
  partBytes: MB,
  maxBatchBytes: MB,
  timeMarginMs: 0,
  csvIdColumn: 'id',
  joinInput: false,
  gzipOutput: false,
  parquetOutput: 'parquet',
  parquetCompression: 'snappy',
  parquetRowGroupRows: 122_880,
  shardBytes: 256 * MB,
  maxContinuations: 100,
  stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:batch',
  distributedMinBytes: 100 * MB,
  modelRechecks: 0,
  modelRecheckMs: 0,
};
const CLOCK = { remainingMs: () => 900_000 };
const LARGE: ObjectVersionRef = { bucket: 'data', key: 'in/m/big.jsonl', etag: 'e1', size: 100 * MB };
const SMALL: ObjectVersionRef = { bucket: 'data', key: 'in/m/small.jsonl', etag: 'e2', size: 100 * MB - 1 };
// Step Functions' name rules, and the subset CloudWatch Logs takes too.
const NAME = /^[A-Za-z0-9_-]{1,80}$/;

class RecordingRunner {
  readonly events: BatchEvent[] = [];
  async handle(event: BatchEvent): Promise<BatchResult> {
    this.events.push(event);
    return event.kind === 's3'
      ? { outcomes: event.objects.map(() => ({ status: 'skipped', reason: 'fake' }) as const), scheduled: 0 }
      : { status: 'skipped', reason: 'fake' };
  }
}

class RecordingStarter implements ExecutionStarter {
  readonly requests: ExecutionRequest[] = [];
  async start(request: ExecutionRequest) {
    this.requests.push(request);
    return { executionArn: `arn:execution:${request.name}`, alreadyStarted: this.requests.length > 1 };
  }
}

describe('executionName', () => {
  it('is stable for one object version and differs for another version, key or bucket', () => {
    const name = executionName(LARGE);
    expect(executionName({ ...LARGE })).toBe(name);
    expect(executionName({ ...LARGE, etag: '"e1"' })).toBe(name);
    expect(executionName({ ...LARGE, size: 1 })).toBe(name);
    const others = [
      { ...LARGE, etag: 'e2' },
      { ...LARGE, versionId: 'v1' },
      { ...LARGE, key: 'in/m/big2.jsonl' },
      { ...LARGE, bucket: 'data2' },
    ].map(executionName);
    expect(new Set([name, ...others]).size).toBe(5);
  });

  it('keeps to the characters and the length Step Functions allows, whatever the key', () => {
    const keys = [
      'in/m/day 1.jsonl',
      `in/m/${'é'.repeat(300)}/a?b*c[d]{e}<f>#g%h|i~j\`k$l&m,n;o:p"q\\r.jsonl`,
      'in/m/\u0001\u007f\u009f.csv',
      `in/m/${'x'.repeat(1000)}`,
      'in/m/___',
    ];
    for (const key of keys) {
      const name = executionName({ bucket: 'data', key, etag: 'e' });
      expect(name).toMatch(NAME);
      expect(name.length).toBeLessThanOrEqual(EXECUTION_NAME_MAX);
    }
    expect(executionName({ bucket: 'data', key: 'in/m/day 1.jsonl', etag: 'e' })).toMatch(
      /^in_m_day_1_jsonl-[0-9a-f]{24}$/,
    );
  });
});

describe('goesDistributed', () => {
  it('sends objects of at least the threshold to the state machine, smaller ones to the function', () => {
    expect(goesDistributed(LARGE, CONFIG)).toBe(true);
    expect(goesDistributed(SMALL, CONFIG)).toBe(false);
  });

  it.each([
    ['no state machine is configured', LARGE, { stateMachineArn: undefined }],
    ['the event gives no size', { ...LARGE, size: undefined }, {}],
    ['the event names no version', { bucket: 'data', key: LARGE.key, size: LARGE.size }, {}],
    ['the key is outside the input prefix', { ...LARGE, key: 'out/m/big.jsonl' }, {}],
    ['the key has no model folder', { ...LARGE, key: 'in/big.jsonl' }, {}],
    ['the input is gzip (one shard)', { ...LARGE, key: 'in/m/big.jsonl.gz' }, {}],
    ['the bucket is not the input bucket', LARGE, { input: { bucket: 'other', prefix: 'in' } }],
  ] as const)('keeps an object in the function when %s', (_why, object, patch) => {
    expect(goesDistributed(object as ObjectVersionRef, { ...CONFIG, ...patch } as BatchConfig)).toBe(false);
  });
});

describe('BatchTrigger', () => {
  it('starts the state machine for large objects and hands the rest of the event to the runner', async () => {
    const runner = new RecordingRunner();
    const starter = new RecordingStarter();
    const trigger = new BatchTrigger({ runner, starter, config: CONFIG });
    const event: BatchEvent = { kind: 's3', objects: [SMALL, LARGE], skipped: [] };
    const result = await trigger.handle(event, CLOCK);
    expect(starter.requests).toEqual([
      { name: executionName(LARGE), input: { bucket: 'data', key: LARGE.key, etag: 'e1', size: LARGE.size } },
    ]);
    expect(runner.events).toEqual([{ kind: 's3', objects: [SMALL], skipped: [] }]);
    expect(result).toEqual({
      outcomes: [{ status: 'skipped', reason: 'fake' }],
      scheduled: 0,
      distributed: [
        {
          status: 'distributed',
          key: LARGE.key,
          execution: executionName(LARGE),
          executionArn: `arn:execution:${executionName(LARGE)}`,
          alreadyStarted: false,
        },
      ],
    });
  });

  it('hands continuations and Step Functions states to the runner, large or not', async () => {
    const runner = new RecordingRunner();
    const starter = new RecordingStarter();
    const trigger = new BatchTrigger({ runner, starter, config: CONFIG });
    const events: BatchEvent[] = [
      { kind: 'run', object: LARGE, hop: 1 },
      { kind: 'plan', bucket: 'data', key: LARGE.key },
    ];
    for (const event of events) await trigger.handle(event, CLOCK);
    expect(runner.events).toEqual(events);
    expect(starter.requests).toEqual([]);
  });

  it('scores every object in the function when no state machine is configured', async () => {
    const runner = new RecordingRunner();
    const trigger = new BatchTrigger({ runner, config: { ...CONFIG, stateMachineArn: undefined } });
    const event: BatchEvent = { kind: 's3', objects: [LARGE], skipped: [] };
    expect(await trigger.handle(event, CLOCK)).toEqual({
      outcomes: [{ status: 'skipped', reason: 'fake' }],
      scheduled: 0,
    });
    expect(runner.events).toEqual([event]);
  });

  it('fails the invocation, scoring nothing, when the state machine cannot be started', async () => {
    const runner = new RecordingRunner();
    const starter: ExecutionStarter = {
      start: async () => {
        throw new Error('ThrottlingException');
      },
    };
    const trigger = new BatchTrigger({ runner, starter, config: CONFIG });
    await expect(trigger.handle({ kind: 's3', objects: [LARGE, SMALL], skipped: [] }, CLOCK)).rejects.toThrow(
      'ThrottlingException',
    );
    expect(runner.events).toEqual([]);
  });
});

describe('distributedInput', () => {
  it('is the object as stored with its version, quotes off the ETag', () => {
    expect(distributedInput({ ...LARGE, etag: '"e1"', versionId: 'v1' })).toEqual({
      bucket: 'data',
      key: LARGE.key,
      etag: 'e1',
      versionId: 'v1',
      size: LARGE.size,
    });
  });
});
