/**
 * Checks decoded inputs and requested outputs against a model's signature before anything runs, so a
 * client gets a 400 that names its mistake instead of an onnxruntime message.
 */
import { InvalidInputError, PayloadTooLargeError } from './errors';
import { printable } from './names';
import type { CodecLimits, InferInput, RequestedOutput } from './protocol/infer-types';
import { boundingCount, elementCount, type ModelSignature, type Tensor } from './tensor';

export type { CodecLimits } from './protocol/infer-types';

/**
 * What a model's config.json says about the shapes its inputs may take beyond the signature.
 * {@link ModelConfig} has both fields, so a resolved model's config can be passed as it is.
 */
export interface InputRules {
  /** The model's `maxBatchSize`; 0 means no batch limit. */
  readonly maxBatchSize: number;
  /**
   * Per input name, the dims that may be 0 (config.json `emptyDims`); every other zero-extent dim is
   * refused. Own properties only: input names come from clients.
   */
  readonly emptyDims?: Readonly<Record<string, readonly number[]>>;
}

/**
 * The feeds for the engine: `inputs` by name, once each has been checked against `signature`, so that
 * onnxruntime (native code, where a bad shape can end the process) only ever sees shapes we decided on.
 *
 * Rules, each an {@link InvalidInputError} (400) naming the input: no unknown and no duplicate input,
 * every model input present, datatype equal to the model's, rank equal, every fixed dim (not -1) equal,
 * no dim 0 unless the model fixes that dim at 0 or `rules.emptyDims` lists it (an empty tensor reaching a
 * graph that does not expect one can crash onnxruntime: a transformer encoder raised SIGFPE on an empty
 * sequence), dims that share a symbolic name in the model (`batch`, `seq`) equal across and within inputs,
 * data length equal to the shape's element count, and, when `maxBatchSize` > 0, the batch (dim 0 of
 * inputs whose model dim 0 is dynamic) at most `maxBatchSize`. Inputs whose model dim 0 is fixed have no
 * batch axis there (e.g. a recurrent state `[2, batch, 128]`) and are held to that fixed dim instead.
 * A shape whose dims (zero dims taken as 1) span more than `limits.maxTensorElements` elements is a
 * {@link PayloadTooLargeError} (413).
 *
 * @example
 * const feeds = validateInputs(request.inputs, model.signature, resolved.config, limits);
 * await model.run(feeds, validateOutputs(request.outputs, model.signature));
 */
export function validateInputs(
  inputs: readonly InferInput[],
  signature: ModelSignature,
  rules: InputRules,
  limits?: CodecLimits,
): Record<string, Tensor> {
  const { maxBatchSize } = rules;
  // A null prototype: input names come from clients and must never reach Object.prototype.
  const feeds = Object.create(null) as Record<string, Tensor>;
  // Symbolic dim name -> the value the first input that has it gave, and where.
  const symbols = new Map<string, { value: number; where: string }>();
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
    const bound = boundingCount(input.shape);
    if (limits !== undefined && bound > limits.maxTensorElements) {
      const count = elementCount(input.shape);
      const holds =
        count === bound ? `holds ${count} elements` : `spans ${bound} elements (its empty dims aside)`;
      throw new PayloadTooLargeError(
        `${where}: shape ${got} ${holds}, over the limit of ${limits.maxTensorElements}`,
      );
    }
    const allowedEmpty =
      rules.emptyDims !== undefined && Object.hasOwn(rules.emptyDims, input.name)
        ? rules.emptyDims[input.name]
        : undefined;
    for (let d = 0; d < spec.shape.length; d++) {
      const want = spec.shape[d] as number;
      const dim = input.shape[d] as number;
      if (!Number.isSafeInteger(dim) || dim < 0) {
        throw new InvalidInputError(`${where}: dim ${d} is ${dim}, not a non-negative integer`);
      }
      if (want >= 0 && dim !== want) {
        throw new InvalidInputError(
          `${where}: dim ${d} is ${dim} but the model takes ${want} (shape ${expected})`,
        );
      }
      if (dim === 0 && want !== 0 && !(allowedEmpty?.includes(d) ?? false)) {
        throw new InvalidInputError(
          `${where}: dim ${d} is 0 (an empty tensor, shape ${got}); this model does not take empty ${d === 0 ? 'batches' : 'dims'} there (config.json 'emptyDims' can allow it)`,
        );
      }
      const symbol = spec.dims?.[d];
      if (typeof symbol === 'string' && symbol !== '') {
        const seen = symbols.get(symbol);
        if (seen === undefined) {
          symbols.set(symbol, { value: dim, where: `${where} dim ${d}` });
        } else if (seen.value !== dim) {
          throw new InvalidInputError(
            `${where}: dim ${d} ('${printable(symbol)}') is ${dim} but ${seen.where} ('${printable(symbol)}') is ${seen.value}: the model names both '${printable(symbol)}', so they must be equal`,
          );
        }
      }
    }
    const count = elementCount(input.shape);
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
