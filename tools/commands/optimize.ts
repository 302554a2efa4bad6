import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_SESSION_CONFIG,
  type ModelSessionConfig,
  parseModelConfig,
  resolveVersion,
} from '../../shared/core/model-config';
import { sha256Hex } from '../../shared/core/model-loader';
import { ARTIFACT_FILE } from '../../shared/core/ports';
import { NO_WARMUP, warmupFeeds } from '../../shared/core/warmup';
import { convertToOrtFormat } from '../onnx/ort-format';
import { updateModelConfig, versionsOf } from '../repository/config-update';
import {
  checkedSegments,
  type ModelRepositoryWriter,
  RepositoryError,
  VersionExistsError,
} from '../repository/model-repository-writer';
import {
  type Command,
  formatBytes,
  integerOption,
  type ParsedArgs,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  requiredOption,
  stringOption,
  UsageError,
} from './command';
import { measureSession, type SessionMeasurements } from './measure-session';
import {
  checkInputs,
  compareOutputs,
  loadAndWarmUp,
  type OutputComparison,
  servingOptions,
  WarmupFailedError,
} from './model-check';
import { type OnnxInfo, readOnnxInfo } from './onnx-info';

export const OPTIMIZATION_LEVELS = ['basic', 'extended', 'all'] as const;
export type OptimizationLevel = (typeof OPTIMIZATION_LEVELS)[number];

/** Float outputs of the ORT copy must be within `atol + rtol·|expected|` of the original's. */
export const CHECK_TOLERANCE = { atol: 1e-4, rtol: 1e-3 } as const;

export interface OrtCopyOptions {
  /** For messages, e.g. `mlp version 2`. */
  readonly label: string;
  /** The model's session settings (serving options for the check and the measurements). */
  readonly session?: ModelSessionConfig;
  /** Optimisations baked into the file. `extended` (default) is portable across CPUs. */
  readonly level?: OptimizationLevel;
  /** Fresh processes per format for the creation time and memory figures; 0 skips them. Default 3. */
  readonly measureRuns?: number;
  /** Values of symbolic dims for the check's inputs, e.g. `{ height: 48 }` (see {@link checkInputs}). */
  readonly checkDims?: Readonly<Record<string, number>>;
  /** How close the copy must answer; default {@link CHECK_TOLERANCE}. */
  readonly tolerance?: { readonly atol: number; readonly rtol: number };
  readonly log?: (text: string) => void;
}

/** An ORT-format copy that answered what the original answers, with before/after figures. */
export interface OrtCopy {
  readonly bytes: Uint8Array;
  readonly sha256: string;
  readonly size: number;
  readonly level: OptimizationLevel;
  readonly check: OutputComparison & {
    readonly inputs: Readonly<Record<string, readonly number[]>>;
    readonly tolerance?: { readonly atol: number; readonly rtol: number };
  };
  /** The `.onnx` as served (from bytes, default options): creation time and resident memory. */
  readonly before: SessionMeasurements | undefined;
  /** The `.ort` as served: zero-copy initialisers, prepacking off. */
  readonly after: SessionMeasurements | undefined;
}

/**
 * Writes the offline-optimised ORT-format copy of `onnxBytes` through onnxruntime's optimised-model output,
 * loads both as a serving instance would, runs both on the same seeded inputs and throws unless the
 * outputs agree within {@link CHECK_TOLERANCE}; then measures each in fresh processes.
 *
 * @example
 * const copy = await buildOrtCopy(bytes, { label: 'mlp version 1' });
 * copy.after?.createMs; // e.g. 40 for a model whose .onnx takes 800
 */
export async function buildOrtCopy(onnxBytes: Uint8Array, options: OrtCopyOptions): Promise<OrtCopy> {
  const level = options.level ?? 'extended';
  const session = options.session ?? DEFAULT_SESSION_CONFIG;
  const log = options.log ?? (() => {});
  const scratch = await mkdtemp(join(tmpdir(), 'onnx-serve-optimize-'));
  try {
    const ortFile = join(scratch, ARTIFACT_FILE.ort);
    log(`optimising ${options.label} (level ${level}) into the ORT format`);
    const bytes = await convertToOrtFormat(onnxBytes, ortFile, { graphOptimizationLevel: level });

    // As a serving instance: a default warm-up that fails is a warning, configured samples must run.
    const load = async (file: Uint8Array, format: 'onnx' | 'ort', label: string) => {
      try {
        return await loadAndWarmUp(file, format, label, session);
      } catch (error) {
        if (!(error instanceof WarmupFailedError) || error.mode !== 'default') throw error;
        log(`warning: ${error.message}; a serving instance logs this and serves without a warm-up`);
        return loadAndWarmUp(file, format, label, { ...session, warmup: NO_WARMUP });
      }
    };
    const original = await load(onnxBytes, 'onnx', `${options.label} (model.onnx)`);
    let check: OrtCopy['check'];
    try {
      const optimised = await load(bytes, 'ort', `${options.label} (model.ort)`);
      try {
        // A model's own warm-up sample is an input it is known to take; --check-dim asks for seeded ones.
        const sample = session.warmup.mode === 'samples' ? session.warmup.samples[0] : undefined;
        const checkDims = options.checkDims ?? {};
        const feeds =
          sample !== undefined && Object.keys(checkDims).length === 0
            ? warmupFeeds(original.signature, sample)
            : checkInputs(original.signature, 1, checkDims);
        const expected = await original.run(feeds);
        const actual = await optimised.run(feeds);
        let comparison: OutputComparison;
        try {
          comparison = compareOutputs(expected, actual, options.tolerance ?? CHECK_TOLERANCE);
        } catch (error) {
          throw new Error(
            `the ORT copy of ${options.label} answers differently: ${(error as Error).message}`,
          );
        }
        const inputs = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, t.shape]));
        check = {
          ...comparison,
          inputs,
          ...(options.tolerance === undefined ? {} : { tolerance: options.tolerance }),
        };
      } finally {
        await optimised.release();
      }
    } finally {
      await original.release();
    }

    let before: SessionMeasurements | undefined;
    let after: SessionMeasurements | undefined;
    const runs = options.measureRuns ?? 3;
    if (runs > 0) {
      const onnxFile = join(scratch, ARTIFACT_FILE.onnx);
      await writeFile(onnxFile, onnxBytes);
      log(`measuring session creation in fresh processes (${runs} per format)`);
      before = await measureSession(onnxFile, 'onnx', servingOptions('onnx', session), runs);
      after = await measureSession(ortFile, 'ort', servingOptions('ort', session), runs);
    }
    return { bytes, sha256: sha256Hex(bytes), size: bytes.byteLength, level, check, before, after };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The report lines of an {@link OrtCopy}. */
export function formatOrtCopy(copy: OrtCopy, onnxSize: number): string[] {
  const shapes = Object.entries(copy.check.inputs)
    .map(([name, shape]) => `${name} [${shape.join(', ')}]`)
    .join(', ');
  const lines = [
    `  model.ort  ${formatBytes(copy.size)} (level ${copy.level}; model.onnx ${formatBytes(onnxSize)})  sha256 ${copy.sha256}`,
    `  check: same outputs as model.onnx on seeded inputs ${shapes}: ${copy.check.elements} elements, ` +
      `max |diff| ${copy.check.maxAbsDiff.toExponential(2)} (atol ${(copy.check.tolerance ?? CHECK_TOLERANCE).atol}, rtol ${(copy.check.tolerance ?? CHECK_TOLERANCE).rtol})`,
  ];
  const { before, after } = copy;
  if (before !== undefined && after !== undefined) {
    const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
    const row = (label: string, m: SessionMeasurements) =>
      `    ${label}  create ${m.createMs.toFixed(1).padStart(8)} ms   RSS ${mib(m.rssAfterBytes).padStart(10)}` +
      `   (+${mib(m.rssAfterBytes - m.rssBeforeBytes)} over the process with the file read)`;
    lines.push(
      `  session creation as served, median of ${before.runs.length} fresh processes:`,
      row('before (model.onnx)', before),
      row('after  (model.ort) ', after),
    );
  }
  return lines;
}

/** What `--level`, `--measure-runs` and `--check-dim` ask of {@link buildOrtCopy}. */
export function ortCopyOptions(
  args: ParsedArgs,
): Pick<OrtCopyOptions, 'level' | 'measureRuns' | 'checkDims'> {
  const level = stringOption(args, 'level') ?? 'extended';
  if (!(OPTIMIZATION_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`--level must be one of ${OPTIMIZATION_LEVELS.join(', ')}, got '${level}'`);
  }
  const checkDims: Record<string, number> = Object.create(null);
  for (const value of (args.values['check-dim'] as string[] | undefined) ?? []) {
    const match = /^(.+)=([1-9]\d{0,5})$/.exec(value);
    if (match === null)
      throw new UsageError(`--check-dim must look like name=size, e.g. height=48, got '${value}'`);
    const name = match[1] as string;
    if (Object.hasOwn(checkDims, name)) throw new UsageError(`--check-dim gives '${name}' more than once`);
    checkDims[name] = Number(match[2]);
  }
  return {
    level: level as OptimizationLevel,
    measureRuns: integerOption(args, 'measure-runs', 0) ?? 3,
    checkDims,
  };
}

/**
 * Throws {@link UsageError} when `--check-dim` names a dim no input of the model has (a misspelt name
 * would otherwise leave the check on its default sizes without a word). The names are the inputs'
 * symbolic dims, and `<input>:<index>` for a dynamic dim without a name.
 */
export function assertCheckDims(info: OnnxInfo, checkDims: Readonly<Record<string, number>>): void {
  const known = new Set<string>();
  for (const input of info.inputs) {
    for (const [i, dim] of (input.shape ?? []).entries()) {
      if (typeof dim === 'string') known.add(dim);
      else if (dim === null) known.add(`${input.name}:${i}`);
    }
  }
  const unknown = Object.keys(checkDims).filter((name) => !known.has(name));
  if (unknown.length === 0) return;
  const names = unknown.map((n) => `'${n}'`).join(', ');
  throw new UsageError(
    known.size === 0
      ? `--check-dim names ${names}, but the model's inputs have no dynamic dims`
      : `--check-dim names ${names}, which no input of the model has; its dynamic dims: ${[...known].join(', ')}`,
  );
}

export const OPTIMIZE_OPTIONS = {
  level: { type: 'string' },
  'measure-runs': { type: 'string' },
  'check-dim': { type: 'string', multiple: true },
} as const;

export const OPTIMIZE_HELP = `  --level basic|extended|all   optimisations baked into model.ort (default extended: portable across CPUs;
                               all adds layout changes for this machine's instruction set)
  --measure-runs <n>           fresh processes per format for the before/after figures (default 3; 0 skips)
  --check-dim <name>=<size>    a symbolic dim's size in the check's inputs (repeatable; default: 2 for a
                               leading dim, 1 for others), e.g. --check-dim height=48 for an image model;
                               <input>:<index> for a dynamic dim without a name. Without it, a model with
                               warm-up samples is checked on its first sample`;

export const optimizeCommand: Command = {
  name: 'optimize',
  summary: "write a version's ORT-format copy (model.ort), check it answers the same, record its sha256",
  help: `Usage: onnx-serve-models optimize --model <name> [--version <n>] --repo <location> [options]

Writes <model>/<version>/model.ort: onnxruntime's offline-optimised copy of model.onnx in the ORT format,
which the serving engine loads straight from the fetched bytes (zero-copy initialisers, no prepacking).
Both files are loaded as a serving instance loads them and run on the same seeded inputs; the copy is
kept only if every output matches (atol ${CHECK_TOLERANCE.atol}, rtol ${CHECK_TOLERANCE.rtol}). Its sha256 and size go into config.json.
Reports session creation time and resident memory before (model.onnx) and after (model.ort), each
measured in fresh Node processes.

Options:
  --model <name>               the model
  --version <n>                the version (default: the default version, else the highest)
  --replace                    write the copy again when the version has one (e.g. after a runtime upgrade)
${OPTIMIZE_HELP}
  --json                       print the result as JSON
${REPOSITORY_HELP}`,
  options: {
    ...REPOSITORY_OPTIONS,
    ...OPTIMIZE_OPTIONS,
    model: { type: 'string' },
    version: { type: 'string' },
    replace: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(args, context) {
    if (args.positionals.length > 0)
      throw new UsageError(`optimize takes no file: it works on a stored version`);
    const model = requiredOption(args, 'model');
    const requested = stringOption(args, 'version');
    checkedSegments(model, requested);
    const settings = ortCopyOptions(args);
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
      const label = `${model} version ${version}`;
      await assertNoOrtCopy(writer, model, version, info.ort?.sha256, replace);
      const onnxBytes = await writer.readVersionFile(model, version, ARTIFACT_FILE.onnx);
      if (sha256Hex(onnxBytes) !== info.sha256) {
        throw new RepositoryError(
          `${model}/${version}/model.onnx does not match the sha256 in config.json: run verify`,
        );
      }
      assertCheckDims(readOnnxInfo(onnxBytes, `${model}/${version}/model.onnx`), settings.checkDims ?? {});
      const copy = await buildOrtCopy(onnxBytes, {
        label,
        session: config.session,
        ...settings,
        log: context.err,
      });
      await storeOrtCopy(writer, model, version, info.sha256, copy, replace);
      if (args.values.json === true) {
        context.out(JSON.stringify(ortCopyJson(model, version, writer.location, copy), null, 2));
      } else {
        context.out(
          [`optimised ${label} in ${writer.location}`, ...formatOrtCopy(copy, info.size)].join('\n'),
        );
      }
    } finally {
      writer.close();
    }
  },
};

/** Refuses when the version has an ORT copy (recorded, or a file left by an interrupted run) unless `replace`. */
export async function assertNoOrtCopy(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  recordedSha256: string | undefined,
  replace: boolean,
): Promise<void> {
  if (replace) return;
  if (recordedSha256 !== undefined) {
    throw new VersionExistsError(
      `${model} version ${version} already has an ORT copy (sha256 ${recordedSha256.slice(0, 12)}…): pass --replace to write it again`,
    );
  }
  if ((await writer.statVersionFile(model, version, ARTIFACT_FILE.ort)) !== undefined) {
    throw new VersionExistsError(
      `${model}/${version}/model.ort exists but config.json does not record it (an interrupted run?): pass --replace`,
    );
  }
}

/** Uploads model.ort and records it in config.json, provided the version still holds the same model.onnx. */
export async function storeOrtCopy(
  writer: ModelRepositoryWriter,
  model: string,
  version: string,
  onnxSha256: string,
  copy: OrtCopy,
  replace: boolean,
): Promise<void> {
  await writer.putVersionFile(model, version, ARTIFACT_FILE.ort, copy.bytes, { replace });
  await updateModelConfig(writer, model, (current) => {
    const versions = versionsOf(current);
    const entry = versions[version];
    if (entry?.sha256 !== onnxSha256) {
      throw new RepositoryError(`${model} version ${version} changed while it was being optimised`);
    }
    return {
      ...current,
      versions: { ...versions, [version]: { ...entry, ort: { sha256: copy.sha256, size: copy.size } } },
    };
  });
}

/** The JSON report of an optimisation. */
export function ortCopyJson(
  model: string,
  version: string,
  location: string,
  copy: OrtCopy,
): Record<string, unknown> {
  const { bytes: _bytes, ...rest } = copy;
  return { model, version, repository: location, file: ARTIFACT_FILE.ort, ...rest };
}
