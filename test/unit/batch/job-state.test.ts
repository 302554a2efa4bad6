import { BatchStateError } from '../../../shared/core/batch/errors';
import {
  assertPartsCoverInput,
  CHECKPOINT_FORMAT,
  type Checkpoint,
  type JobSpec,
  type PartRecord,
  type ShardSpec,
  WHOLE_INPUT,
} from '../../../shared/core/batch/job-state';

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

const part = (
  no: number,
  start: number,
  end: number,
  counts = { read: 2, scored: 1, failed: 1 },
): PartRecord => ({
  no,
  start,
  end,
  firstLine: no * 2 + 1,
  lastLine: no * 2 + 2,
  ...counts,
  ms: 1,
});

const checkpoint = (parts: PartRecord[], shard: ShardSpec = WHOLE_INPUT, done = true): Checkpoint => ({
  format: CHECKPOINT_FORMAT,
  job: JOB,
  shard,
  next: null,
  parts,
  done,
  invocations: 1,
});

describe('assertPartsCoverInput', () => {
  it('accepts parts that tile the input from byte 0 to its size, across shards', () => {
    expect(() => assertPartsCoverInput(JOB, [checkpoint([part(0, 0, 40), part(1, 40, 100)])])).not.toThrow();
    expect(() =>
      assertPartsCoverInput(JOB, [
        checkpoint([part(0, 0, 55)], { start: 0, end: 50 }),
        // A shard in which no line starts has no part.
        checkpoint([], { start: 50, end: 55 }),
        checkpoint([part(0, 55, 100)], { start: 55, end: null }),
      ]),
    ).not.toThrow();
    expect(() =>
      assertPartsCoverInput({ ...JOB, input: { ...JOB.input, size: 0 } }, [checkpoint([])]),
    ).not.toThrow();
  });

  it.each([
    ['a gap', [part(0, 0, 40), part(1, 50, 100)], 'leave bytes [40, 50) unread'],
    ['an overlap', [part(0, 0, 40), part(1, 30, 100)], 'read bytes [30, 40) twice'],
    ['a first part that does not start at 0', [part(0, 10, 100)], 'leave bytes [0, 10) unread'],
    ['an end short of the size', [part(0, 0, 40), part(1, 40, 90)], 'end at byte 90 of 100'],
    ['no part of a non-empty input', [], 'end at byte 0 of 100'],
    [
      'a record neither scored nor failed',
      [part(0, 0, 40), part(1, 40, 100, { read: 3, scored: 1, failed: 1 })],
      'part 1 read 3 records but scored 1 and failed 1',
    ],
  ])('refuses %s', (_, parts, message) => {
    expect(() => assertPartsCoverInput(JOB, [checkpoint(parts)])).toThrow(BatchStateError);
    expect(() => assertPartsCoverInput(JOB, [checkpoint(parts)])).toThrow(message);
  });

  it('refuses a shard that is not done, and checks only the tiling of a gzip input', () => {
    expect(() => assertPartsCoverInput(JOB, [checkpoint([part(0, 0, 100)], WHOLE_INPUT, false)])).toThrow(
      /is not done/,
    );
    const gzip = { ...JOB, input: { ...JOB.input, gzip: true } };
    expect(() => assertPartsCoverInput(gzip, [checkpoint([part(0, 0, 40), part(1, 40, 250)])])).not.toThrow();
    expect(() => assertPartsCoverInput(gzip, [checkpoint([part(0, 0, 40), part(1, 41, 250)])])).toThrow(
      /unread/,
    );
  });
});
