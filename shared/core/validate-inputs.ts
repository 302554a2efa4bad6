/**
 * Checks decoded inputs and requested outputs against a model's signature before anything runs, so a
 * client gets a 400 that names its mistake instead of an onnxruntime message.
 */
import { InvalidInputError, PayloadTooLargeError } from './errors';
import { printable } from './names';
import type { CodecLimits, InferInput, RequestedOutput } from './protocol/infer-types';
import { elementCount, type ModelSignature, type Tensor } from './tensor';

export type { CodecLimits } from './protocol/infer-types';

/**
 * The feeds for the engine: `inputs` by name, once each has been checked against `signature`.
 *
 * Rules, each an {@link InvalidInputError} (400) naming the input: no unknown and no duplicate input,
 * every model input present, datatype equal to the model's, rank equal, every fixed dim (not -1) equal,
 * data length equal to the shape's element count, and, when `maxBatchSize` > 0, the batch (dim 0 of
 * inputs whose model dim 0 is dynamic) at most `maxBatchSize`. Inputs whose model dim 0 is fixed have no
 * batch axis there (e.g. a recurrent state `[2, batch, 128]`) and are held to that fixed dim instead.
 * An element count over `limits.maxTensorElements` is a {@link PayloadTooLargeError} (413).
 *
 * @param maxBatchSize - the model's `maxBatchSize` from config.json; 0 means no batch limit
 * @example
 * const feeds = validateInputs(request.inputs, model.signature, config.maxBatchSize, limits);
 * await model.run(feeds, validateOutputs(request.outputs, model.signature));
 */
export function validateInputs(
  inputs: readonly InferInput[],
  signature: ModelSignature,
  maxBatchSize: number,
  limits?: CodecLimits,
): Record<string, Tensor> {
  // A null prototype: input names come from clients and must never reach Object.prototype.
  const feeds = Object.create(null) as Record<string, Tensor>;
  const known = signature.inputs.map((s) => s.name).join(', ');
  for (const input of inputs) {
    const where = `input '${printable(input.name)}'`;
    const spec = signature.inputs.find((s) => s.name === input.name);
    if (spec === undefined) throw new InvalidInputError(`the model has no ${where} (inputs: ${known})`);
    if (Object.hasOwn(feeds, input.name)) throw new InvalidInputError(`${where} appears more than once`);
    if (input.datatype !== spec.datatype) {
      throw new InvalidInputError(
        `${where}: datatype is ${input.datatype} but the model takes ${spec.datatype}`,
      );
    }
    const expected = `[${spec.shape.join(',')}]`;
    const got = `[${input.shape.join(',')}]`;
    if (input.shape.length !== spec.shape.length) {
      throw new InvalidInputError(
        `${where}: shape ${got} has rank ${input.shape.length} but the model takes rank ${spec.shape.length} ${expected}`,
      );
    }
    for (let d = 0; d < spec.shape.length; d++) {
      const want = spec.shape[d] as number;
      const dim = input.shape[d] as number;
      if (want >= 0 && dim !== want) {
        throw new InvalidInputError(
          `${where}: dim ${d} is ${dim} but the model takes ${want} (shape ${expected})`,
        );
      }
    }
    const count = elementCount(input.shape);
    if (limits !== undefined && count > limits.maxTensorElements) {
      throw new PayloadTooLargeError(
        `${where}: shape ${got} holds ${count} elements, over the limit of ${limits.maxTensorElements}`,
      );
    }
    if (input.data.length !== count) {
      throw new InvalidInputError(
        `${where}: shape ${got} holds ${count} elements but data has ${input.data.length}`,
      );
    }
    const batch = input.shape[0];
    if (maxBatchSize > 0 && batch !== undefined && (spec.shape[0] as number) < 0 && batch > maxBatchSize) {
      throw new InvalidInputError(
        `${where}: batch size ${batch} is over the model's max batch size ${maxBatchSize}`,
      );
    }
    feeds[input.name] = { datatype: input.datatype, shape: input.shape, data: input.data };
  }
  const missing = signature.inputs.filter((s) => !Object.hasOwn(feeds, s.name)).map((s) => `'${s.name}'`);
  if (missing.length > 0) {
    throw new InvalidInputError(
      `missing input${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (the model takes ${known})`,
    );
  }
  return feeds;
}

/**
 * The output names to run: those requested (as names or as the request's `outputs`), in request order,
 * or `undefined` (every output) when the request names none.
 *
 * @throws {@link InvalidInputError} for an output the model does not have or one requested twice
 */
export function validateOutputs(
  requested: readonly (string | RequestedOutput)[] | undefined,
  signature: ModelSignature,
): string[] | undefined {
  if (requested === undefined || requested.length === 0) return undefined;
  const names: string[] = [];
  for (const output of requested) {
    const name = typeof output === 'string' ? output : output.name;
    const where = `output '${printable(name)}'`;
    if (!signature.outputs.some((s) => s.name === name)) {
      const known = signature.outputs.map((s) => s.name).join(', ');
      throw new InvalidInputError(`the model has no ${where} (outputs: ${known})`);
    }
    if (names.includes(name)) throw new InvalidInputError(`${where} is requested more than once`);
    names.push(name);
  }
  return names;
}
