import { planMicroBatches, splitOutputs, stackInputs } from '../../../shared/core/batch/micro-batch';
import type { ParsedRecord } from '../../../shared/core/batch/records';
import type { InferInput } from '../../../shared/core/protocol/infer-types';

const candidate = (shapeKey: string, bytes = 8) => ({ shapeKey, bytes });

function record(line: number, inputs: InferInput[]): ParsedRecord {
  return {
    line,
    id: String(line),
    inputs,
    shapeKey: inputs.map((i) => i.shape.join(',')).join('|'),
    bytes: 0,
  };
}

describe('planMicroBatches', () => {
  it('never stacks records of different shapes, and keeps input order within a batch', () => {
    const plan = planMicroBatches(
      [candidate('2'), candidate('3'), candidate('2'), candidate('3'), candidate('2')],
      64,
      1 << 20,
    );
    expect(plan).toEqual([
      [0, 2, 4],
      [1, 3],
    ]);
  });

  it('closes a batch at the max batch size', () => {
    expect(
      planMicroBatches(
        Array.from({ length: 5 }, () => candidate('2')),
        2,
        1 << 20,
      ),
    ).toEqual([[0, 1], [2, 3], [4]]);
  });

  it('closes a batch before the byte cap, and gives an oversized record a batch of its own', () => {
    const plan = planMicroBatches(
      [candidate('2', 40), candidate('2', 40), candidate('2', 500), candidate('2', 10)],
      64,
      100,
    );
    expect(plan).toEqual([[0, 1], [2], [3]]);
  });
});

describe('stackInputs and splitOutputs', () => {
  it('stacks examples along a new dim 0 and splits outputs back per record', () => {
    const records = [1, 2, 3].map((n) =>
      record(n, [
        { name: 'x', datatype: 'FP32', shape: [2], data: Float32Array.from([n, n * 10]) },
        { name: 'ids', datatype: 'INT64', shape: [], data: BigInt64Array.from([BigInt(n)]) },
        { name: 's', datatype: 'BYTES', shape: [1], data: [`r${n}`] },
      ]),
    );
    const stacked = stackInputs(records);
    expect(stacked).toEqual([
      { name: 'x', datatype: 'FP32', shape: [3, 2], data: Float32Array.from([1, 10, 2, 20, 3, 30]) },
      { name: 'ids', datatype: 'INT64', shape: [3], data: BigInt64Array.from([1n, 2n, 3n]) },
      { name: 's', datatype: 'BYTES', shape: [3, 1], data: ['r1', 'r2', 'r3'] },
    ]);
    const perRecord = splitOutputs(stacked, 3);
    expect(perRecord[1]).toEqual([
      { name: 'x', datatype: 'FP32', shape: [2], data: Float32Array.from([2, 20]) },
      { name: 'ids', datatype: 'INT64', shape: [], data: BigInt64Array.from([2n]) },
      { name: 's', datatype: 'BYTES', shape: [1], data: ['r2'] },
    ]);
  });

  it('refuses outputs whose dim 0 is not the batch', () => {
    expect(() =>
      splitOutputs([{ name: 'y', datatype: 'FP32', shape: [2, 1], data: new Float32Array(2) }], 3),
    ).toThrow(/output 'y' has shape \[2,1\]: dim 0 is not the batch size 3/);
  });
});
