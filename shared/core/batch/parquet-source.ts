/**
 * Parquet as a {@link RecordSource}: a shard is a range of row groups, a part is one or more whole row
 * groups (added while the part is under `partRecords` rows and `partBytes` compressed bytes). Each row
 * group's planned columns are read in one ranged read, mapped straight into micro-batch tensors
 * ({@link mapRows}: no per-record parsing) and scored; results are encoded as Parquet row groups (or JSON
 * lines, on request) in row order, failed rows go to the error lines with their row index.
 */
import type { InferInput, InferOutput } from '../protocol/infer-types';
import { allocateData, type Datatype, type TensorData } from '../tensor';
import type { JobSpec, ParquetJob } from './job-state';
import { splitOutputs } from './micro-batch';
import { resultLine } from './output-lines';
import { type ColumnChunk, type ColumnPlan, type MappedBatch, mapRows, type RowId } from './parquet-mapping';
import type { ParquetCodec, ParquetFile, ScoredBatch } from './parquet-port';
import { ByteChunks } from './part-scorer';
import type { RecordSource, ScoredPart } from './record-source';
import { failureOf } from './records';
import { isRecordsFault, type Scorer } from './score-records';

/** What a {@link ParquetSource} reads and scores with. */
export interface ParquetSourceOptions {
  readonly job: JobSpec & { readonly parquet: ParquetJob };
  readonly file: ParquetFile;
  readonly plan: ColumnPlan;
  readonly codec: ParquetCodec;
  /** The first row group to score. */
  readonly from: number;
  /** One past the shard's last row group. */
  readonly end: number;
  readonly scorer: Scorer;
  /** `ONNX_SERVE_MAX_TENSOR_ELEMENTS`: the most elements one input of one row may hold. */
  readonly maxTensorElements: number;
}

/** A scored row, or rows scored together, in file order. */
interface Scored {
  readonly rows: readonly number[];
  readonly ids: readonly RowId[];
  readonly outputs: readonly InferOutput[];
}

interface Failed {
  readonly row: number;
  readonly id: RowId;
  readonly code: string;
  readonly message: string;
}

const utf8 = new TextEncoder();
const REUSE = Object.freeze({ reuse: true });
/** Micro-batches mapped at a time within a row group. */
const SLICE_BATCHES = 8;

export class ParquetSource implements RecordSource {
  readonly #options: ParquetSourceOptions;
  #group: number;
  /** The next row group's read, started while this one is scored (the store works while the model runs). */
  #ahead: { readonly index: number; readonly chunk: Promise<ColumnChunk> } | undefined;
  /** Free batch tensor buffers by datatype and length. */
  readonly #pool = new Map<string, TensorData[]>();

  constructor(options: ParquetSourceOptions) {
    this.#options = options;
    this.#group = options.from;
  }

  async more(): Promise<boolean> {
    return this.#group < this.#options.end;
  }

  async next(): Promise<ScoredPart> {
    const { job, file, end } = this.#options;
    const groups = file.info.rowGroups;
    const first = this.#group;
    const firstRow = groups[first]?.firstRow ?? 0;
    let rows = 0;
    let bytes = 0;
    const scored: Scored[] = [];
    const failed: Failed[] = [];
    do {
      const group = groups[this.#group];
      if (group === undefined) throw new RangeError(`row group ${this.#group} of ${groups.length}`);
      await this.#scoreGroup(group.index, group.firstRow, group.rows, scored, failed);
      rows += group.rows;
      bytes += group.bytes;
      this.#group += 1;
    } while (this.#group < end && rows < job.settings.partRecords && bytes < job.settings.partBytes);
    const out = new ByteChunks();
    let rowGroups: string | undefined;
    const scoredRows = scored.reduce((n, s) => n + s.rows.length, 0);
    if (scoredRows > 0) {
      if (job.output.format === 'parquet') {
        const encoded = this.#options.codec.encodeRowGroups(job.parquet.schema, scored as ScoredBatch[]);
        out.append(encoded.bytes);
        rowGroups = encoded.rowGroups;
      } else {
        for (const s of scored) {
          const perRow = splitOutputs(s.outputs, s.rows.length);
          s.ids.forEach((id, k) => {
            out.append(resultLine({ id: idJson(id) }, perRow[k] as InferOutput[]));
          });
        }
      }
    }
    const errors = new ByteChunks();
    failed.sort((a, b) => a.row - b.row);
    for (const f of failed) errors.append(errorLine(f));
    return {
      read: rows,
      scored: scoredRows,
      failed: failed.length,
      out,
      errors,
      start: first,
      end: this.#group,
      firstLine: firstRow,
      lastLine: firstRow + rows - 1,
      next: { offset: this.#group, line: firstRow + rows },
      ...(rowGroups === undefined ? {} : { rowGroups }),
    };
  }

  /** Batch tensor data from the pool, or fresh. */
  readonly #allocate = (datatype: Datatype, length: number): TensorData => {
    const free = datatype === 'BYTES' ? undefined : this.#pool.get(`${datatype}:${length}`)?.pop();
    return free ?? allocateData(datatype, length);
  };

  /**
   * A scored batch's tensor data back to the pool. A buffer the engine took (a worker engine transfers it,
   * leaving it empty) is not kept.
   */
  #release(batch: MappedBatch): void {
    for (const input of batch.inputs) {
      const data = input.data;
      if (input.datatype === 'BYTES' || !ArrayBuffer.isView(data) || data.length === 0) continue;
      const key = `${input.datatype}:${data.length}`;
      const free = this.#pool.get(key) ?? [];
      if (free.length < SLICE_BATCHES) free.push(data);
      this.#pool.set(key, free);
    }
  }

  async close(): Promise<void> {
    // A read ahead that no part will use: its failure is nobody's.
    this.#ahead?.chunk.catch(() => undefined);
    this.#ahead = undefined;
  }

  /** Row group `index`'s planned columns: the read ahead when it is that group's, and the next one started. */
  async #read(index: number): Promise<ColumnChunk> {
    const { file, plan, end } = this.#options;
    const ahead = this.#ahead;
    this.#ahead = undefined;
    // A group is scored before the group after the next is read: its buffers may be reused (ReadOptions).
    const chunk = ahead?.index === index ? ahead.chunk : file.readRowGroup(index, plan.columns, REUSE);
    if (ahead !== undefined && ahead.index !== index) ahead.chunk.catch(() => undefined);
    const next = index + 1;
    if (next < end) {
      const read = file.readRowGroup(next, plan.columns, REUSE);
      // Awaited when the next group is scored; until then a failure must not go unhandled.
      read.catch(() => undefined);
      this.#ahead = { index: next, chunk: read };
    }
    return chunk;
  }

  /** Reads, maps and scores one row group; appends its scored rows in row order and its failures. */
  async #scoreGroup(
    index: number,
    firstRow: number,
    rows: number,
    scored: Scored[],
    failed: Failed[],
  ): Promise<void> {
    if (rows === 0) return;
    const { job, plan } = this.#options;
    const chunk = await this.#read(index);
    const limits = {
      maxBatchRecords: job.model.maxBatchSize,
      maxBatchBytes: job.settings.maxBatchBytes,
      maxTensorElements: this.#options.maxTensorElements,
      allocate: this.#allocate,
    };
    const here: Scored[] = [];
    // A slice of the row group at a time (fixed boundaries, so a resumed run builds the same batches): its
    // batches' tensors go back to the pool once scored and fill the next slice's.
    const sliceRows = SLICE_BATCHES * Math.max(1, job.model.maxBatchSize);
    for (let from = firstRow; from < firstRow + rows; from += sliceRows) {
      const mapped = mapRows(plan, chunk, from, Math.min(firstRow + rows, from + sliceRows), limits);
      for (const f of mapped.failures) failed.push(f);
      for (const batch of mapped.batches) {
        await this.#scoreBatch(batch, here, failed);
        this.#release(batch);
      }
    }
    if (inOrder(here)) {
      for (const s of here) scored.push(s);
      return;
    }
    // Rows of different list lengths go to different batches: back to file order, row by row.
    const single: Scored[] = [];
    for (const s of here) {
      const perRow = splitOutputs(s.outputs, s.rows.length);
      s.rows.forEach((row, k) => {
        single.push({ rows: [row], ids: [s.ids[k] as RowId], outputs: stackOne(perRow[k] as InferOutput[]) });
      });
    }
    single.sort((a, b) => (a.rows[0] as number) - (b.rows[0] as number));
    for (const s of single) scored.push(s);
  }

  /**
   * Scores a micro-batch; one the engine refuses is scored again row by row, so a bad row fails alone.
   * Failures that are not the rows' fault (the model cannot be loaded) are thrown: the invocation retries.
   */
  async #scoreBatch(batch: MappedBatch, scored: Scored[], failed: Failed[]): Promise<void> {
    try {
      scored.push({ rows: batch.rows, ids: batch.ids, outputs: await this.#run(batch.inputs) });
      return;
    } catch (error) {
      if (!isRecordsFault(error)) throw error;
      if (batch.rows.length === 1) {
        failed.push(rowFailure(batch.rows[0] as number, batch.ids[0] as RowId, error));
        return;
      }
    }
    for (let k = 0; k < batch.rows.length; k++) {
      const row = batch.rows[k] as number;
      const id = batch.ids[k] as RowId;
      try {
        const outputs = await this.#run(batch.inputs.map((input) => rowOf(input, batch.rows.length, k)));
        scored.push({ rows: [row], ids: [id], outputs });
      } catch (error) {
        if (!isRecordsFault(error)) throw error;
        failed.push(rowFailure(row, id, error));
      }
    }
  }

  async #run(inputs: readonly InferInput[]): Promise<InferOutput[]> {
    const { job, scorer } = this.#options;
    const { outputs } = await scorer.inferWith(job.model.name, job.model.version, () => [...inputs]);
    return outputs;
  }
}

/** Whether the scored batches hold their rows in ascending order, one batch after the other. */
function inOrder(scored: readonly Scored[]): boolean {
  let last = -1;
  for (const s of scored) {
    for (const row of s.rows) {
      if (row <= last) return false;
      last = row;
    }
  }
  return true;
}

/** Row `k` of a batched input, as a batch of one. */
function rowOf(input: InferInput, n: number, k: number): InferInput {
  const per = input.data.length / n;
  return {
    ...input,
    shape: [1, ...input.shape.slice(1)],
    data: input.data.slice(k * per, (k + 1) * per) as TensorData,
  };
}

/** One row's outputs (no batch axis) as a batch of one. */
function stackOne(outputs: readonly InferOutput[]): InferOutput[] {
  return outputs.map((o) => ({ ...o, shape: [1, ...o.shape] }));
}

function rowFailure(row: number, id: RowId, error: unknown): Failed {
  const failure = failureOf(row, idJson(id), error);
  return { row, id, code: failure.code, message: `row ${row}: ${failure.message}` };
}

/** A row id as JSON text: strings quoted, integers (64-bit ones too) as digits. */
export function idJson(id: RowId): string {
  if (typeof id === 'string') return JSON.stringify(id);
  if (typeof id === 'bigint') return id.toString();
  return Number.isFinite(id) ? String(id) : JSON.stringify(String(id));
}

/** The errors-file line of a failed row, `\n` included: `row` in place of the JSON Lines `line`. */
function errorLine(f: Failed): Uint8Array {
  const error = JSON.stringify({ code: f.code, message: f.message });
  return utf8.encode(`{"row":${f.row},"id":${idJson(f.id)},"error":${error}}\n`);
}
