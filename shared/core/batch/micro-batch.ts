/**
 * Micro-batches: records of one part grouped along the batch axis. Only records whose examples have the
 * same shapes are stacked (a ragged batch is not a tensor), up to the model's max batch size and a byte
 * cap, and each batch's outputs are split back into one slice per record.
 */
import type { InferInput, InferOutput } from '../protocol/infer-types';
import { allocateData, elementCount, type TensorData } from '../tensor';
import type { ParsedRecord } from './records';

/** What planning needs of a record. */
export interface BatchCandidate {
  readonly shapeKey: string;
  readonly bytes: number;
}

/**
 * Groups records into micro-batches as they arrive: each record joins the open batch of its shape key,
 * which closes when it holds `maxRecords` records or another record would take it over `maxBytes`. A
 * record alone over `maxBytes` gets a batch of its own. Deterministic: the same records in the same order
 * give the same batches, which is what makes a resumed run byte-identical to an uninterrupted one.
 */
export class MicroBatcher<T extends BatchCandidate> {
  readonly #open = new Map<string, { items: T[]; bytes: number }>();
  readonly #maxRecords: number;
  readonly #maxBytes: number;

  constructor(maxRecords: number, maxBytes: number) {
    this.#maxRecords = Math.max(1, maxRecords);
    this.#maxBytes = maxBytes;
  }

  /** Adds a record; returns the batches that closed (zero, one or two). */
  add(item: T): T[][] {
    const closed: T[][] = [];
    let batch = this.#open.get(item.shapeKey);
    if (batch !== undefined && batch.bytes + item.bytes > this.#maxBytes) {
      closed.push(batch.items);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = { items: [], bytes: 0 };
      this.#open.set(item.shapeKey, batch);
    }
    batch.items.push(item);
    batch.bytes += item.bytes;
    if (batch.items.length >= this.#maxRecords) {
      closed.push(batch.items);
      this.#open.delete(item.shapeKey);
    }
    return closed;
  }

  /** Closes every open batch, in the order they were opened. */
  flush(): T[][] {
    const closed = [...this.#open.values()].map((b) => b.items);
    this.#open.clear();
    return closed;
  }
}

/**
 * Groups records (by index) into micro-batches with a {@link MicroBatcher}.
 *
 * @example
 * planMicroBatches([{ shapeKey: '2', bytes: 8 }, { shapeKey: '3', bytes: 12 }, { shapeKey: '2', bytes: 8 }], 64, 1 << 20);
 * // [[0, 2], [1]]
 */
export function planMicroBatches(
  records: readonly BatchCandidate[],
  maxRecords: number,
  maxBytes: number,
): number[][] {
  const batcher = new MicroBatcher<BatchCandidate & { index: number }>(maxRecords, maxBytes);
  const batches: number[][] = [];
  records.forEach((record, index) => {
    for (const closed of batcher.add({ shapeKey: record.shapeKey, bytes: record.bytes, index })) {
      batches.push(closed.map((c) => c.index));
    }
  });
  for (const closed of batcher.flush()) batches.push(closed.map((c) => c.index));
  return batches;
}

/**
 * The model inputs of a micro-batch: each input's examples stacked along a new dim 0. Every record must
 * have the same shape key (see {@link planMicroBatches}).
 */
export function stackInputs(records: readonly ParsedRecord[]): InferInput[] {
  const first = records[0];
  if (first === undefined) return [];
  return first.inputs.map((input, i) => {
    const per = elementCount(input.shape);
    const data = allocateData(input.datatype, per * records.length);
    records.forEach((record, r) => {
      const source = (record.inputs[i] as InferInput).data;
      if (Array.isArray(data)) {
        for (let k = 0; k < per; k++) data[r * per + k] = (source as string[])[k] as string;
      } else {
        (data as Exclude<TensorData, string[]> & { set(a: ArrayLike<number | bigint>, o: number): void }).set(
          source as ArrayLike<number | bigint>,
          r * per,
        );
      }
    });
    return { name: input.name, datatype: input.datatype, shape: [records.length, ...input.shape], data };
  });
}

/**
 * Splits a micro-batch's outputs into one list per record: slice `r` of dim 0, without that dim. Views,
 * not copies, for typed arrays.
 *
 * @throws Error when an output's dim 0 is not the batch size (the model has no batch axis there)
 */
export function splitOutputs(outputs: readonly InferOutput[], count: number): InferOutput[][] {
  const perRecord: InferOutput[][] = Array.from({ length: count }, () => []);
  for (const output of outputs) {
    if (output.shape[0] !== count) {
      throw new Error(
        `output '${output.name}' has shape [${output.shape.join(',')}]: dim 0 is not the batch size ${count}`,
      );
    }
    const shape = output.shape.slice(1);
    const per = elementCount(shape);
    for (let r = 0; r < count; r++) {
      const data = Array.isArray(output.data)
        ? output.data.slice(r * per, (r + 1) * per)
        : (output.data as Exclude<TensorData, string[]>).subarray(r * per, (r + 1) * per);
      (perRecord[r] as InferOutput[]).push({ name: output.name, datatype: output.datatype, shape, data });
    }
  }
  return perRecord;
}
