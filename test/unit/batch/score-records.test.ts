import type { ParsedRecord } from '../../../shared/core/batch/records';
import { type Scorer, scoreRecords } from '../../../shared/core/batch/score-records';
import { InvalidInputError, ModelLoadError } from '../../../shared/core/errors';
import type { InferInput, InferOutput } from '../../../shared/core/protocol/infer-types';

const SIGNATURE = { inputs: [{ name: 'x', datatype: 'FP32' as const, shape: [-1, 1] }], outputs: [] };

function record(line: number, value: number, width = 1): ParsedRecord {
  return {
    line,
    id: String(line),
    inputs: [{ name: 'x', datatype: 'FP32', shape: [width], data: new Float32Array(width).fill(value) }],
    shapeKey: String(width),
    bytes: 4 * width,
  };
}

/** Doubles `x`; a batch holding a negative value fails in "the engine", as a whole. */
class Doubler implements Scorer {
  readonly batches: number[][] = [];
  failWith: Error | undefined;
  async inferWith(
    _name: string,
    _version: string | undefined,
    build: (signature: typeof SIGNATURE) => InferInput[],
  ): Promise<{ version: string; outputs: InferOutput[] }> {
    const x = build(SIGNATURE)[0] as InferInput;
    const data = x.data as Float32Array;
    this.batches.push(Array.from(data));
    if (this.failWith !== undefined) throw this.failWith;
    if (data.some((v) => v < 0)) throw new Error('Non-zero status code returned while running Gemm node');
    return {
      version: '1',
      outputs: [{ name: 'y', datatype: 'FP32', shape: x.shape, data: data.map((v) => v * 2) }],
    };
  }
}

const options = (scorer: Scorer, maxBatchRecords = 4) => ({
  scorer,
  model: 'm',
  version: '1',
  batched: true,
  maxBatchRecords,
  maxBatchBytes: 1 << 20,
});

describe('scoreRecords', () => {
  it('scores micro-batches and gives each record its slice, in order', async () => {
    const scorer = new Doubler();
    const records = [1, 2, 3, 4, 5].map((v) => record(v, v));
    const outcomes = await scoreRecords(records, options(scorer));
    expect(scorer.batches).toEqual([[1, 2, 3, 4], [5]]);
    expect(outcomes.map((o) => (o.ok ? Array.from(o.outputs[0]?.data as Float32Array) : o))).toEqual([
      [2],
      [4],
      [6],
      [8],
      [10],
    ]);
  });

  it('retries a failed micro-batch record by record, so only the bad record fails', async () => {
    const scorer = new Doubler();
    const records = [record(1, 1), record(2, -1), record(3, 3)];
    const outcomes = await scoreRecords(records, options(scorer));
    expect(scorer.batches).toEqual([[1, -1, 3], [1], [-1], [3]]);
    expect(outcomes[0]).toMatchObject({ ok: true });
    expect(outcomes[1]).toEqual({
      ok: false,
      failure: {
        line: 2,
        id: '2',
        code: 'inference_failed',
        message: 'Non-zero status code returned while running Gemm node',
      },
    });
    expect(outcomes[2]).toMatchObject({ ok: true });
  });

  it('stacks only records of one shape', async () => {
    const scorer = new Doubler();
    await scoreRecords([record(1, 1), record(2, 2, 2), record(3, 3)], options(scorer));
    expect(scorer.batches).toEqual([
      [1, 3],
      [2, 2],
    ]);
  });

  it('files a refusal of the service as the record failure it is', async () => {
    const scorer = new Doubler();
    scorer.failWith = new InvalidInputError("input 'x': batch size 4 is over the model's max batch size 2");
    const outcomes = await scoreRecords([record(1, 1)], options(scorer));
    expect(outcomes[0]).toMatchObject({ ok: false, failure: { code: 'invalid_input' } });
  });

  it('throws what is not the records fault, so no good record is filed as an error', async () => {
    const scorer = new Doubler();
    scorer.failWith = new ModelLoadError("model 'm': reading config.json from the model store failed");
    await expect(scoreRecords([record(1, 1), record(2, 2)], options(scorer))).rejects.toBeInstanceOf(
      ModelLoadError,
    );
  });

  it('runs each record alone when the model has no batch axis', async () => {
    const scorer = new Doubler();
    const outcomes = await scoreRecords([record(1, 1), record(2, 2)], { ...options(scorer), batched: false });
    expect(scorer.batches).toEqual([[1], [2]]);
    expect(outcomes.every((o) => o.ok)).toBe(true);
  });
});
