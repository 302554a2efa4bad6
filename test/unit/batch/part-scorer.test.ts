import { ByteChunks, PartScorer } from '../../../shared/core/batch/part-scorer';
import type { ParsedRecord, RecordResult } from '../../../shared/core/batch/records';
import type { Scorer } from '../../../shared/core/batch/score-records';
import type { InferInput, InferOutput } from '../../../shared/core/protocol/infer-types';
import type { ModelSignature } from '../../../shared/core/tensor';

const text = (chunks: Uint8Array[]) => Buffer.concat(chunks).toString('utf8');

function record(line: number, values: number[]): Extract<RecordResult, { kind: 'record' }> {
  const parsed: ParsedRecord = {
    line,
    id: String(line),
    inputs: [{ name: 'x', datatype: 'FP32', shape: [values.length], data: Float32Array.from(values) }],
    shapeKey: String(values.length),
    bytes: 4 * values.length,
  };
  return { kind: 'record', record: parsed };
}

/** Sums each example; remembers the batch sizes it was given. */
class Summer implements Scorer {
  readonly sizes: number[] = [];
  async inferWith(_n: string, _v: string | undefined, build: (signature: ModelSignature) => InferInput[]) {
    const x = build({ inputs: [], outputs: [] })[0] as InferInput;
    const [n, w] = x.shape as [number, number];
    this.sizes.push(n);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++)
      for (let k = 0; k < w; k++)
        data[i] = (data[i] as number) + ((x.data as Float32Array)[i * w + k] as number);
    const outputs: InferOutput[] = [{ name: 's', datatype: 'FP32', shape: [n], data }];
    return { version: '1', outputs };
  }
}

describe('PartScorer', () => {
  it('releases result and error lines in input order, whichever batch scored them', async () => {
    const scorer = new Summer();
    const part = new PartScorer({
      scorer,
      model: 'm',
      version: '1',
      batched: true,
      maxBatchRecords: 2,
      maxBatchBytes: 1 << 20,
    });
    await part.add(record(1, [1, 1]));
    await part.add(record(2, [5, 5, 5]));
    await part.add({ kind: 'failure', failure: { line: 3, id: '3', code: 'invalid_input', message: 'bad' } });
    await part.add(record(4, [2, 2]));
    // Line 4 closed the batch of [1, 4]; line 2 waits for the end of the part.
    expect(scorer.sizes).toEqual([2]);
    expect(part.out.bytes).toBe(text([Buffer.from('{"id":1,"outputs":{"s":2}}\n')]).length);
    await part.finish();
    expect(scorer.sizes).toEqual([2, 1]);
    expect(text(part.out.chunks())).toBe(
      '{"id":1,"outputs":{"s":2}}\n{"id":2,"outputs":{"s":15}}\n{"id":4,"outputs":{"s":4}}\n',
    );
    expect(text(part.errors.chunks())).toBe(
      '{"line":3,"id":3,"error":{"code":"invalid_input","message":"bad"}}\n',
    );
    expect([part.read, part.scored, part.failed]).toEqual([4, 3, 1]);
  });
});

describe('ByteChunks', () => {
  it('keeps bytes in order in few large chunks', () => {
    const sink = new ByteChunks();
    const line = new Uint8Array(1000).fill(7);
    for (let i = 0; i < 200; i++) sink.append(line);
    const big = new Uint8Array(ByteChunks.CHUNK + 1).fill(9);
    sink.append(big);
    sink.append(Uint8Array.from([1, 2]));
    const chunks = sink.chunks();
    expect(sink.bytes).toBe(200_000 + big.byteLength + 2);
    expect(chunks.length).toBeLessThan(8);
    const all = Buffer.concat(chunks);
    expect(all.byteLength).toBe(sink.bytes);
    expect(all[199_999]).toBe(7);
    expect(all[200_000]).toBe(9);
    expect([...all.subarray(-2)]).toEqual([1, 2]);
  });
});
