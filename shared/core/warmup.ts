/**
 * The warm-up run on load: the first run of a session allocates its buffers and picks kernels, so one run
 * with synthetic inputs takes that cost off the first request.
 */
import { allocateData, elementCount, type ModelSignature, type Tensor } from './tensor';

/**
 * One tensor per declared input: dynamic dims (-1) become 1, data is zeros (`''` for BYTES, `false` for BOOL).
 *
 * @example
 * await model.run(synthesizeInputs(model.signature));
 */
export function synthesizeInputs(signature: ModelSignature): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const input of signature.inputs) {
    const shape = input.shape.map((d) => (d < 0 ? 1 : d));
    feeds[input.name] = {
      datatype: input.datatype,
      shape,
      data: allocateData(input.datatype, elementCount(shape)),
    };
  }
  return feeds;
}
