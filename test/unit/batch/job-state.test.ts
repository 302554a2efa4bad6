import { BatchStateError } from '../../../shared/core/batch/errors';
import {
  assertPartsCoverInput,
  CHECKPOINT_FORMAT,
  type Checkpoint,
  type JobSpec,
  type PartRecord,
  rowGroupShards,
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

describe('assertPartsCoverInput for Parquet (row groups and rows)', () => {
  const PARQUET: JobSpec = {
    ...JOB,
    input: { ...JOB.input, key: 'in/m/a.parquet', format: 'parquet' },
    parquet: {
      mapping: { idColumn: 'id', inputs: {} },
      rows: 30,
      rowGroups: 3,
      schema: { idColumn: 'id', idType: 'STRING', outputs: [] },
    },
  };
  /** Row groups [start, end) of 10 rows each. */
  const groups = (no: number, start: number, end: number, counts?: Partial<PartRecord>): PartRecord => ({
    no,
    start,
    end,
    firstLine: start * 10,
    lastLine: end * 10 - 1,
    read: (end - start) * 10,
    scored: (end - start) * 10 - 1,
    failed: 1,
    ms: 1,
    ...counts,
  });
  const check = (parts: PartRecord[]) => () =>
    assertPartsCoverInput(PARQUET, [{ ...checkpoint(parts), job: PARQUET }]);

  it('accepts parts of whole row groups that tile the file and read every row', () => {
    expect(check([groups(0, 0, 2), groups(1, 2, 3)])).not.toThrow();
  });

  it.each([
    ['a row group left out', [groups(0, 0, 1), groups(1, 2, 3)], 'leave row groups [1, 2) unread'],
    ['a row group read twice', [groups(0, 0, 2), groups(1, 1, 3)], 'read row groups [1, 2) twice'],
    ['row groups short of the footer', [groups(0, 0, 2)], 'end at row group 2 of 3, row 20 of 30'],
    [
      'a part that read fewer rows than its row groups hold',
      [groups(0, 0, 2, { read: 19, scored: 18 }), groups(1, 2, 3)],
      'part 0 read 19 rows from row 0, expected 20 from row 0',
    ],
    [
      'a row neither scored nor failed',
      [groups(0, 0, 2, { scored: 10 }), groups(1, 2, 3)],
      'part 0 read 20 rows but scored 10 and failed 1',
    ],
  ])('refuses %s', (_, parts, message) => {
    expect(check(parts)).toThrow(BatchStateError);
    expect(check(parts)).toThrow(message);
  });
});

describe('rowGroupShards', () => {
  it('cuts row groups into shards of about shardBytes, at least one group each, the last open-ended', () => {
    expect(rowGroupShards([60, 60, 60, 60], 100)).toEqual([
      { start: 0, end: 2 },
      { start: 2, end: null },
    ]);
    expect(rowGroupShards([500, 10, 10], 100)).toEqual([
      { start: 0, end: 1 },
      { start: 1, end: null },
    ]);
    expect(rowGroupShards([10, 10], 100)).toEqual([{ start: 0, end: null }]);
    expect(rowGroupShards([], 100)).toEqual([{ start: 0, end: null }]);
  });
});
