/**
 * Scores one part as its lines arrive: records join micro-batches by shape, a batch is scored as soon as
 * it closes, and result and error lines are released in input order into compact byte chunks. Parsed
 * records live only until their batch is scored, so memory holds one open batch per shape and the part's
 * output bytes, whatever the size of the input.
 */
import { MicroBatcher } from './micro-batch';
import { errorLine, resultLine } from './output-lines';
import type { ParsedRecord, RecordResult } from './records';
import { type ScoreOptions, scoreRecords } from './score-records';

/** Bytes appended in order, kept in chunks of 64 KiB rather than one small array per line. */
export class ByteChunks {
  static readonly CHUNK = 64 * 1024;
  readonly #chunks: Uint8Array[] = [];
  #current = new Uint8Array(ByteChunks.CHUNK);
  #used = 0;
  #bytes = 0;

  get bytes(): number {
    return this.#bytes;
  }

  append(bytes: Uint8Array): void {
    this.#bytes += bytes.byteLength;
    if (bytes.byteLength > this.#current.byteLength - this.#used) {
      this.#seal();
      if (bytes.byteLength >= ByteChunks.CHUNK) {
        this.#chunks.push(bytes);
        return;
      }
    }
    this.#current.set(bytes, this.#used);
    this.#used += bytes.byteLength;
  }

  /** Everything appended, in order. */
  chunks(): Uint8Array[] {
    this.#seal();
    return [...this.#chunks];
  }

  #seal(): void {
    if (this.#used === 0) return;
    this.#chunks.push(this.#current.subarray(0, this.#used));
    this.#current = new Uint8Array(ByteChunks.CHUNK);
    this.#used = 0;
  }
}

interface Slot {
  bytes: Uint8Array | undefined;
  failed: boolean;
}

interface Pending {
  readonly shapeKey: string;
  readonly bytes: number;
  readonly record: ParsedRecord;
  readonly slot: Slot;
}

/**
 * @example
 * const part = new PartScorer(options);
 * for (const line of lines) { const r = parse(line); if (r.kind !== 'blank') await part.add(r); }
 * await part.finish();
 * await store.write(outRef, part.out.chunks(), { contentType, gzip });
 */
export class PartScorer {
  /** Result lines, in input order. */
  readonly out = new ByteChunks();
  /** Error lines, in input order. */
  readonly errors = new ByteChunks();
  read = 0;
  scored = 0;
  failed = 0;
  readonly #options: ScoreOptions;
  readonly #batcher: MicroBatcher<Pending>;
  readonly #slots: (Slot | undefined)[] = [];
  #head = 0;

  constructor(options: ScoreOptions) {
    this.#options = options;
    const maxRecords = options.batched ? options.maxBatchRecords : 1;
    this.#batcher = new MicroBatcher(maxRecords, options.maxBatchBytes);
  }

  /** Takes the next record (or the reason its line failed); scores any batch that closes. */
  async add(result: Exclude<RecordResult, { kind: 'blank' }>): Promise<void> {
    this.read += 1;
    const slot: Slot = { bytes: undefined, failed: false };
    this.#slots.push(slot);
    if (result.kind === 'failure') {
      slot.bytes = errorLine(result.failure);
      slot.failed = true;
      this.#release();
      return;
    }
    const { record } = result;
    for (const batch of this.#batcher.add({ shapeKey: record.shapeKey, bytes: record.bytes, record, slot })) {
      await this.#score(batch);
    }
  }

  /** Scores the batches still open; every line is then released. */
  async finish(): Promise<void> {
    for (const batch of this.#batcher.flush()) await this.#score(batch);
    this.#release();
  }

  async #score(batch: readonly Pending[]): Promise<void> {
    const outcomes = await scoreRecords(
      batch.map((p) => p.record),
      this.#options,
    );
    outcomes.forEach((outcome, i) => {
      const { record, slot } = batch[i] as Pending;
      if (outcome.ok) {
        slot.bytes = resultLine(record, outcome.outputs);
      } else {
        slot.bytes = errorLine(outcome.failure);
        slot.failed = true;
      }
    });
    this.#release();
  }

  /** Moves the lines that are ready, from the oldest on, into the output chunks. */
  #release(): void {
    for (;;) {
      const slot = this.#slots[this.#head];
      if (slot?.bytes === undefined) break;
      if (slot.failed) {
        this.errors.append(slot.bytes);
        this.failed += 1;
      } else {
        this.out.append(slot.bytes);
        this.scored += 1;
      }
      this.#slots[this.#head] = undefined;
      this.#head += 1;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#slots.length) {
      this.#slots.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
