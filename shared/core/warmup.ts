/**
 * The warm-up on load, configured per model as Triton's model warm-up is: the first runs of a session
 * allocate its buffers and pick kernels, so runs on known inputs take that cost off the first request.
 *
 * `session.warmup` in config.json is one of:
 * - `true` (the default): one run on zeros shaped by the model's declared dims ({@link defaultWarmupShapes}).
 *   It is a guess, so a failure is a warning: the session serves (see model-loader.ts).
 * - `false`: no warm-up run.
 * - an array of samples, e.g. `[{"inputs": {"input": {"shape": [1, 512], "data": "random"}}}]`: each sample
 *   runs `count` times (default 1) on the inputs it gives (inputs it leaves out get the default shape and
 *   zeros). The operator asked for these, so a failure fails the load, as in Triton.
 */
import { reportUnknownKeys } from './config-keys';
import { toHalfBits } from './fp16';
import type { LoadedModel } from './ports';
import { mulberry32 } from './prng';
import type { InferInput } from './protocol/infer-types';
import {
  allocateData,
  type Datatype,
  elementCount,
  type ModelSignature,
  type Tensor,
  type TensorData,
  type TensorSpec,
} from './tensor';
import { validateInputs } from './validate-inputs';

/** The size the default warm-up gives a dynamic dim that is not a batch axis (halved for huge inputs). */
export const WARMUP_DYNAMIC_DIM = 64;
/** The default warm-up keeps every input at or under this many elements by halving {@link WARMUP_DYNAMIC_DIM}. */
export const WARMUP_DEFAULT_MAX_ELEMENTS = 1 << 22;
/** The most elements one input of a configured sample may hold. */
export const WARMUP_MAX_ELEMENTS = 1 << 24;
/** The most samples, and runs of one sample, config.json may ask for. */
export const WARMUP_MAX_SAMPLES = 16;
export const WARMUP_MAX_COUNT = 100;

export type WarmupValue = number | string | boolean;

/** What fills a warm-up input: zeros (`''` for BYTES, `false` for BOOL), seeded random values, or given values. */
export type WarmupData =
  | { readonly kind: 'zeros' }
  | { readonly kind: 'random'; readonly seed: number }
  | { readonly kind: 'values'; readonly values: readonly WarmupValue[] };

export interface WarmupInput {
  readonly name: string;
  /** `undefined`: the default shape ({@link defaultWarmupShapes}). */
  readonly shape: readonly number[] | undefined;
  readonly data: WarmupData;
}

export interface WarmupSample {
  /** A label for logs and messages; `undefined` names the sample by its position. */
  readonly name: string | undefined;
  /** Runs of this sample. */
  readonly count: number;
  readonly inputs: readonly WarmupInput[];
}

/** `session.warmup` of a model, parsed. */
export type WarmupConfig =
  | { readonly mode: 'default' }
  | { readonly mode: 'off' }
  | { readonly mode: 'samples'; readonly samples: readonly WarmupSample[] };

export const DEFAULT_WARMUP: WarmupConfig = Object.freeze({ mode: 'default' });
export const NO_WARMUP: WarmupConfig = Object.freeze({ mode: 'off' });

/** A warm-up run failed; the message says which sample, on which inputs, and onnxruntime's reason. */
export class WarmupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'WarmupError';
  }
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads `session.warmup` of config.json, pushing every problem onto `problems` (unknown keys included, so
 * a misspelt key is never silently ignored). Shapes and values are checked against the model on load.
 *
 * @example
 * parseWarmup([{ inputs: { sr: { shape: [], data: [16000] } } }], problems);
 * // { mode: 'samples', samples: [{ name: undefined, count: 1, inputs: [{ name: 'sr', shape: [], data: ... }] }] }
 */
export function parseWarmup(raw: unknown, problems: string[], where = 'session.warmup'): WarmupConfig {
  if (raw === undefined || raw === true) return DEFAULT_WARMUP;
  if (raw === false) return NO_WARMUP;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > WARMUP_MAX_SAMPLES) {
    problems.push(
      `'${where}' must be true, false or an array of 1 to ${WARMUP_MAX_SAMPLES} warm-up samples ({"inputs": {...}, "count": n})`,
    );
    return DEFAULT_WARMUP;
  }
  const before = problems.length;
  const samples = raw.map((sample, i) => readSample(sample, `${where}[${i}]`, problems));
  return problems.length > before ? DEFAULT_WARMUP : { mode: 'samples', samples };
}

const SAMPLE_KEYS = ['name', 'count', 'inputs'];
const INPUT_KEYS = ['shape', 'data', 'seed'];

function readSample(raw: unknown, where: string, problems: string[]): WarmupSample {
  if (!isObject(raw)) {
    problems.push(`'${where}' must be an object with 'inputs'`);
    return { name: undefined, count: 1, inputs: [] };
  }
  reportUnknownKeys(raw, SAMPLE_KEYS, where, problems);
  let name: string | undefined;
  if (raw.name !== undefined) {
    if (typeof raw.name === 'string' && raw.name.length > 0 && raw.name.length <= 128) name = raw.name;
    else problems.push(`'${where}.name' must be a string of 1 to 128 characters`);
  }
  let count = 1;
  if (raw.count !== undefined) {
    if (
      Number.isSafeInteger(raw.count) &&
      (raw.count as number) >= 1 &&
      (raw.count as number) <= WARMUP_MAX_COUNT
    )
      count = raw.count as number;
    else problems.push(`'${where}.count' must be an integer from 1 to ${WARMUP_MAX_COUNT}`);
  }
  const inputs: WarmupInput[] = [];
  if (!isObject(raw.inputs)) {
    problems.push(`'${where}.inputs' must be an object of inputs by name`);
  } else {
    for (const [input, spec] of Object.entries(raw.inputs)) {
      const parsed = readInput(input, spec, `${where}.inputs.${input}`, problems);
      if (parsed !== undefined) inputs.push(parsed);
    }
  }
  return { name, count, inputs };
}

function readInput(name: string, raw: unknown, where: string, problems: string[]): WarmupInput | undefined {
  if (!isObject(raw)) {
    problems.push(`'${where}' must be an object with 'shape' and 'data'`);
    return undefined;
  }
  reportUnknownKeys(raw, INPUT_KEYS, where, problems);
  let shape: number[] | undefined;
  if (raw.shape !== undefined) {
    const dims = raw.shape;
    // No zero-extent dims: an empty tensor can fault inside onnxruntime, and warms nothing up.
    const ok =
      Array.isArray(dims) &&
      dims.length <= 32 &&
      dims.every((d) => Number.isSafeInteger(d) && (d as number) >= 1 && (d as number) <= 2 ** 31 - 1);
    if (!ok)
      problems.push(`'${where}.shape' must be an array of at most 32 dims, each an integer of at least 1`);
    else if (elementCount(dims as number[]) > WARMUP_MAX_ELEMENTS)
      problems.push(`'${where}.shape' holds more than ${WARMUP_MAX_ELEMENTS} elements`);
    else shape = dims as number[];
  }
  let data: WarmupData = { kind: 'zeros' };
  const seedGiven = raw.seed !== undefined;
  if (
    seedGiven &&
    !(Number.isSafeInteger(raw.seed) && (raw.seed as number) >= 0 && (raw.seed as number) < 2 ** 32)
  ) {
    problems.push(`'${where}.seed' must be an integer from 0 to ${2 ** 32 - 1}`);
  }
  if (raw.data === undefined || raw.data === 'zeros') {
    if (seedGiven) problems.push(`'${where}.seed' applies to "data": "random" only`);
  } else if (raw.data === 'random') {
    data = { kind: 'random', seed: seedGiven ? (raw.seed as number) : 1 };
  } else if (Array.isArray(raw.data)) {
    const values = raw.data;
    const typed = values.every(
      (v) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean',
    );
    if (values.length === 0 || !typed) {
      problems.push(
        `'${where}.data' must hold at least one value (numbers, strings for BYTES, booleans for BOOL)`,
      );
    } else if (shape !== undefined && values.length !== 1 && values.length !== elementCount(shape)) {
      problems.push(
        `'${where}.data' has ${values.length} values but shape [${shape.join(', ')}] holds ${elementCount(shape)} (give one value to fill it)`,
      );
    }
    if (seedGiven) problems.push(`'${where}.seed' applies to "data": "random" only`);
    data = { kind: 'values', values: values as WarmupValue[] };
  } else {
    problems.push(`'${where}.data' must be "zeros", "random" or an array of values`);
  }
  return { name, shape, data };
}

/** The JSON of `session.warmup` for `config` (`true`, `false` or the samples), as config.json holds it. */
export function warmupToJson(config: WarmupConfig): unknown {
  if (config.mode === 'default') return true;
  if (config.mode === 'off') return false;
  return config.samples.map((sample) => ({
    ...(sample.name === undefined ? {} : { name: sample.name }),
    ...(sample.count === 1 ? {} : { count: sample.count }),
    inputs: Object.fromEntries(
      sample.inputs.map((input) => {
        const data = input.data;
        const json: Json = {};
        if (input.shape !== undefined) json.shape = [...input.shape];
        if (data.kind === 'random')
          Object.assign(json, { data: 'random', ...(data.seed === 1 ? {} : { seed: data.seed }) });
        if (data.kind === 'values') json.data = [...data.values];
        return [input.name, json];
      }),
    ),
  }));
}

function symbolAt(input: TensorSpec, i: number): string | undefined {
  const symbol = input.dims?.[i];
  return typeof symbol === 'string' && symbol !== '' ? symbol : undefined;
}

/**
 * The shapes of the default warm-up, from the model's declared dims: a fixed dim as declared; a dynamic
 * dim that leads an input, or whose symbolic name leads one (a batch axis, e.g. `batch` in
 * `h[2, batch, 64]`), is 1; another dynamic dim with a symbolic name (e.g. `sequence`, `height`) is
 * {@link WARMUP_DYNAMIC_DIM}, the same everywhere the name appears, halved until no input holds more than
 * {@link WARMUP_DEFAULT_MAX_ELEMENTS}; a dynamic dim without a name is 1, since nothing tells which other
 * dims it must agree with, and 1 agrees with a batch of one.
 *
 * @example
 * // input[batch, sequence], h[2, batch, 64]
 * defaultWarmupShapes(signature); // { input: [1, 64], h: [2, 1, 64] }
 */
export function defaultWarmupShapes(signature: ModelSignature): Record<string, number[]> {
  const batchSymbols = new Set<string>();
  for (const input of signature.inputs) {
    const symbol = symbolAt(input, 0);
    if (symbol !== undefined && (input.shape[0] as number) < 0) batchSymbols.add(symbol);
  }
  const shapesFor = (size: number) =>
    signature.inputs.map((input) =>
      input.shape.map((d, i) => {
        if (d >= 0) return d;
        const symbol = symbolAt(input, i);
        return i === 0 || symbol === undefined || batchSymbols.has(symbol) ? 1 : size;
      }),
    );
  let size = WARMUP_DYNAMIC_DIM;
  let shapes = shapesFor(size);
  while (size > 1 && shapes.some((s) => elementCount(s) > WARMUP_DEFAULT_MAX_ELEMENTS)) {
    size >>= 1;
    shapes = shapesFor(size);
  }
  const result: Record<string, number[]> = Object.create(null);
  for (const [i, input] of signature.inputs.entries()) result[input.name] = shapes[i] as number[];
  return result;
}

/**
 * Seeded values for `datatype`: floats uniform in [-1, 1), integers in [0, 4) (safe as indices and
 * sizes), booleans at random, BYTES one lowercase letter each.
 */
export function randomData(datatype: Datatype, length: number, random: () => number): TensorData {
  const data = allocateData(datatype, length);
  for (let i = 0; i < data.length; i++) {
    const r = random();
    if (data instanceof Float32Array || data instanceof Float64Array) data[i] = r * 2 - 1;
    else if (data instanceof BigInt64Array || data instanceof BigUint64Array)
      data[i] = BigInt(Math.floor(r * 4));
    else if (Array.isArray(data)) data[i] = String.fromCharCode(97 + Math.floor(r * 26));
    else if (datatype === 'FP16') data[i] = toHalfBits(r * 2 - 1);
    else if (datatype === 'BOOL') data[i] = r < 0.5 ? 0 : 1;
    else data[i] = Math.floor(r * 4);
  }
  return data;
}

const INTEGER_RANGES: Partial<Record<Datatype, readonly [number, number]>> = {
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** Given values as `datatype`, one value filling every element; throws {@link WarmupError} naming the input. */
function valuesData(
  input: string,
  datatype: Datatype,
  values: readonly WarmupValue[],
  length: number,
): TensorData {
  if (values.length !== 1 && values.length !== length) {
    throw new WarmupError(`warm-up input '${input}' has ${values.length} values for ${length} elements`);
  }
  const data = allocateData(datatype, length);
  for (let i = 0; i < length; i++) {
    const v = values.length === 1 ? values[0] : values[i];
    const bad = () =>
      new WarmupError(
        `warm-up input '${input}': value ${JSON.stringify(v)} is not a valid ${datatype} value`,
      );
    if (datatype === 'BYTES') {
      if (typeof v !== 'string') throw bad();
      (data as string[])[i] = v;
    } else if (datatype === 'BOOL') {
      if (v !== true && v !== false && v !== 0 && v !== 1) throw bad();
      (data as Uint8Array)[i] = v === true || v === 1 ? 1 : 0;
    } else if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw bad();
    } else if (datatype === 'FP16') {
      (data as Uint16Array)[i] = toHalfBits(v);
    } else if (datatype === 'FP32' || datatype === 'FP64') {
      (data as Float32Array)[i] = v;
    } else {
      const range = INTEGER_RANGES[datatype] as readonly [number, number];
      if (!Number.isInteger(v) || v < range[0] || v > range[1]) throw bad();
      if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[i] = BigInt(v);
      else (data as Int32Array)[i] = v;
    }
  }
  return data;
}

/**
 * The feeds of one warm-up run: `sample`'s inputs, and for inputs it leaves out (or every input, without a
 * sample) the default shape and zeros. Checked against the model as a request is ({@link validateInputs}):
 * throws {@link WarmupError} naming the input for an input the model lacks, a wrong rank or fixed dim, or
 * a value the datatype cannot hold.
 *
 * @example
 * await model.run(warmupFeeds(model.signature));
 */
export function warmupFeeds(signature: ModelSignature, sample?: WarmupSample): Record<string, Tensor> {
  const known = signature.inputs.map((s) => s.name);
  for (const input of sample?.inputs ?? []) {
    if (!known.includes(input.name)) {
      throw new WarmupError(
        `warm-up input '${input.name}' is not an input of the model (inputs: ${known.join(', ')})`,
      );
    }
  }
  const defaults = defaultWarmupShapes(signature);
  const inputs: InferInput[] = signature.inputs.map((spec) => {
    const given = sample?.inputs.find((i) => i.name === spec.name);
    const shape = given?.shape ?? (defaults[spec.name] as number[]);
    const length = elementCount(shape);
    const data = given?.data ?? { kind: 'zeros' };
    return {
      name: spec.name,
      datatype: spec.datatype,
      shape,
      data:
        data.kind === 'zeros'
          ? allocateData(spec.datatype, length)
          : data.kind === 'random'
            ? randomData(spec.datatype, length, mulberry32(data.seed))
            : valuesData(spec.name, spec.datatype, data.values, length),
    };
  });
  try {
    return validateInputs(inputs, signature, { maxBatchSize: 0 });
  } catch (error) {
    throw new WarmupError(`warm-up ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The default warm-up's inputs: {@link defaultWarmupShapes}, zeros. Kept for callers that want one
 * synthesised request.
 */
export function synthesizeInputs(signature: ModelSignature): Record<string, Tensor> {
  return warmupFeeds(signature);
}

/** `input [1, 512] random, sr [] values, state [2, 1, 128] zeros`: what a warm-up run is given. */
export function describeWarmupRun(signature: ModelSignature, sample?: WarmupSample): string {
  const defaults = defaultWarmupShapes(signature);
  return signature.inputs
    .map((spec) => {
      const given = sample?.inputs.find((i) => i.name === spec.name);
      const shape = given?.shape ?? defaults[spec.name] ?? [];
      return `${spec.name} [${shape.join(', ')}] ${given?.data.kind ?? 'zeros'}`;
    })
    .join(', ');
}

/**
 * Runs `warmup` on `model`: nothing when off, the default run, or each sample `count` times. Throws
 * {@link WarmupError} for the first run that fails, naming the sample, its inputs and onnxruntime's reason
 * (the cause keeps the original error).
 */
export async function runWarmup(
  model: Pick<LoadedModel, 'run' | 'signature'>,
  warmup: WarmupConfig,
): Promise<void> {
  if (warmup.mode === 'off') return;
  const samples = warmup.mode === 'default' ? [undefined] : warmup.samples;
  for (const [i, sample] of samples.entries()) {
    const label =
      sample === undefined
        ? 'the default warm-up run'
        : `warm-up sample ${sample.name === undefined ? i + 1 : `'${sample.name}'`}`;
    let feeds: Record<string, Tensor>;
    try {
      feeds = warmupFeeds(model.signature, sample);
    } catch (error) {
      throw new WarmupError(`${label}: ${(error as Error).message}`, { cause: error });
    }
    for (let n = 0; n < (sample?.count ?? 1); n++) {
      try {
        await model.run(feeds);
      } catch (error) {
        throw new WarmupError(
          `${label} (${describeWarmupRun(model.signature, sample)}) failed: ${rootMessage(error)}`,
          { cause: error },
        );
      }
    }
  }
}

/** The innermost message, without onnxruntime's C++ source location. */
function rootMessage(error: unknown): string {
  let e: unknown = error;
  while ((e as { cause?: unknown }).cause instanceof Error) e = (e as { cause: unknown }).cause;
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/^\/onnxruntime_src\/\S+ (?:[^()]|\([^)]*\))*?\) /, '').trim();
}
