/**
 * Proves that a model runs in the bundled onnxruntime before it goes into a repository: the opsets and
 * IR version it declares are ones this runtime loads, a session comes up through the serving engine, and
 * the model's warm-up (session.warmup) runs, exactly as a serving instance will do it.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { fromHalfBits } from '../../shared/core/fp16';
import { DEFAULT_SESSION_CONFIG, type ModelSessionConfig } from '../../shared/core/model-config';
import type { ArtifactFormat, EngineSessionOptions, LoadedModel } from '../../shared/core/ports';
import { elementCount, type ModelSignature, type Tensor } from '../../shared/core/tensor';
import { randomData, runWarmup, type WarmupConfig } from '../../shared/core/warmup';
import { mulberry32 } from '../onnx/prng';
import type { OnnxInfo } from './onnx-info';

/** The onnxruntime-node version this tool (and the serving functions) bundle. */
export const BUNDLED_ORT_VERSION: string = ort.env.versions.node ?? 'unknown';

/**
 * The highest opset per domain that onnxruntime 1.30 loads (measured: one more is refused with "Current
 * official support for domain ... is till opset N"). Domains not listed are left to onnxruntime to judge.
 */
export const MAX_OPSETS: Readonly<Record<string, number>> = {
  'ai.onnx': 26,
  'ai.onnx.ml': 5,
  'com.microsoft': 1,
};

/** The highest ONNX IR version onnxruntime 1.30 loads (measured, "max supported IR version: 13"). */
export const MAX_IR_VERSION = 13;

/** The model cannot be served by the bundled runtime; the message says why and what to do. */
export class UnsupportedModelError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'UnsupportedModelError';
  }
}

/**
 * Throws {@link UnsupportedModelError} for what the bundled runtime or the repository cannot take: an
 * opset or IR version above the supported maximum, weights in external files.
 */
export function assertSupported(info: OnnxInfo): void {
  for (const { domain, version } of info.opsets) {
    const max = MAX_OPSETS[domain];
    if (max !== undefined && version > max) {
      const hint =
        domain === 'ai.onnx' ? `; export again with opset_version=${Math.min(max, 17)} or lower` : '';
      throw new UnsupportedModelError(
        `${info.file} uses opset ${version} of ${domain}, but the bundled onnxruntime ${BUNDLED_ORT_VERSION} supports at most opset ${max}${hint}`,
      );
    }
  }
  if (info.irVersion > MAX_IR_VERSION) {
    throw new UnsupportedModelError(
      `${info.file} has IR version ${info.irVersion}, but the bundled onnxruntime ${BUNDLED_ORT_VERSION} reads at most IR version ${MAX_IR_VERSION}`,
    );
  }
  const external = info.initializers.externalCount + info.constants.externalCount;
  if (external > 0) {
    throw new UnsupportedModelError(
      `${info.file} keeps ${external} tensors in external data files; a repository version is one file: ` +
        `save it with the weights inside (onnx.save_model(model, path, save_as_external_data=False)), under 2 GB`,
    );
  }
}

/** The session options a serving instance uses for `format` with the model's `session` settings. */
export function servingOptions(
  format: ArtifactFormat,
  session: ModelSessionConfig = DEFAULT_SESSION_CONFIG,
): EngineSessionOptions {
  const direct = format === 'ort' && session.useModelBytesDirectly;
  return {
    graphOptimizationLevel: session.graphOptimizationLevel,
    intraOpThreads: session.intraOpThreads,
    interOpThreads: session.interOpThreads,
    executionProviders: ['cpu'],
    useModelBytesDirectly: direct,
    disablePrepacking: session.disablePrepacking ?? direct,
  };
}

let engine: OrtEngine | undefined;

function sharedEngine(): OrtEngine {
  engine ??= new OrtEngine({ defaultIntraOpThreads: availableParallelism() });
  return engine;
}

/** The model loads but its warm-up fails; `mode` says whether it was the default run or given samples. */
export class WarmupFailedError extends UnsupportedModelError {
  constructor(
    message: string,
    readonly signature: ModelSignature,
    readonly mode: WarmupConfig['mode'],
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'WarmupFailedError';
  }
}

/**
 * Creates a session through the serving engine (CPU) and runs the model's warm-up (`session.warmup`) on
 * it, as the serving loader does. The caller releases the model. A load failure is an
 * {@link UnsupportedModelError} naming `label`; a warm-up failure is a {@link WarmupFailedError}.
 */
export async function loadAndWarmUp(
  bytes: Uint8Array,
  format: ArtifactFormat,
  label: string,
  session: ModelSessionConfig = DEFAULT_SESSION_CONFIG,
): Promise<LoadedModel> {
  let model: LoadedModel;
  try {
    model = await sharedEngine().load({ bytes, format }, servingOptions(format, session));
  } catch (error) {
    throw new UnsupportedModelError(
      `onnxruntime ${BUNDLED_ORT_VERSION} cannot load ${label}: ${explainLoadFailure(error)}`,
      { cause: error },
    );
  }
  try {
    await runWarmup(model, session.warmup);
  } catch (error) {
    await model.release();
    throw new WarmupFailedError(
      `${label} loads, but ${(error as Error).message}`,
      model.signature,
      session.warmup.mode,
      { cause: error },
    );
  }
  return model;
}

const OPSET_REFUSAL =
  /Opset (\d+) is under development.*Current official support for domain (\S+) is till opset (\d+)/s;
const IR_REFUSAL = /Unsupported model IR version: (\d+), max supported IR version: (\d+)/;

/** onnxruntime's reason without its C++ source location, rephrased for the refusals we know. */
function explainLoadFailure(error: unknown): string {
  const message = rootMessage(error);
  const opset = OPSET_REFUSAL.exec(message);
  if (opset !== null)
    return `opset ${opset[1]} of ${opset[2]} is above the supported maximum, opset ${opset[3]}`;
  const ir = IR_REFUSAL.exec(message);
  if (ir !== null) return `IR version ${ir[1]} is above the supported maximum, ${ir[2]}`;
  return message;
}

function rootMessage(error: unknown): string {
  let e: unknown = error;
  while ((e as { cause?: unknown }).cause instanceof Error) e = (e as { cause: unknown }).cause;
  const message = e instanceof Error ? e.message : String(e);
  // "/onnxruntime_src/...cc:202 onnxruntime::Model::Model(...) Unsupported model IR version: ..."
  return message.replace(/^\/onnxruntime_src\/\S+ (?:[^()]|\([^)]*\))*?\) /, '').trim();
}

/**
 * Seeded, non-zero inputs for comparing two sessions: floats uniform in [-1, 1), integers in [0, 4) (safe
 * as indices), booleans at random. A symbolic dim gets one value everywhere it appears: the one `dims`
 * gives it, else 2 when it leads an input (a batch of two) and 1 elsewhere.
 */
export function checkInputs(
  signature: ModelSignature,
  seed = 1,
  dims: Readonly<Record<string, number>> = {},
): Record<string, Tensor> {
  const random = mulberry32(seed);
  const symbols = new Map<string, number>(Object.entries(dims));
  const feeds: Record<string, Tensor> = {};
  for (const input of signature.inputs) {
    const shape = input.shape.map((d, i) => {
      if (d >= 0) return d;
      const symbol = input.dims?.[i];
      const key = typeof symbol === 'string' && symbol !== '' ? symbol : `${input.name}:${i}`;
      if (!symbols.has(key)) symbols.set(key, i === 0 ? 2 : 1);
      return symbols.get(key) as number;
    });
    const data = randomData(input.datatype, elementCount(shape), random);
    feeds[input.name] = { datatype: input.datatype, shape, data };
  }
  return feeds;
}

/** How far two runs' outputs are apart. */
export interface OutputComparison {
  /** Largest |a - b| over every float element (0 when only exact types were compared). */
  readonly maxAbsDiff: number;
  readonly elements: number;
}

/**
 * Throws, naming the output and element, unless `actual` has the outputs of `expected` with the same
 * datatypes and shapes, floats within `atol + rtol·|expected|` and everything else equal.
 */
export function compareOutputs(
  expected: Readonly<Record<string, Tensor>>,
  actual: Readonly<Record<string, Tensor>>,
  { atol = 1e-4, rtol = 1e-3 } = {},
): OutputComparison {
  let maxAbsDiff = 0;
  let elements = 0;
  for (const [name, want] of Object.entries(expected)) {
    const got = actual[name];
    if (got === undefined) throw new Error(`output '${name}' is missing`);
    if (got.datatype !== want.datatype || got.shape.join(',') !== want.shape.join(',')) {
      throw new Error(
        `output '${name}' is ${got.datatype} [${got.shape.join(', ')}], expected ${want.datatype} [${want.shape.join(', ')}]`,
      );
    }
    const half = want.datatype === 'FP16';
    const float = half || want.datatype === 'FP32' || want.datatype === 'FP64';
    for (let i = 0; i < want.data.length; i++) {
      const e = half ? fromHalfBits(want.data[i] as number) : want.data[i];
      const a = half ? fromHalfBits(got.data[i] as number) : got.data[i];
      elements++;
      if (float) {
        const diff = Math.abs((a as number) - (e as number));
        const same = Number.isNaN(e as number)
          ? Number.isNaN(a as number)
          : diff <= atol + rtol * Math.abs(e as number);
        if (!same)
          throw new Error(`output '${name}'[${i}] is ${a}, expected ${e} (atol ${atol}, rtol ${rtol})`);
        if (diff > maxAbsDiff) maxAbsDiff = diff;
      } else if (a !== e) {
        throw new Error(`output '${name}'[${i}] is ${String(a)}, expected ${String(e)}`);
      }
    }
  }
  return { maxAbsDiff, elements };
}
