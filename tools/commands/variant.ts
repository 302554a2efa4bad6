/**
 * Precision variants of a version, from the float32 file to a stored, recorded variant: the graph is
 * rewritten (tools/onnx/precision-variant.ts), both models run through the serving engine on the same
 * inputs, the accuracy is measured and held against the bounds, the ORT-format copy is written and checked
 * when the version has one, and the files and the config.json record are written as `optimize` writes
 * an ORT copy: files first, then config.json, only if the version still holds the same model.onnx.
 */
import { DEFAULT_SESSION_CONFIG, type ModelSessionConfig } from '../../shared/core/model-config';
import { sha256Hex } from '../../shared/core/model-loader';
import { artifactFile } from '../../shared/core/ports';
import type { Tensor } from '../../shared/core/tensor';
import {
  buildPrecisionVariant,
  type Precision,
  type PrecisionOptions,
  type RewriteReport,
} from '../onnx/precision-variant';
import { type ConfigJson, updateModelConfig, versionsOf } from '../repository/config-update';
import {
  type ModelRepositoryWriter,
  RepositoryError,
  VersionExistsError,
} from '../repository/model-repository-writer';
import { formatBytes } from './command';
import { BUNDLED_ORT_VERSION, loadAndWarmUp } from './model-check';
import { buildOrtCopy, CHECK_TOLERANCE, type OptimizationLevel, type OrtCopy } from './optimize';
import { randomInputs, readSampleInputs, type SampleSet } from './sample-inputs';
import {
  type AccuracyBounds,
  type AccuracyRecord,
  boundViolations,
  DEFAULT_BOUNDS,
  formatAccuracy,
  measureAccuracy,
} from './variant-accuracy';

/** Random input sets when no `--inputs` file is given (each a batch of 2 where dim 0 is symbolic). */
export const DEFAULT_RANDOM_RUNS = 8;

/** Who serves each kind of variant (see `VariantInfo` in shared/core/model-config.ts). */
export const VARIANT_PROVIDERS: Readonly<
  Record<Precision, { readonly providers: readonly string[]; readonly runsOn: readonly string[] }>
> = {
  // Picked automatically where a GPU provider loads, as precision variants always were.
  fp16: { providers: ['cuda', 'tensorrt'], runsOn: ['cuda', 'tensorrt'] },
  // Changes answers on the CPU a deployment runs anyway: served only where a deployment chooses it.
  int8: { providers: [], runsOn: ['cpu'] },
  int4: { providers: [], runsOn: ['cpu'] },
};

/** The variant answers too far from the float32 model and `--force` was not given. */
export class VariantRejectedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VariantRejectedError';
  }
}

/** What to make and how to check it. */
export interface VariantRequest extends PrecisionOptions {
  readonly precision: Precision;
  /** Bounds over the defaults of the precision ({@link DEFAULT_BOUNDS}); `undefined` keeps a default. */
  readonly bounds?: { readonly [K in keyof AccuracyBounds]?: number | undefined };
  /** Keep a variant over its bounds (recorded as such). */
  readonly force?: boolean;
}

/** What every variant of one run shares. */
export interface VariantContext {
  /** For messages, e.g. `mlp version 2`. */
  readonly label: string;
  readonly session?: ModelSessionConfig;
  /** A JSON Lines file of real samples; seeded random inputs without one. */
  readonly inputsFile?: string | undefined;
  /** Random input sets without a file (default {@link DEFAULT_RANDOM_RUNS}). */
  readonly randomRuns?: number;
  /** Values of symbolic dims for random inputs, e.g. `{ height: 48 }`. */
  readonly checkDims?: Readonly<Record<string, number>> | undefined;
  /** Write and check the ORT-format copy of each CPU variant (when the version has one). */
  readonly ortCopy?: boolean;
  readonly level?: OptimizationLevel;
  readonly measureRuns?: number;
  readonly log?: (text: string) => void;
}

/** A variant ready to store: its bytes, its ORT copy, what was rewritten and how well it answers. */
export interface PreparedVariant {
  readonly name: string;
  readonly precision: Precision;
  readonly bytes: Uint8Array;
  readonly sha256: string;
  readonly size: number;
  readonly ort: OrtCopy | undefined;
  /** Why there is no ORT copy when the version has one. */
  readonly ortSkipped?: string;
  readonly rewrite: RewriteReport;
  readonly accuracy: AccuracyRecord;
  readonly bounds: AccuracyBounds;
  /** The bounds it breaks (stored only with `force`). */
  readonly violations: readonly string[];
  readonly providers: readonly string[];
  readonly runsOn: readonly string[];
}

/**
 * Builds, measures and checks each requested variant of `onnxBytes` (the version's float32 file). Throws
 * {@link VariantRejectedError} for the first variant over its bounds without `force`, before anything of
 * any variant is stored.
 */
export async function prepareVariants(
  onnxBytes: Uint8Array,
  requests: readonly VariantRequest[],
  context: VariantContext,
): Promise<PreparedVariant[]> {
  const log = context.log ?? (() => {});
  const session = context.session ?? DEFAULT_SESSION_CONFIG;
  const original = await loadAndWarmUp(onnxBytes, 'onnx', `${context.label} (model.onnx)`, session);
  let samples: SampleSet;
  const expected: Record<string, Tensor>[] = [];
  try {
    if (context.inputsFile === undefined) {
      samples = randomInputs(
        original.signature,
        context.randomRuns ?? DEFAULT_RANDOM_RUNS,
        context.checkDims,
      );
      log(
        `measuring accuracy on ${samples.examples} seeded random examples: real samples (--inputs file.jsonl) ` +
          `measure what your users will see far better`,
      );
    } else {
      samples = await readSampleInputs(context.inputsFile, original.signature);
      log(`measuring accuracy on ${samples.examples} samples from ${context.inputsFile}`);
    }
    for (const feeds of samples.feeds) expected.push(await original.run(feeds));
  } finally {
    await original.release();
  }

  const prepared: PreparedVariant[] = [];
  for (const request of requests) {
    const { precision } = request;
    const label = `${context.label} ${precision}`;
    log(`rewriting ${context.label} to ${precision}`);
    const variant = buildPrecisionVariant(onnxBytes, precision, request);
    const model = await loadAndWarmUp(variant.bytes, 'onnx', `${label} (model.${precision}.onnx)`, session);
    const actual: Record<string, Tensor>[] = [];
    try {
      for (const feeds of samples.feeds) actual.push(await model.run(feeds));
    } finally {
      await model.release();
    }
    const accuracy = measureAccuracy(expected, actual, samples.source, samples.examples);
    const bounds: AccuracyBounds = { ...DEFAULT_BOUNDS[precision], ...definedOnly(request.bounds ?? {}) };
    const violations = boundViolations(accuracy, bounds);
    log(`${label}: ${formatAccuracy(accuracy)}`);
    if (precision !== 'fp16' && variant.bytes.byteLength > onnxBytes.byteLength * 0.9) {
      log(
        `${label} keeps ${((variant.bytes.byteLength / onnxBytes.byteLength) * 100).toFixed(0)}% of the bytes: the ` +
          `weights are mostly elsewhere than in MatMul/Gemm (convolutions, embeddings), which stay float32`,
      );
    }
    if (violations.length > 0 && request.force !== true) {
      throw new VariantRejectedError(
        `the ${precision} variant of ${context.label} answers too far from float32: ${violations.join('; ')} ` +
          `(${formatAccuracy(accuracy)}); loosen the bounds or pass --force to store it anyway`,
      );
    }
    let ort: OrtCopy | undefined;
    let ortSkipped: string | undefined;
    if (context.ortCopy === true) {
      if (VARIANT_PROVIDERS[precision].runsOn.includes('cpu')) {
        ort = await buildOrtCopy(variant.bytes, {
          label: `${label}`,
          session,
          ...(context.level === undefined ? {} : { level: context.level }),
          measureRuns: context.measureRuns ?? 0,
          // Activations are quantised at run time: the copy's optimisation level moves float values by 1e-6
          // (measured), which turns into a quantisation step here and there downstream. The copy must answer
          // as close to the variant as the variant answered to float32.
          tolerance: {
            atol: Math.max(CHECK_TOLERANCE.atol, accuracy.maxAbsError),
            rtol: CHECK_TOLERANCE.rtol,
          },
          ...(context.checkDims === undefined ? {} : { checkDims: context.checkDims }),
          log,
        });
      } else {
        // An ORT-format file carries optimisations made for the provider that wrote it (the CPU here).
        ortSkipped =
          'no ORT copy: ORT-format optimisations are made for the CPU provider, this variant is for GPUs';
      }
    }
    prepared.push({
      name: precision,
      precision,
      bytes: variant.bytes,
      sha256: sha256Hex(variant.bytes),
      size: variant.bytes.byteLength,
      ort,
      ...(ortSkipped === undefined ? {} : { ortSkipped }),
      rewrite: variant.report,
      accuracy,
      bounds,
      violations,
      ...VARIANT_PROVIDERS[precision],
    });
  }
  return prepared;
}

function definedOnly(
  value: { readonly [K in keyof AccuracyBounds]?: number | undefined },
): Partial<AccuracyBounds> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
}

/** JSON cannot hold Infinity or NaN: a figure that is not finite is recorded as null. */
function finite(value: number): number | null {
  return Number.isFinite(value) ? value : null;
}

/** The `versions.<v>.variants.<name>` entry of config.json for a prepared variant. */
export function variantEntry(variant: PreparedVariant): ConfigJson {
  const a = variant.accuracy;
  const { precision: _precision, ...rewrite } = variant.rewrite;
  return {
    sha256: variant.sha256,
    size: variant.size,
    precision: variant.precision,
    ...(variant.providers.length === 0 ? {} : { providers: [...variant.providers] }),
    runsOn: [...variant.runsOn],
    ...(variant.ort === undefined ? {} : { ort: { sha256: variant.ort.sha256, size: variant.ort.size } }),
    accuracy: {
      inputs: a.inputs,
      examples: a.examples,
      maxAbsError: finite(a.maxAbsError),
      meanAbsError: finite(a.meanAbsError),
      relativeError: finite(a.relativeError),
      cosine: finite(a.cosine),
      ...(a.top1Agreement === undefined ? {} : { top1Agreement: a.top1Agreement }),
      bounds: variant.bounds,
      withinBounds: variant.violations.length === 0,
      outputs: Object.fromEntries(
        Object.entries(a.outputs).map(([name, o]) => [
          name,
          Object.fromEntries(Object.entries(o).map(([k, v]) => [k, finite(v as number)])),
        ]),
      ),
    },
    rewrite: { ...rewrite, onnxruntime: BUNDLED_ORT_VERSION },
  };
}

/** Refuses when the version has the variant (recorded, or files left by an interrupted run) unless `replace`. */
export async function assertNoVariant(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  name: string,
  recorded: boolean,
  replace: boolean,
): Promise<void> {
  if (replace) return;
  if (recorded) {
    throw new VersionExistsError(
      `${model} version ${version} already has its ${name} variant: pass --replace to make it again`,
    );
  }
  for (const format of ['onnx', 'ort'] as const) {
    const file = artifactFile(format, name);
    if ((await writer.statVersionFile(model, version, file)) !== undefined) {
      throw new VersionExistsError(
        `${model}/${version}/${file} exists but config.json does not record it (an interrupted run?): pass --replace`,
      );
    }
  }
}

/** Writes a variant's files (model.<name>.onnx, model.<name>.ort); returns the names written. */
export async function putVariantFiles(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  variant: PreparedVariant,
  replace: boolean,
): Promise<string[]> {
  const written: string[] = [];
  try {
    const onnxFile = artifactFile('onnx', variant.name);
    await writer.putVersionFile(model, version, onnxFile, variant.bytes, { replace });
    written.push(onnxFile);
    if (variant.ort !== undefined) {
      const ortFile = artifactFile('ort', variant.name);
      await writer.putVersionFile(model, version, ortFile, variant.ort.bytes, { replace });
      written.push(ortFile);
    }
  } catch (error) {
    if (!replace)
      for (const file of written) await writer.deleteVersionFile(model, version, file).catch(() => undefined);
    throw error;
  }
  return written;
}

/**
 * Stores `variant` as `versions.<version>.variants.<name>`: its files, then config.json, provided the
 * version still holds the model.onnx (`onnxSha256`) it was made from. Files this run created are removed
 * when the config update fails.
 */
export async function storeVariant(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  onnxSha256: string,
  variant: PreparedVariant,
  replace: boolean,
): Promise<void> {
  const written = await putVariantFiles(writer, model, version, variant, replace);
  try {
    await updateModelConfig(writer, model, (current) => {
      const versions = versionsOf(current);
      const entry = versions[version] as ConfigJson | undefined;
      if (entry?.sha256 !== onnxSha256) {
        throw new RepositoryError(
          `${model} version ${version} changed while its ${variant.name} variant was made`,
        );
      }
      const variants = (entry.variants ?? {}) as ConfigJson;
      if (!replace && variants[variant.name] !== undefined) {
        throw new VersionExistsError(
          `${model} version ${version} got a ${variant.name} variant from another writer meanwhile`,
        );
      }
      return {
        ...current,
        versions: {
          ...versions,
          [version]: { ...entry, variants: { ...variants, [variant.name]: variantEntry(variant) } },
        },
      };
    });
  } catch (error) {
    if (!replace)
      for (const file of written) await writer.deleteVersionFile(model, version, file).catch(() => undefined);
    throw error;
  }
}

/** The report lines of a prepared variant. */
export function formatVariant(variant: PreparedVariant, onnxSize: number): string[] {
  const ratio = `${((variant.size / onnxSize) * 100).toFixed(1)}% of model.onnx ${formatBytes(onnxSize)}`;
  const lines = [
    `  model.${variant.name}.onnx  ${formatBytes(variant.size)} (${ratio})  sha256 ${variant.sha256}`,
  ];
  if (variant.ort !== undefined) {
    lines.push(
      `  model.${variant.name}.ort   ${formatBytes(variant.ort.size)}  sha256 ${variant.ort.sha256}`,
    );
  } else if (variant.ortSkipped !== undefined) {
    lines.push(`  ${variant.ortSkipped}`);
  }
  const r = variant.rewrite;
  if (r.precision === 'fp16') {
    const kept = Object.entries(r.float32Ops).map(([op, n]) => `${n} ${op}`);
    lines.push(
      `  rewrite: ${r.weights} weights to float16, ${r.casts} casts${kept.length > 0 ? `, kept in float32: ${kept.join(', ')}` : ''}`,
    );
  } else {
    const detail = r.precision === 'int8' ? `per-${r.scales} scales` : `block size ${r.blockSize}`;
    lines.push(`  rewrite: ${r.nodes} MatMul/Gemm to ${r.op} (${detail})`);
    for (const s of r.skipped) lines.push(`    left as it was: ${s.node} (${s.op}): ${s.reason}`);
  }
  lines.push(`  accuracy: ${formatAccuracy(variant.accuracy)}`);
  if (variant.violations.length > 0)
    lines.push(`  OVER ITS BOUNDS (stored with --force): ${variant.violations.join('; ')}`);
  const auto =
    variant.providers.length === 0
      ? 'served only where a deployment chooses it'
      : `picked on its own for ${variant.providers.join(', ')}`;
  lines.push(`  for: ${variant.runsOn.join(', ')} (${auto})`);
  return lines;
}
