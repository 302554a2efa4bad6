import { parseModelConfig, resolveVersion } from '../../shared/core/model-config';
import { sha256Hex } from '../../shared/core/model-loader';
import { ARTIFACT_FILE } from '../../shared/core/ports';
import { isPrecision, PRECISIONS } from '../onnx/precision-variant';
import { BLOCK_SIZES, DEFAULT_BLOCK_SIZE } from '../onnx/quantize-int4';
import { INT8_SCALES, type Int8Scales } from '../onnx/quantize-int8';
import { checkedSegments, RepositoryError } from '../repository/model-repository-writer';
import {
  type Command,
  integerOption,
  type ParsedArgs,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  requiredOption,
  stringOption,
  UsageError,
} from './command';
import { readOnnxInfo } from './onnx-info';
import { assertCheckDims, ortCopyOptions } from './optimize';
import {
  assertNoVariant,
  DEFAULT_RANDOM_RUNS,
  formatVariant,
  type PreparedVariant,
  prepareVariants,
  storeVariant,
  type VariantContext,
  type VariantRequest,
  variantEntry,
} from './variant';
import { DEFAULT_BOUNDS } from './variant-accuracy';

/** Options shared by `quantize` and `add --variants`. */
export const VARIANT_OPTIONS = {
  inputs: { type: 'string' },
  'random-inputs': { type: 'string' },
  'max-error': { type: 'string' },
  'min-cosine': { type: 'string' },
  'min-top1': { type: 'string' },
  force: { type: 'boolean' },
  'block-size': { type: 'string' },
  scales: { type: 'string' },
} as const;

const bound = (p: (typeof PRECISIONS)[number]) =>
  `${p} ${DEFAULT_BOUNDS[p].maxError} / ${DEFAULT_BOUNDS[p].minCosine} / ${DEFAULT_BOUNDS[p].minTop1}`;

export const VARIANT_HELP = `  --inputs <file.jsonl>      real samples to measure accuracy on, one example a line in the batch job's
                             format ({"x": [...]}, {"inputs": ...}, OIP tensors; see docs/batch.md);
                             without it, seeded random inputs shaped from the model's dims (a warning:
                             real samples are better)
  --random-inputs <n>        random input sets without --inputs (default ${DEFAULT_RANDOM_RUNS}, a batch of 2 each)
  --max-error <x>            refuse a variant whose largest error is over x times the largest |float32
                             output| (e.g. 0.05 for 5%)
  --min-cosine <x>           refuse a variant with an example whose output has a cosine similarity to the
                             float32 output under x
  --min-top1 <x>             refuse a variant whose arg-max agrees with float32 on under x of the examples,
                             where an output is class scores [batch, classes]
                             defaults (max-error / min-cosine / min-top1): ${bound('int8')}; ${bound('int4')};
                             ${bound('fp16')}
  --force                    store a variant over its bounds anyway (recorded as such in config.json)
  --scales column|tensor     int8 weight scales: one per output column (default) or one per weight
  --block-size <n>           int4 rows per block: ${BLOCK_SIZES.join(', ')} (default ${DEFAULT_BLOCK_SIZE})`;

/** A comma list of precisions, e.g. `int8,int4`. */
export function precisionList(value: string, option: string): (typeof PRECISIONS)[number][] {
  const list = value.split(',').map((s) => s.trim());
  const unknown = list.filter((p) => !isPrecision(p));
  if (list.length === 0 || unknown.length > 0 || value.trim() === '') {
    throw new UsageError(`--${option} must be one or more of ${PRECISIONS.join(', ')}, got '${value}'`);
  }
  if (new Set(list).size !== list.length)
    throw new UsageError(`--${option} names a precision twice: '${value}'`);
  return list as (typeof PRECISIONS)[number][];
}

function fractionOption(args: ParsedArgs, name: string, { max = 1 } = {}): number | undefined {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > max) {
    throw new UsageError(`--${name} must be a number from 0 to ${max}, got '${value}'`);
  }
  return n;
}

/** The variant requests and measurement settings `--to` / `--variants` and the options above ask for. */
export function variantSettings(
  args: ParsedArgs,
  precisions: readonly (typeof PRECISIONS)[number][],
): { requests: VariantRequest[]; context: Omit<VariantContext, 'label' | 'session' | 'ortCopy' | 'log'> } {
  const scales = stringOption(args, 'scales') ?? 'column';
  if (!(INT8_SCALES as readonly string[]).includes(scales)) {
    throw new UsageError(`--scales must be one of ${INT8_SCALES.join(', ')}, got '${scales}'`);
  }
  const blockSize = integerOption(args, 'block-size') ?? DEFAULT_BLOCK_SIZE;
  if (!(BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new UsageError(`--block-size must be one of ${BLOCK_SIZES.join(', ')}, got ${blockSize}`);
  }
  const bounds = {
    maxError: fractionOption(args, 'max-error', { max: Number.MAX_VALUE }),
    minCosine: fractionOption(args, 'min-cosine'),
    minTop1: fractionOption(args, 'min-top1'),
  };
  const inputsFile = stringOption(args, 'inputs');
  if (inputsFile === '') throw new UsageError('--inputs names a file');
  const randomRuns = integerOption(args, 'random-inputs');
  if (inputsFile !== undefined && randomRuns !== undefined) {
    throw new UsageError('--random-inputs applies only without --inputs');
  }
  const { level, measureRuns, checkDims } = ortCopyOptions(args);
  const requests = precisions.map((precision) => ({
    precision,
    scales: scales as Int8Scales,
    blockSize,
    bounds,
    force: args.values.force === true,
  }));
  return {
    requests,
    context: {
      inputsFile,
      randomRuns: randomRuns ?? DEFAULT_RANDOM_RUNS,
      checkDims,
      ...(level === undefined ? {} : { level }),
      // Variants skip the creation-time figures unless asked: they are measured by the benchmarks.
      measureRuns: stringOption(args, 'measure-runs') === undefined ? 0 : (measureRuns ?? 0),
    },
  };
}

export const quantizeCommand: Command = {
  name: 'quantize',
  summary: 'make an int8, int4 or fp16 variant of a version, measure its accuracy, record it in config.json',
  help: `Usage: onnx-serve-models quantize --model <name> [--version <n>] --to int8|int4|fp16 --repo <location> [options]

Makes a smaller precision variant of a stored version from its model.onnx (never replacing it):
  int8  every MatMul and Gemm with a constant weight becomes com.microsoft.DynamicQuantizeMatMul: int8
        weights (symmetric, per-column scales), activations quantised at run time; onnxruntime's
        quantize_dynamic for those ops. About a quarter of the float32 weights. For CPUs.
  int4  the same nodes become com.microsoft.MatMulNBits: 4-bit weights in blocks of --block-size rows with
        a scale and zero point each, float32 activations. About a seventh. For CPUs.
  fp16  weights and compute in float16, float32 inputs and outputs kept (casts at the edges). Half. For
        GPU providers (cuda, tensorrt), which pick it on their own.
Embeddings (Gather), convolutions and everything else are left as they are.

The variant and model.onnx are loaded through the serving engine (CPU) and run on the same inputs; the
largest and mean absolute error, the cosine similarity of outputs and, for class scores, the top-1
agreement go into config.json with the variant, which is refused when over its bounds (unless --force).
When the version has an ORT-format copy, the CPU variants get theirs (model.<variant>.ort), checked to
answer as the variant does. Stored as <model>/<version>/model.<variant>.onnx, recorded under
versions.<version>.variants.<variant>. int8 and int4 variants are never served unless a deployment
chooses them: they record runsOn ["cpu"] and no automatic providers.

Options:
  --model <name>             the model
  --version <n>              the version (default: the default version, else the highest)
  --to <precision>           int8, int4 or fp16 (or a comma list, e.g. int8,int4)
  --replace                  make the variant again when the version has one
${VARIANT_HELP}
  --level, --check-dim, --measure-runs   as for optimize, for the variant's ORT copy and random inputs
  --json                     print the result as JSON
${REPOSITORY_HELP}`,
  options: {
    ...REPOSITORY_OPTIONS,
    ...VARIANT_OPTIONS,
    model: { type: 'string' },
    version: { type: 'string' },
    to: { type: 'string' },
    replace: { type: 'boolean' },
    level: { type: 'string' },
    'measure-runs': { type: 'string' },
    'check-dim': { type: 'string', multiple: true },
    json: { type: 'boolean' },
  },
  async run(args, context) {
    if (args.positionals.length > 0)
      throw new UsageError('quantize takes no file: it works on a stored version');
    const model = requiredOption(args, 'model');
    const requested = stringOption(args, 'version');
    checkedSegments(model, requested);
    const precisions = precisionList(requiredOption(args, 'to'), 'to');
    const settings = variantSettings(args, precisions);
    const replace = args.values.replace === true;
    const writer = await repositoryFrom(args, context);
    try {
      const snapshot = await writer.readConfig(model);
      if (snapshot === undefined) throw new RepositoryError(`model '${model}' is not in ${writer.location}`);
      const config = parseModelConfig(model, snapshot.text);
      const version = resolveVersion(config, requested);
      const info = version === undefined ? undefined : config.versions[version];
      if (version === undefined || info === undefined) {
        throw new RepositoryError(`model '${model}' has no version '${requested}' in ${writer.location}`);
      }
      for (const precision of precisions) {
        await assertNoVariant(
          writer,
          model,
          version,
          precision,
          info.variants?.[precision] !== undefined,
          replace,
        );
      }
      const onnxBytes = await writer.readVersionFile(model, version, ARTIFACT_FILE.onnx);
      if (sha256Hex(onnxBytes) !== info.sha256) {
        throw new RepositoryError(
          `${model}/${version}/model.onnx does not match the sha256 in config.json: run verify`,
        );
      }
      assertCheckDims(
        readOnnxInfo(onnxBytes, `${model}/${version}/model.onnx`),
        settings.context.checkDims ?? {},
      );
      const label = `${model} version ${version}`;
      const prepared = await prepareVariants(onnxBytes, settings.requests, {
        ...settings.context,
        label,
        session: config.session,
        ortCopy: info.ort !== undefined,
        log: context.err,
      });
      for (const variant of prepared) {
        await storeVariant(writer, model, version, info.sha256, variant, replace);
      }
      report(context, prepared, {
        model,
        version,
        location: writer.location,
        onnxSize: info.size,
        json: args.values.json === true,
      });
    } finally {
      writer.close();
    }
  },
};

function report(
  context: Parameters<Command['run']>[1],
  prepared: readonly PreparedVariant[],
  where: { model: string; version: string; location: string; onnxSize: number; json: boolean },
): void {
  if (where.json) {
    const variants = Object.fromEntries(prepared.map((v) => [v.name, variantEntry(v)]));
    context.out(
      JSON.stringify(
        { model: where.model, version: where.version, repository: where.location, variants },
        null,
        2,
      ),
    );
    return;
  }
  const lines: string[] = [];
  for (const v of prepared) {
    lines.push(
      `stored the ${v.name} variant of ${where.model} version ${where.version} in ${where.location}`,
    );
    lines.push(...formatVariant(v, where.onnxSize));
  }
  context.out(lines.join('\n'));
}
