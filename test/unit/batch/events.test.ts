import { InvalidBatchEventError } from '../../../shared/core/batch/errors';
import { readBatchEvent } from '../../../shared/core/batch/events';
import type { JobSpec } from '../../../shared/core/batch/job-state';

const JOB: JobSpec = {
  input: { bucket: 'data', key: 'in/m/a.jsonl', etag: 'e1', size: 100, format: 'jsonl', gzip: false },
  model: { name: 'm', version: '1', sha256: 'f'.repeat(64), maxBatchSize: 8 },
  output: {
    bucket: 'data',
    out: 'out/m/a.out.jsonl',
    errors: 'out/m/a.errors.jsonl',
    manifest: 'out/m/a.manifest.json',
    work: 'out/m/a.parts/e1',
    gzip: false,
  },
  settings: {
    partRecords: 10,
    partBytes: 1 << 20,
    maxBatchBytes: 1 << 20,
    maxLineBytes: 1 << 20,
    joinInput: false,
    csvIdColumn: 'id',
  },
  startedAt: '2026-01-01T00:00:00.000Z',
};

const s3Record = (eventName: string, key: string, extra: Record<string, unknown> = {}) => ({
  eventVersion: '2.1',
  eventSource: 'aws:s3',
  eventName,
  s3: { bucket: { name: 'data' }, object: { key, size: 3, eTag: 'abc', sequencer: '1', ...extra } },
});

describe('readBatchEvent', () => {
  it('reads S3 object creations with decoded keys and sets other records aside', () => {
    const event = readBatchEvent({
      Records: [
        s3Record('ObjectCreated:Put', 'in/m/my+file%2B1.jsonl', { versionId: 'v7' }),
        s3Record('ObjectRemoved:Delete', 'in/m/old.jsonl'),
      ],
    });
    expect(event).toEqual({
      kind: 's3',
      objects: [{ bucket: 'data', key: 'in/m/my file+1.jsonl', etag: 'abc', versionId: 'v7', size: 3 }],
      skipped: [{ eventName: 'ObjectRemoved:Delete', key: 'in/m/old.jsonl' }],
    });
  });

  it('keeps the size of an S3 record only when it is a byte count', () => {
    for (const size of [-1, 1.5, '3', null]) {
      const event = readBatchEvent({ Records: [s3Record('ObjectCreated:Put', 'in/m/a.jsonl', { size })] });
      expect(event).toMatchObject({ objects: [{ key: 'in/m/a.jsonl' }] });
      expect((event as unknown as { objects: object[] }).objects[0]).not.toHaveProperty('size');
    }
  });

  it('reads a continuation, with the size of the object when it has one', () => {
    expect(
      readBatchEvent({
        onnxServerlessBatch: { action: 'run', object: { bucket: 'b', key: 'k', etag: 'e' }, hop: 2 },
      }),
    ).toEqual({ kind: 'run', object: { bucket: 'b', key: 'k', etag: 'e' }, hop: 2 });
    expect(
      readBatchEvent({
        onnxServerlessBatch: { action: 'run', object: { bucket: 'b', key: 'k', size: 0 }, hop: 0 },
      }),
    ).toEqual({ kind: 'run', object: { bucket: 'b', key: 'k', size: 0 }, hop: 0 });
  });

  it('reads the Step Functions states: plan, a batch of shards, commit', () => {
    expect(readBatchEvent({ action: 'plan', bucket: 'data', key: 'in/m/a.jsonl' })).toEqual({
      kind: 'plan',
      bucket: 'data',
      key: 'in/m/a.jsonl',
    });
    // The execution input, as the plan state passes it: what the S3 event said of the object.
    const execution = { bucket: 'data', key: 'in/m/a.jsonl', etag: 'e1', versionId: 'v1', size: 100 };
    expect(readBatchEvent({ action: 'plan', bucket: 'data', key: 'in/m/a.jsonl', execution })).toEqual({
      kind: 'plan',
      bucket: 'data',
      key: 'in/m/a.jsonl',
      etag: 'e1',
      versionId: 'v1',
      size: 100,
    });
    expect(
      readBatchEvent({
        action: 'plan',
        bucket: 'data',
        key: 'in/m/a.jsonl',
        execution: { size: -1, etag: 7 },
      }),
    ).toEqual({ kind: 'plan', bucket: 'data', key: 'in/m/a.jsonl' });
    const items = [
      { bucket: 'data', key: 'in/m/a.jsonl', range: [0, 50], newlinesBefore: 0 },
      { bucket: 'data', key: 'in/m/a.jsonl', range: [50, null] },
    ];
    expect(readBatchEvent({ Items: items, BatchInput: { job: JOB } })).toEqual({
      kind: 'shards',
      job: JOB,
      items,
    });
    expect(readBatchEvent({ action: 'commit', job: JOB })).toEqual({ kind: 'commit', job: JOB });
  });

  it.each([
    ['a string', 'hello', /must be a JSON object/],
    ['an unknown shape', { hello: 1 }, /neither an S3 event/],
    ['a record of another service', { Records: [{ eventSource: 'aws:sqs' }] }, /eventSource aws:s3/],
    ['a malformed key', { Records: [s3Record('ObjectCreated:Put', '%E0%A4%A')] }, /not URL-encoded/],
    [
      'a continuation without hop',
      { onnxServerlessBatch: { action: 'run', object: { bucket: 'b', key: 'k' } } },
      /hop/,
    ],
    ['items without a job', { Items: [], BatchInput: {} }, /BatchInput.job/],
    [
      'a shard of another object',
      { Items: [{ bucket: 'data', key: 'other', range: [0, 1] }], BatchInput: { job: JOB } },
      /not a shard of the job's input/,
    ],
    [
      'an empty range',
      { Items: [{ bucket: 'data', key: 'in/m/a.jsonl', range: [5, 5] }], BatchInput: { job: JOB } },
      /range must be/,
    ],
    ['a commit without job', { action: 'commit' }, /needs the plan's 'job'/],
  ])('refuses %s', (_name, event, message) => {
    expect(() => readBatchEvent(event)).toThrow(InvalidBatchEventError);
    expect(() => readBatchEvent(event)).toThrow(message);
  });
});
