import { DEFAULT_SESSION_CONFIG, parseModelConfig } from '../../shared/core/model-config';
import { compareVersions } from '../../shared/core/names';
import { ARTIFACT_FILE } from '../../shared/core/ports';
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
import { assertSupported, loadAndWarmUp } from './model-check';
import {
  buildOrtCopy,
  formatOrtCopy,
  OPTIMIZE_HELP,
  OPTIMIZE_OPTIONS,
  type OrtCopy,
  ortCopyJson,
  ortCopyOptions,
} from './optimize';

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
the file), creates a session through the serving engine and runs it once on synthesised inputs. Then
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
  --optimize               also write the ORT-format copy, as 'optimize' does, before anything is stored
${OPTIMIZE_HELP}
  --json                   print the result as JSON
${REPOSITORY_HELP}`,
  options: {
    ...REPOSITORY_OPTIONS,
    ...OPTIMIZE_OPTIONS,
    model: { type: 'string' },
    version: { type: 'string' },
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
    const settings = ortCopyOptions(args);

    const { bytes, info } = await readOnnxFile(file);
    assertSupported(info);
    const writer = await repositoryFrom(args, context, { create: true });
    try {
      const snapshot = await writer.readConfig(model);
      const current = snapshot === undefined ? undefined : parseConfigJson(model, snapshot.text);
      const session =
        snapshot === undefined ? DEFAULT_SESSION_CONFIG : parseModelConfig(model, snapshot.text).session;
      const version = requested ?? nextVersion(current);
      const label = `${model} version ${version}`;
      await assertNewVersion(writer, model, version, current);

      context.err(`loading ${file} in onnxruntime and running it on synthesised inputs`);
      const loaded = await loadAndWarmUp(bytes, 'onnx', file, session);
      const signature = loaded.signature;
      await loaded.release();
      const copy = optimize
        ? await buildOrtCopy(bytes, { label, session, ...settings, log: context.err })
        : undefined;

      const written: string[] = [];
      try {
        context.err(`writing ${label} to ${writer.location}`);
        await writer.putVersionFile(model, version, ARTIFACT_FILE.onnx, bytes);
        written.push(ARTIFACT_FILE.onnx);
        if (copy !== undefined) {
          await writer.putVersionFile(model, version, ARTIFACT_FILE.ort, copy.bytes);
          written.push(ARTIFACT_FILE.ort);
        }
        await updateModelConfig(writer, model, (latest) =>
          withVersion(model, version, latest, { sha256: info.sha256, size: info.size }, copy, {
            maxBatchSize,
            makeDefault: args.values.default === true,
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
          ...(copy === undefined ? {} : { ort: ortCopyJson(model, version, writer.location, copy) }),
        };
        context.out(JSON.stringify(result, null, 2));
        return;
      }
      const lines = [
        `added ${label} to ${writer.location}`,
        `  model.onnx ${formatBytes(info.size)}  sha256 ${info.sha256}`,
        `  inputs:  ${signature.inputs.map((t) => `${t.name} ${t.datatype} [${(t.dims ?? t.shape).join(', ')}]`).join(', ')}`,
        `  outputs: ${signature.outputs.map((t) => `${t.name} ${t.datatype} [${(t.dims ?? t.shape).join(', ')}]`).join(', ')}`,
      ];
      if (copy !== undefined) lines.push(...formatOrtCopy(copy, info.size));
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

/** config.json with `version` added; throws when a concurrent writer added it first. */
function withVersion(
  model: string,
  version: string,
  current: ConfigJson | undefined,
  onnx: { sha256: string; size: number },
  copy: OrtCopy | undefined,
  options: { maxBatchSize: number | undefined; makeDefault: boolean },
): ConfigJson {
  const versions = versionsOf(current);
  if (versions[version] !== undefined) {
    throw new VersionExistsError(`${model} version ${version} was added by another writer meanwhile`);
  }
  const entry = copy === undefined ? onnx : { ...onnx, ort: { sha256: copy.sha256, size: copy.size } };
  return {
    ...(current ?? { name: model, platform: 'onnxruntime_onnx', maxBatchSize: options.maxBatchSize ?? 0 }),
    ...(options.maxBatchSize === undefined ? {} : { maxBatchSize: options.maxBatchSize }),
    versions: { ...versions, [version]: entry },
    ...(options.makeDefault ? { defaultVersion: version } : {}),
  };
}
