/**
 * The floor of a cold start: the `.onnx` file is already on local disk; create the session from its path
 * with default options and run. No download, no verification. Required by children/cold-start.ts.
 */
import * as ort from 'onnxruntime-node';
import type { BaselineOutcome, BaselineSpec } from '../lib/cold-protocol';
import { benchInput, elements } from '../lib/input';

export async function run(spec: BaselineSpec): Promise<BaselineOutcome> {
  if (spec.modelFile === undefined) throw new Error(`the floor baseline needs 'modelFile'`);
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(spec.modelFile);
  const t1 = performance.now();
  const { name, shape } = spec.input;
  const results = await session.run({
    [name]: new ort.Tensor('float32', benchInput(elements(shape)), [...shape]),
  });
  const first = results[session.outputNames[0] as string] as ort.Tensor;
  const t2 = performance.now();
  return {
    phases: { createMs: t1 - t0, firstRunMs: t2 - t1 },
    output: Array.from(first.data as Float32Array),
  };
}
