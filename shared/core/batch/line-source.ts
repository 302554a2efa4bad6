/**
 * JSON Lines and CSV as a {@link RecordSource}: lines of a byte range (a shard), cut into parts of at most
 * `partRecords` records or `partBytes` bytes, each parsed and scored as its lines arrive ({@link PartScorer}).
 * Part boundaries depend on the input alone, so a part scored again after a crash has the same bytes.
 */
import type { JobSpec } from './job-state';
import type { Line } from './line-splitter';
import { PartScorer } from './part-scorer';
import type { RecordSource, ScoredPart } from './record-source';
import type { RecordResult } from './records';
import type { ScoreOptions } from './score-records';

/** What a {@link LineSource} reads and scores with. */
export interface LineSourceOptions {
  readonly job: JobSpec;
  /** The shard's lines from the part to score next on. */
  readonly lines: AsyncGenerator<Line, unknown, undefined>;
  /** Lines that start at or past this byte belong to the next shard. */
  readonly shardEnd: number;
  readonly parse: (line: Line) => RecordResult;
  readonly score: ScoreOptions;
}

export class LineSource implements RecordSource {
  readonly #options: LineSourceOptions;
  #next: IteratorResult<Line, unknown> | undefined;

  constructor(options: LineSourceOptions) {
    this.#options = options;
  }

  async more(): Promise<boolean> {
    this.#next ??= await this.#options.lines.next();
    return !this.#next.done && this.#next.value.start < this.#options.shardEnd;
  }

  async next(): Promise<ScoredPart> {
    const { job, lines, shardEnd, parse } = this.#options;
    const scorer = new PartScorer(this.#options.score);
    let next = this.#next ?? (await lines.next());
    let bytes = 0;
    let first: Line | undefined;
    let last: Line | undefined;
    while (
      !next.done &&
      next.value.start < shardEnd &&
      scorer.read < job.settings.partRecords &&
      bytes < job.settings.partBytes
    ) {
      const line = next.value;
      first ??= line;
      last = line;
      bytes += line.end - line.start;
      // Line 1 of a CSV input is its header.
      const result = job.input.format === 'csv' && line.number === 1 ? undefined : parse(line);
      if (result !== undefined && result.kind !== 'blank') await scorer.add(result);
      next = await lines.next();
    }
    this.#next = next;
    await scorer.finish();
    if (first === undefined || last === undefined) throw new Error('a part was asked of an ended shard');
    return {
      read: scorer.read,
      scored: scorer.scored,
      failed: scorer.failed,
      out: scorer.out,
      errors: scorer.errors,
      start: first.start,
      end: last.end,
      firstLine: first.number,
      lastLine: last.number,
      next: { offset: last.end, line: last.number + 1 },
    };
  }

  async close(): Promise<void> {
    await this.#options.lines.return(undefined);
  }
}
