/**
 * `<root>/<model>/config.json`: what the repository says about a model. Parsed once per read into a
 * frozen object; every problem is reported at once.
 *
 * @example
 * {
 *   "name": "linear",
 *   "maxBatchSize": 64,
 *   "defaultVersion": "1",
 *   "versions": { "1": { "sha256": "…", "size": 1234, "ort": { "sha256": "…", "size": 2345 },
 *     "variants": {
 *       "fp16": { "sha256": "…", "size": 617, "precision": "fp16", "providers": ["tensorrt", "cuda"] },
 *       "int8": { "sha256": "…", "size": 420, "precision": "int8", "runsOn": ["cpu"],
 *         "ort": { "sha256": "…", "size": 900 }, "accuracy": { "inputs": "random", "relativeError": 0.01, … } } } } },
 *   "session": { "graphOptimizationLevel": "all", "executionProviders": ["tensorrt", "cuda", "cpu"] },
 *   "dynamicBatching": { "maxBatchSize": 32, "maxQueueDelayMs": 5, "maxQueueSize": 256 }
 * }
 */
import { type ParquetMappingConfig, parseParquetMapping } from './batch/parquet-mapping';
import { reportUnknownKeys, suggestion } from './config-keys';
import { deepFreeze } from './deep-freeze';
import { ModelConfigError } from './errors';
import { compareVersions, isValidVersion, printable } from './names';
import { GRAPH_OPTIMIZATION_LEVELS, type GraphOptimizationLevel } from './ports';
import { MAX_RANK } from './tensor';
import { DEFAULT_WARMUP, parseWarmup, type WarmupConfig } from './warmup';

export interface ArtifactInfo {
  readonly sha256: string;
  readonly size: number;
}

/** What a precision variant holds: float16 compute, int8 weights (DynamicQuantizeMatMul), 4-bit weights (MatMulNBits). */
export const VARIANT_PRECISIONS = ['fp16', 'int8', 'int4'] as const;
export type VariantPrecision = (typeof VARIANT_PRECISIONS)[number];

/** How far a variant answered from the float32 model when it was made (written by `models quantize`). */
export interface VariantAccuracy {
  /** `samples`: real inputs; `random`: seeded random inputs shaped from the model's dims. */
  readonly inputs?: 'samples' | 'random';
  readonly examples?: number;
  readonly maxAbsError?: number;
  readonly meanAbsError?: number;
  /** `maxAbsError` as a fraction of the largest |float32 output|. */
  readonly relativeError?: number;
  /** The lowest cosine similarity of one example's output with the float32 one. */
  readonly cosine?: number;
  /** Where an output has class scores: the fraction of examples with the same arg-max. */
  readonly top1Agreement?: number;
}

/**
 * A precision variant of a version, stored as `<version>/model.<name>.onnx` (and `model.<name>.ort`).
 * Two provider lists say who may serve it: `providers`, for which the loader picks it on its own (a GPU
 * fp16 variant: `loadPlan` in model-loader.ts), and `runsOn`, what it is made for. A CPU variant (int8,
 * int4) has `runsOn: ['cpu']` and no `providers`: it changes answers, so it is served only where a
 * deployment chooses it by name, never because the instance happens to run on a CPU.
 */
export interface VariantInfo extends ArtifactInfo {
  /** Providers the loader picks this variant for automatically, e.g. `['cuda', 'tensorrt']`; may be empty. */
  readonly providers: readonly string[];
  /** Providers the file is made for; `providers` when config.json does not say. */
  readonly runsOn: readonly string[];
  readonly precision?: VariantPrecision;
  /** The variant's ORT-format copy (`model.<name>.ort`), when the tool wrote one. */
  readonly ort?: ArtifactInfo;
  readonly accuracy?: VariantAccuracy;
}

export interface VersionInfo extends ArtifactInfo {
  /** An ORT-format copy written by `models optimize`; preferred when `session.preferOrtFormat` is on. */
  readonly ort?: ArtifactInfo;
  /** Variants by name; the loader tries a variant with the providers it lists (see model-loader.ts). */
  readonly variants?: Readonly<Record<string, VariantInfo>>;
}

export interface ModelSessionConfig {
  readonly graphOptimizationLevel: GraphOptimizationLevel;
  /** 0: the serving default (the instance's available parallelism). */
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  readonly executionProviders: readonly string[];
  /** `session.warmup`: `true` (default run), `false` (none) or warm-up samples; see warmup.ts. */
  readonly warmup: WarmupConfig;
  readonly preferOrtFormat: boolean;
  /** With the ORT format: onnxruntime uses the fetched bytes for the model and initialisers (no copy). */
  readonly useModelBytesDirectly: boolean;
  /** `undefined`: on exactly when the bytes are used directly (prepacking would copy the weights). */
  readonly disablePrepacking: boolean | undefined;
}

export interface DynamicBatchingConfig {
  readonly maxBatchSize: number;
  readonly maxQueueDelayMs: number;
  readonly maxQueueSize: number;
}

export interface ModelConfig {
  readonly name: string;
  readonly platform: 'onnxruntime_onnx';
  /** 0: the model has no batch axis; otherwise the largest first dim accepted. */
  readonly maxBatchSize: number;
  readonly defaultVersion: string | undefined;
  readonly versions: Readonly<Record<string, VersionInfo>>;
  readonly session: ModelSessionConfig;
  readonly dynamicBatching: DynamicBatchingConfig | undefined;
  /**
   * Per input name, the dims that may be 0 (an empty batch or sequence), for models that take empty
   * tensors: `{"input_ids": [1]}`. Every other zero-extent dim is refused before onnxruntime sees it.
   * A null-prototype object: looked up with input names that come from clients.
   */
  readonly emptyDims: Readonly<Record<string, readonly number[]>>;
  /**
   * `batch`: how batch jobs fill the model's inputs from Parquet columns (`idColumn`, `inputs.<input>`:
   * `{"columns": [...]}` or `{"prefix": "..."}`); absent when config.json has none (docs/batch.md, Parquet).
   */
  readonly batch?: ParquetMappingConfig;
}

export const DEFAULT_SESSION_CONFIG: ModelSessionConfig = Object.freeze({
  graphOptimizationLevel: 'all',
  intraOpThreads: 0,
  interOpThreads: 1,
  executionProviders: Object.freeze(['cpu']),
  warmup: DEFAULT_WARMUP,
  preferOrtFormat: true,
  useModelBytesDirectly: true,
  disablePrepacking: undefined,
});

const SHA256 = /^[0-9a-f]{64}$/;

/** The keys of `session` and `dynamicBatching`: any other is refused, with the nearest of these named. */
const SESSION_KEYS = [
  'graphOptimizationLevel',
  'intraOpThreads',
  'interOpThreads',
  'executionProviders',
  'warmup',
  'preferOrtFormat',
  'useModelBytesDirectly',
  'disablePrepacking',
] as const satisfies readonly (keyof ModelSessionConfig)[];
const DYNAMIC_BATCHING_KEYS = [
  'maxBatchSize',
  'maxQueueDelayMs',
  'maxQueueSize',
] as const satisfies readonly (keyof DynamicBatchingConfig)[];

type Json = Record<string, unknown>;

/** Every key config.json may hold at its top level; `batch` is parsed by batch/parquet-mapping.ts. */
const TOP_LEVEL_KEYS = [
  'name',
  'platform',
  'maxBatchSize',
  'defaultVersion',
  'versions',
  'session',
  'dynamicBatching',
  'emptyDims',
  'batch',
] as const;

const VERSION_KEYS = ['sha256', 'size', 'ort', 'variants'] as const;
// `accuracy` and `rewrite` are the model tool's records of how the variant was made and measured.
const VARIANT_KEYS = [
  'sha256',
  'size',
  'providers',
  'runsOn',
  'precision',
  'ort',
  'accuracy',
  'rewrite',
] as const;
const ARTIFACT_KEYS = ['sha256', 'size'] as const;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Parses and checks config.json text for `model`. Throws {@link ModelConfigError} listing every problem. */
export function parseModelConfig(model: string, text: string): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ModelConfigError(`model '${model}': config.json is not valid JSON`, { cause: error });
  }
  const problems: string[] = [];
  const config = readModelConfig(model, raw, problems);
  if (problems.length > 0 || config === undefined) {
    throw new ModelConfigError(`model '${model}': config.json is invalid: ${problems.join('; ')}`);
  }
  return config;
}

function readModelConfig(model: string, raw: unknown, problems: string[]): ModelConfig | undefined {
  if (!isObject(raw)) {
    problems.push('expected a JSON object');
    return undefined;
  }
  // A misspelt top-level key (`maxBatchsize`) would otherwise be ignored and its setting not apply.
  reportUnknownKeys(raw, TOP_LEVEL_KEYS, 'config.json', problems);
  if (raw.name !== undefined && raw.name !== model) {
    problems.push(`'name' is '${String(raw.name)}' but the folder is '${model}'`);
  }
  if (raw.platform !== undefined && raw.platform !== 'onnxruntime_onnx' && raw.platform !== 'onnx_onnxv1') {
    problems.push(`'platform' must be 'onnxruntime_onnx' (or its OIP name 'onnx_onnxv1')`);
  }
  const maxBatchSize = readInt(raw, 'maxBatchSize', 0, 0, 1 << 20, problems);
  const versions = readVersions(raw.versions, problems);
  let defaultVersion: string | undefined;
  if (raw.defaultVersion !== undefined) {
    if (typeof raw.defaultVersion !== 'string' || !Object.hasOwn(versions, raw.defaultVersion)) {
      problems.push(`'defaultVersion' must name one of the versions`);
    } else {
      defaultVersion = raw.defaultVersion;
    }
  }
  const session = readSession(raw.session, problems);
  const dynamicBatching = readDynamicBatching(raw.dynamicBatching, maxBatchSize, problems);
  const emptyDims = readEmptyDims(raw.emptyDims, problems);
  const batch = readBatchMapping(raw.batch, problems);
  return deepFreeze({
    name: model,
    platform: 'onnxruntime_onnx',
    maxBatchSize,
    defaultVersion,
    versions,
    session,
    dynamicBatching,
    emptyDims,
    ...(batch === undefined ? {} : { batch }),
  });
}

/** config.json's `batch` mapping, checked now so a bad one is a clear config error, not a failed job. */
function readBatchMapping(raw: unknown, problems: string[]): ParquetMappingConfig | undefined {
  if (raw === undefined) return undefined;
  try {
    return parseParquetMapping(raw);
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
    return undefined;
  }
}

function readEmptyDims(raw: unknown, problems: string[]): Record<string, readonly number[]> {
  const emptyDims = Object.create(null) as Record<string, readonly number[]>;
  if (raw === undefined) return emptyDims;
  if (!isObject(raw)) {
    problems.push(`'emptyDims' must be an object of input name -> dims that may be 0, e.g. {"x": [0]}`);
    return emptyDims;
  }
  for (const [name, dims] of Object.entries(raw)) {
    const ok =
      name.length > 0 &&
      Array.isArray(dims) &&
      dims.length > 0 &&
      dims.every((d) => Number.isSafeInteger(d) && d >= 0 && d < MAX_RANK) &&
      new Set(dims).size === dims.length;
    if (!ok) {
      problems.push(
        `'emptyDims.${printable(name)}' must be a non-empty list of distinct dim indices (0 to ${MAX_RANK - 1})`,
      );
      continue;
    }
    emptyDims[name] = [...(dims as number[])];
  }
  return emptyDims;
}

/** An input as the engine's signature or the ONNX file gives it; `shape` `null`: rank unknown. */
export interface InputShape {
  readonly name: string;
  readonly shape: readonly unknown[] | null;
}

/**
 * What is wrong with `emptyDims` for a model whose inputs are `signature.inputs`: an input it does not
 * have (a misspelt name would otherwise leave the empty dims it meant refused, without a word), or a dim
 * index past the input's rank. Only the model's file knows its inputs, so this runs once a session (or
 * the tool's check) has the signature; each problem names the key and, where one is near, the input meant.
 *
 * @example
 * emptyDimsProblems({ input_id: [1] }, signature);
 * // ["'emptyDims' names input 'input_id', which the model does not have (did you mean 'input_ids'?)"]
 */
export function emptyDimsProblems(
  emptyDims: Readonly<Record<string, readonly number[]>>,
  signature: { readonly inputs: readonly InputShape[] },
): string[] {
  const problems: string[] = [];
  const names = signature.inputs.map((s) => s.name);
  for (const [name, dims] of Object.entries(emptyDims)) {
    const spec = signature.inputs.find((s) => s.name === name);
    if (spec === undefined) {
      problems.push(
        `'emptyDims' names input '${printable(name)}', which the model does not have (${suggestion(name, names)})`,
      );
      continue;
    }
    const rank = spec.shape?.length;
    if (rank === undefined) continue;
    const past = dims.filter((d) => d >= rank);
    if (past.length > 0) {
      problems.push(
        `'emptyDims.${printable(name)}' lists dim ${past.join(', ')} but input '${printable(name)}' has rank ${rank}`,
      );
    }
  }
  return problems;
}

/**
 * Throws a {@link ModelConfigError} (503 `model_config_invalid`, as a config.json that does not parse)
 * when {@link emptyDimsProblems} finds any.
 */
export function assertEmptyDimsMatch(
  label: string,
  emptyDims: Readonly<Record<string, readonly number[]>>,
  signature: { readonly inputs: readonly InputShape[] },
): void {
  const problems = emptyDimsProblems(emptyDims, signature);
  if (problems.length > 0) {
    throw new ModelConfigError(`${label}: config.json is invalid: ${problems.join('; ')}`);
  }
}

function readVersions(raw: unknown, problems: string[]): Record<string, VersionInfo> {
  const versions: Record<string, VersionInfo> = {};
  if (!isObject(raw) || Object.keys(raw).length === 0) {
    problems.push(`'versions' must be an object with at least one version`);
    return versions;
  }
  for (const [version, info] of Object.entries(raw)) {
    if (!isValidVersion(version)) {
      problems.push(`version '${version}' is not a positive integer`);
      continue;
    }
    const artifact = readArtifact(`versions.${version}`, info, problems);
    if (artifact === undefined || !isObject(info)) continue;
    reportUnknownKeys(info, VERSION_KEYS, `versions.${version}`, problems);
    const ort =
      info.ort === undefined ? undefined : readOrtCopy(`versions.${version}.ort`, info.ort, problems);
    const variants =
      info.variants === undefined
        ? undefined
        : readVariants(`versions.${version}.variants`, info.variants, problems);
    versions[version] = {
      ...artifact,
      ...(ort === undefined ? {} : { ort }),
      ...(variants === undefined ? {} : { variants }),
    };
  }
  return versions;
}

/** What a precision variant may be called: also the value of `ONNX_SERVE_VARIANT`. */
export const VARIANT_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

function readVariants(where: string, raw: unknown, problems: string[]): Record<string, VariantInfo> {
  const variants: Record<string, VariantInfo> = {};
  if (!isObject(raw)) {
    problems.push(`'${where}' must be an object of variants by name`);
    return variants;
  }
  for (const [name, info] of Object.entries(raw)) {
    if (!VARIANT_NAME.test(name)) {
      problems.push(`'${where}': variant name '${name}' must be lowercase letters, digits, '-' or '_'`);
      continue;
    }
    const at = `${where}.${name}`;
    const artifact = readArtifact(at, info, problems);
    if (artifact === undefined || !isObject(info)) continue;
    reportUnknownKeys(info, VARIANT_KEYS, at, problems);
    const providers = readProviderList(`${at}.providers`, info.providers, problems);
    const runsOn = readProviderList(`${at}.runsOn`, info.runsOn, problems);
    if (providers === null || runsOn === null) continue;
    if ((providers ?? []).length === 0 && (runsOn ?? []).length === 0) {
      problems.push(`'${at}' must list its providers ('providers' or 'runsOn')`);
      continue;
    }
    let precision: VariantPrecision | undefined;
    if (info.precision !== undefined) {
      if ((VARIANT_PRECISIONS as readonly unknown[]).includes(info.precision)) {
        precision = info.precision as VariantPrecision;
      } else {
        problems.push(`'${at}.precision' must be one of ${VARIANT_PRECISIONS.join(', ')}`);
      }
    }
    const ort = info.ort === undefined ? undefined : readOrtCopy(`${at}.ort`, info.ort, problems);
    const accuracy = readAccuracy(`${at}.accuracy`, info.accuracy, problems);
    variants[name] = {
      ...artifact,
      providers: providers ?? [],
      runsOn: runsOn ?? providers ?? [],
      ...(precision === undefined ? {} : { precision }),
      ...(ort === undefined ? {} : { ort }),
      ...(accuracy === undefined ? {} : { accuracy }),
    };
  }
  return variants;
}

/** A list of provider names, lower-cased; `undefined` when absent, `null` (reported) when malformed. */
function readProviderList(where: string, raw: unknown, problems: string[]): string[] | undefined | null {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw) || !raw.every((p) => typeof p === 'string' && p.length > 0)) {
    problems.push(`'${where}' must be an array of provider names`);
    return null;
  }
  return raw.map((p: string) => p.toLowerCase());
}

const ACCURACY_NUMBERS = [
  'examples',
  'maxAbsError',
  'meanAbsError',
  'relativeError',
  'cosine',
  'top1Agreement',
] as const;

/** The figures of a variant's accuracy record that are numbers; other keys are the tool's business. */
function readAccuracy(where: string, raw: unknown, problems: string[]): VariantAccuracy | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) {
    problems.push(`'${where}' must be an object`);
    return undefined;
  }
  const accuracy: Record<string, unknown> = {};
  if (raw.inputs === 'samples' || raw.inputs === 'random') accuracy.inputs = raw.inputs;
  for (const key of ACCURACY_NUMBERS) {
    const value = raw[key];
    if (typeof value === 'number' && Number.isFinite(value)) accuracy[key] = value;
  }
  return accuracy as VariantAccuracy;
}

/** An ORT-format copy's entry: only `sha256` and `size`. */
function readOrtCopy(where: string, raw: unknown, problems: string[]): ArtifactInfo | undefined {
  if (isObject(raw)) reportUnknownKeys(raw, ARTIFACT_KEYS, where, problems);
  return readArtifact(where, raw, problems);
}

function readArtifact(where: string, raw: unknown, problems: string[]): ArtifactInfo | undefined {
  if (!isObject(raw)) {
    problems.push(`'${where}' must be an object with 'sha256' and 'size'`);
    return undefined;
  }
  const ok = typeof raw.sha256 === 'string' && SHA256.test(raw.sha256);
  if (!ok) problems.push(`'${where}.sha256' must be 64 lowercase hex digits`);
  const sizeOk = Number.isSafeInteger(raw.size) && (raw.size as number) > 0;
  if (!sizeOk) problems.push(`'${where}.size' must be a positive integer (bytes)`);
  return ok && sizeOk ? { sha256: raw.sha256 as string, size: raw.size as number } : undefined;
}

function readSession(raw: unknown, problems: string[]): ModelSessionConfig {
  if (raw === undefined) return DEFAULT_SESSION_CONFIG;
  if (!isObject(raw)) {
    problems.push(`'session' must be an object`);
    return DEFAULT_SESSION_CONFIG;
  }
  reportUnknownKeys(raw, SESSION_KEYS, 'session', problems);
  const d = DEFAULT_SESSION_CONFIG;
  let graphOptimizationLevel = d.graphOptimizationLevel;
  if (raw.graphOptimizationLevel !== undefined) {
    if ((GRAPH_OPTIMIZATION_LEVELS as readonly unknown[]).includes(raw.graphOptimizationLevel)) {
      graphOptimizationLevel = raw.graphOptimizationLevel as GraphOptimizationLevel;
    } else {
      problems.push(
        `'session.graphOptimizationLevel' must be one of ${GRAPH_OPTIMIZATION_LEVELS.join(', ')}`,
      );
    }
  }
  let executionProviders = d.executionProviders;
  if (raw.executionProviders !== undefined) {
    const eps = raw.executionProviders;
    if (Array.isArray(eps) && eps.length > 0 && eps.every((e) => typeof e === 'string' && e.length > 0)) {
      executionProviders = eps.map((e: string) => e.toLowerCase());
    } else {
      problems.push(`'session.executionProviders' must be a non-empty array of provider names`);
    }
  }
  let disablePrepacking: boolean | undefined;
  if (raw.disablePrepacking !== undefined)
    disablePrepacking = readBool(raw, 'disablePrepacking', false, problems, 'session.');
  return {
    graphOptimizationLevel,
    intraOpThreads: readInt(raw, 'intraOpThreads', d.intraOpThreads, 0, 1024, problems, 'session.'),
    interOpThreads: readInt(raw, 'interOpThreads', d.interOpThreads, 1, 1024, problems, 'session.'),
    executionProviders,
    warmup: parseWarmup(raw.warmup, problems),
    preferOrtFormat: readBool(raw, 'preferOrtFormat', d.preferOrtFormat, problems, 'session.'),
    useModelBytesDirectly: readBool(
      raw,
      'useModelBytesDirectly',
      d.useModelBytesDirectly,
      problems,
      'session.',
    ),
    disablePrepacking,
  };
}

function readDynamicBatching(
  raw: unknown,
  maxBatchSize: number,
  problems: string[],
): DynamicBatchingConfig | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) {
    problems.push(`'dynamicBatching' must be an object`);
    return undefined;
  }
  if (maxBatchSize === 0) {
    problems.push(`'dynamicBatching' needs a batch axis: set 'maxBatchSize' above 0`);
    return undefined;
  }
  reportUnknownKeys(raw, DYNAMIC_BATCHING_KEYS, 'dynamicBatching', problems);
  const where = 'dynamicBatching.';
  return {
    maxBatchSize: readInt(raw, 'maxBatchSize', maxBatchSize, 1, maxBatchSize, problems, where),
    maxQueueDelayMs: readInt(raw, 'maxQueueDelayMs', 5, 0, 10_000, problems, where),
    maxQueueSize: readInt(raw, 'maxQueueSize', 256, 1, 1 << 20, problems, where),
  };
}

function readInt(
  raw: Json,
  key: string,
  fallback: number,
  min: number,
  max: number,
  problems: string[],
  where = '',
): number {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
    problems.push(`'${where}${key}' must be an integer from ${min} to ${max}`);
    return fallback;
  }
  return value as number;
}

function readBool(raw: Json, key: string, fallback: boolean, problems: string[], where = ''): boolean {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    problems.push(`'${where}${key}' must be true or false`);
    return fallback;
  }
  return value;
}

/** The version a request gets: the one asked for, else the default, else the highest. */
export function resolveVersion(config: ModelConfig, requested: string | undefined): string | undefined {
  if (requested !== undefined) return Object.hasOwn(config.versions, requested) ? requested : undefined;
  if (config.defaultVersion !== undefined) return config.defaultVersion;
  return Object.keys(config.versions).sort(compareVersions).at(-1);
}
