import {
  assertEmptyDimsMatch,
  DEFAULT_SESSION_CONFIG,
  type ModelSessionConfig,
  parseModelConfig,
} from '../../shared/core/model-config';
import { compareVersions } from '../../shared/core/names';
import { ARTIFACT_FILE, artifactFile } from '../../shared/core/ports';
import { describeWarmupRun, type WarmupConfig, warmupToJson } from '../../shared/core/warmup';
import { type ConfigJson, parseConfigJson, updateModelConfig, versionsOf } from '../repository/config-update';
import {
  checkedSegments,
  type ModelRepositoryWriter,
  VersionExistsError,
} from '../repository/model-repository-writer';
import {
  type Command,
  formatBytes,
  integerOption,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  requiredOption,
  stringOption,
  UsageError,
} from './command';
import { readOnnxFile } from './inspect';
import { assertSupported, loadAndWarmUp, WarmupFailedError } from './model-check';
import {
  assertCheckDims,
  buildOrtCopy,
  formatOrtCopy,
  OPTIMIZE_HELP,
  OPTIMIZE_OPTIONS,
  type OrtCopy,
  ortCopyJson,
  ortCopyOptions,
} from './optimize';
import { precisionList, VARIANT_HELP, VARIANT_OPTIONS, variantSettings } from './quantize';
import { formatVariant, type PreparedVariant, prepareVariants, variantEntry } from './variant';
import {
  WARMUP_HELP,
  WARMUP_OPTIONS,
  type WarmupSource,
  warmupInputExample,
  warmupOption,
} from './warmup-options';

/** The next free version: one above the highest recorded, or 1. */
export function nextVersion(config: ConfigJson | undefined): string {
  const highest = Object.keys(versionsOf(config)).sort(compareVersions).at(-1);
  return highest === undefined ? '1' : String(BigInt(highest) + 1n);
}

export const addCommand: Command = {
  name: 'add',
  summary: 'check that an ONNX file runs, then store it as a new version and record it in config.json',
  help: `Usage: onnx-serve-models add <file.onnx> --model <name> [--version <n>] --repo <location> [options]

Checks the file (an ONNX model, opsets and IR version that the bundled onnxruntime loads, weights inside
the file), creates a session through the serving engine and runs the model's warm-up on it, as a serving
instance does on load: the default run (zeros, shapes from the model's declared dims), the samples of
config.json session.warmup, or those of --warmup / --warmup-input, which are then written there. When the
default run fails, add stops and says how to give the inputs the model takes (or --warmup off). Then
writes <model>/<version>/model.onnx (a multipart upload for large files on S3) and records its sha256 and
size in <model>/config.json, atomically: a folder's config.json is replaced by rename under a lock file;
on S3 it is written with If-Match on the ETag read (If-None-Match when new), so concurrent adds cannot
lose an update. A version is never overwritten: add refuses a version that config.json records or whose
file exists.

Options:
  --model <name>           the model (letters, digits, '_', '-', '.'; at most 128)
  --version <n>            the version, a positive integer (default: one above the highest, or 1)
  --max-batch-size <n>     config.json maxBatchSize (new models default to 0: no batch limit)
  --default                make this version the default (defaultVersion); otherwise the highest serves
${WARMUP_HELP}
  --optimize               also write the ORT-format copy, as 'optimize' does, before anything is stored
                           (--level, --measure-runs and --check-dim apply with --optimize only)
${OPTIMIZE_HELP}
  --variants <list>        also make precision variants, as 'quantize --to' does, e.g. int8,int4: each is
                           measured against the model and checked against its bounds before anything is
                           stored (and gets its ORT copy with --optimize)
${VARIANT_HELP}
  --json                   print the result as JSON
${REPOSITORY_HELP}`,
  options: {
    ...REPOSITORY_OPTIONS,
    ...OPTIMIZE_OPTIONS,
    ...WARMUP_OPTIONS,
    ...VARIANT_OPTIONS,
    model: { type: 'string' },
    version: { type: 'string' },
    variants: { type: 'string' },
    'max-batch-size': { type: 'string' },
    default: { type: 'boolean' },
    optimize: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(args, context) {
    const [file, ...rest] = args.positionals;
    if (file === undefined) throw new UsageError('name the ONNX file to add');
    if (rest.length > 0) throw new UsageError(`add takes one file, got ${args.positionals.length}`);
    const model = requiredOption(args, 'model');
    requiredOption(args, 'repo');
    const requested = stringOption(args, 'version');
    checkedSegments(model, requested);
    const maxBatchSize = integerOption(args, 'max-batch-size', 0);
    const optimize = args.values.optimize === true;
    if (!optimize) {
      for (const option of Object.keys(OPTIMIZE_OPTIONS)) {
        if (args.values[option] !== undefined)
          throw new UsageError(`--${option} applies with --optimize only`);
      }
    }
    const settings = ortCopyOptions(args);
    const asked = await warmupOption(args);
    const variantList = stringOption(args, 'variants');
    const variantPlan =
      variantList === undefined ? undefined : variantSettings(args, precisionList(variantList, 'variants'));

    const { bytes, info } = await readOnnxFile(file);
    assertSupported(info);
    assertCheckDims(info, settings.checkDims ?? {});
    const writer = await repositoryFrom(args, context, { create: true });
    try {
      const snapshot = await writer.readConfig(model);
      const current = snapshot === undefined ? undefined : parseConfigJson(model, snapshot.text);
      const existing = snapshot === undefined ? undefined : parseModelConfig(model, snapshot.text);
      const recorded = existing?.session ?? DEFAULT_SESSION_CONFIG;
      const session: ModelSessionConfig =
        asked === undefined ? recorded : { ...recorded, warmup: asked.warmup };
      const source: WarmupSource =
        asked?.source ??
        (snapshot === undefined || recorded.warmup.mode === 'default' ? 'default' : 'config.json');
      const version = requested ?? nextVersion(current);
      const label = `${model} version ${version}`;
      await assertNewVersion(writer, model, version, current);

      context.err(
        `loading ${file} in onnxruntime and running its warm-up (${warmupLabel(session.warmup, source)})`,
      );
      let loaded: Awaited<ReturnType<typeof loadAndWarmUp>>;
      try {
        loaded = await loadAndWarmUp(bytes, 'onnx', file, session);
      } catch (error) {
        if (error instanceof WarmupFailedError) throw withWarmupHint(error, source);
        throw error;
      }
      const signature = loaded.signature;
      await loaded.release();
      // Serving would refuse to load this version under a config.json whose emptyDims it does not fit.
      if (existing !== undefined)
        assertEmptyDimsMatch(`model '${model}' version ${version}`, existing.emptyDims, signature);
      const copy = optimize
        ? await buildOrtCopy(bytes, { label, session, ...settings, log: context.err })
        : undefined;
      const variants: PreparedVariant[] =
        variantPlan === undefined
          ? []
          : await prepareVariants(bytes, variantPlan.requests, {
              ...variantPlan.context,
              label,
              session,
              ortCopy: optimize,
              log: context.err,
            });

      const written: string[] = [];
      try {
        context.err(`writing ${label} to ${writer.location}`);
        await writer.putVersionFile(model, version, ARTIFACT_FILE.onnx, bytes);
        written.push(ARTIFACT_FILE.onnx);
        if (copy !== undefined) {
          await writer.putVersionFile(model, version, ARTIFACT_FILE.ort, copy.bytes);
          written.push(ARTIFACT_FILE.ort);
        }
        for (const variant of variants) {
          await writer.putVersionFile(model, version, artifactFile('onnx', variant.name), variant.bytes);
          written.push(artifactFile('onnx', variant.name));
          if (variant.ort !== undefined) {
            await writer.putVersionFile(model, version, artifactFile('ort', variant.name), variant.ort.bytes);
            written.push(artifactFile('ort', variant.name));
          }
        }
        await updateModelConfig(writer, model, (latest) =>
          withVersion(model, version, latest, { sha256: info.sha256, size: info.size }, copy, {
            maxBatchSize,
            makeDefault: args.values.default === true,
            warmup: asked?.warmup,
            variants,
          }),
        );
      } catch (error) {
        // Only files this run created are removed, so a version is never half-added; but when another writer
        // recorded this version meanwhile, the files may be theirs (on a server that ignores If-None-Match).
        if (!(error instanceof VersionExistsError)) {
          for (const name of written)
            await writer.deleteVersionFile(model, version, name).catch(() => undefined);
        }
        throw error;
      }

      if (args.values.json === true) {
        const result: Record<string, unknown> = {
          model,
          version,
          repository: writer.location,
          sha256: info.sha256,
          size: info.size,
          signature,
          warmup: warmupToJson(session.warmup),
          ...(copy === undefined ? {} : { ort: ortCopyJson(model, version, writer.location, copy) }),
          ...(variants.length === 0
            ? {}
            : { variants: Object.fromEntries(variants.map((v) => [v.name, variantEntry(v)])) }),
        };
        context.out(JSON.stringify(result, null, 2));
        return;
      }
      const lines = [
        `added ${label} to ${writer.location}`,
        `  model.onnx ${formatBytes(info.size)}  sha256 ${info.sha256}`,
        `  inputs:  ${signature.inputs.map((t) => `${t.name} ${t.datatype} [${(t.dims ?? t.shape).join(', ')}]`).join(', ')}`,
        `  outputs: ${signature.outputs.map((t) => `${t.name} ${t.datatype} [${(t.dims ?? t.shape).join(', ')}]`).join(', ')}`,
        `  warm-up: ${describeWarmup(session.warmup, signature)}${asked === undefined ? '' : ' (written to config.json session.warmup)'}`,
      ];
      if (copy !== undefined) lines.push(...formatOrtCopy(copy, info.size));
      for (const variant of variants)
        lines.push(`  ${variant.name} variant:`, ...formatVariant(variant, info.size));
      context.out(lines.join('\n'));
    } finally {
      writer.close();
    }
  },
};

/** Refuses a version that config.json records, or whose file is there without a record. */
async function assertNewVersion(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  current: ConfigJson | undefined,
): Promise<void> {
  const recorded = versionsOf(current)[version];
  if (recorded !== undefined) {
    throw new VersionExistsError(
      `${model} version ${version} already exists in ${writer.location} (sha256 ${String(recorded.sha256).slice(0, 12)}…); ` +
        `versions are immutable: add it as version ${nextVersion(current)}`,
    );
  }
  for (const file of [ARTIFACT_FILE.onnx, ARTIFACT_FILE.ort]) {
    if ((await writer.statVersionFile(model, version, file)) !== undefined) {
      throw new VersionExistsError(
        `${model}/${version}/${file} exists in ${writer.location} but config.json does not record it ` +
          `(an interrupted add?): delete it or choose another --version`,
      );
    }
  }
}

function warmupLabel(warmup: WarmupConfig, source: WarmupSource): string {
  if (warmup.mode === 'off') return `none: ${source} turns it off`;
  if (warmup.mode === 'default') return 'the default run: zeros, shapes from the declared dims';
  return `${warmup.samples.length} sample${warmup.samples.length > 1 ? 's' : ''} from ${source}`;
}

/** What the warm-up runs on, for the report. */
function describeWarmup(warmup: WarmupConfig, signature: Parameters<typeof describeWarmupRun>[0]): string {
  if (warmup.mode === 'off') return 'off';
  if (warmup.mode === 'default') return `default run (${describeWarmupRun(signature)})`;
  return warmup.samples
    .map(
      (sample, i) =>
        `sample ${sample.name ?? i + 1}${sample.count > 1 ? ` x${sample.count}` : ''} (${describeWarmupRun(signature, sample)})`,
    )
    .join('; ');
}

/** The warm-up failure with what to do about it, for the source the failing warm-up came from. */
function withWarmupHint(error: WarmupFailedError, source: WarmupSource): WarmupFailedError {
  const hint =
    source === 'default'
      ? `A serving instance would log this and serve without a warm-up; add stops so that the model is added with a\n` +
        `warm-up that runs. Give the shapes and data the model takes, one --warmup-input per input, starting from\n` +
        `  ${warmupInputExample(error.signature)}\n` +
        `(<name>=<shape>[:<data>]; data zeros, random, random:<seed> or values such as 16000), or a JSON file of\n` +
        `samples with --warmup <file.json>, or add it without a warm-up run with --warmup off.`
      : source === 'config.json'
        ? `The model's config.json session.warmup gives these samples; a serving instance would refuse to load this\n` +
          `version. Replace them with --warmup-input or --warmup <file.json> (or --warmup default|off).`
        : `Fix the ${source} values: a serving instance fails to load a model whose configured warm-up fails.`;
  return new WarmupFailedError(`${error.message}\n${hint}`, error.signature, error.mode, {
    cause: error.cause,
  });
}

/** config.json with `version` added; throws when a concurrent writer added it first. */
function withVersion(
  model: string,
  version: string,
  current: ConfigJson | undefined,
  onnx: { sha256: string; size: number },
  copy: OrtCopy | undefined,
  options: {
    maxBatchSize: number | undefined;
    makeDefault: boolean;
    warmup: WarmupConfig | undefined;
    variants: readonly PreparedVariant[];
  },
): ConfigJson {
  const versions = versionsOf(current);
  if (versions[version] !== undefined) {
    throw new VersionExistsError(`${model} version ${version} was added by another writer meanwhile`);
  }
  const entry: ConfigJson =
    copy === undefined ? { ...onnx } : { ...onnx, ort: { sha256: copy.sha256, size: copy.size } };
  if (options.variants.length > 0) {
    entry.variants = Object.fromEntries(options.variants.map((v) => [v.name, variantEntry(v)]));
  }
  const base = current ?? {
    name: model,
    platform: 'onnxruntime_onnx',
    maxBatchSize: options.maxBatchSize ?? 0,
  };
  const session = typeof base.session === 'object' && base.session !== null ? base.session : {};
  return {
    ...base,
    ...(options.maxBatchSize === undefined ? {} : { maxBatchSize: options.maxBatchSize }),
    versions: { ...versions, [version]: entry },
    ...(options.makeDefault ? { defaultVersion: version } : {}),
    ...(options.warmup === undefined
      ? {}
      : { session: { ...session, warmup: warmupToJson(options.warmup) } }),
  };
}
