/**
 * Serving configuration: one pure parse of the environment into a frozen, typed object. Every bad key is
 * reported at once ({@link ConfigError}). Only `shared/runtime` passes `process.env` in; tests pass
 * plain objects. All keys share the `ONNX_SERVE_` prefix; the README's table lists them.
 */
import { type BatchConfig, parseBatchConfig } from './batch/batch-config';
import { deepFreeze } from './deep-freeze';
import { DEFAULT_MAX_QUEUE_SIZE } from './dynamic-batcher';
import { ConfigError } from './errors';
import { VARIANT_NAME } from './model-config';
import { isValidModelName } from './names';

export const ENV_PREFIX = 'ONNX_SERVE_';

export type RepositoryConfig =
  | { readonly kind: 'file'; readonly root: string }
  | {
      readonly kind: 's3';
      readonly bucket: string;
      readonly prefix: string;
      readonly endpoint: string | undefined;
      readonly region: string;
      readonly partSizeBytes: number;
      readonly concurrency: number;
    };

export interface ServingLimits {
  readonly maxBodyBytes: number;
  readonly maxTensorElements: number;
}

/** Where onnxruntime sessions run: on the event loop, or each in its own worker thread (HTTP server only). */
export const ENGINE_THREADS = ['main', 'worker'] as const;
export type EngineThread = (typeof ENGINE_THREADS)[number];

export interface ServingConfig {
  readonly repository: RepositoryConfig;
  /** A function pinned to one model answers only for it (and on `/predict`). */
  readonly pinnedModel: string | undefined;
  /**
   * The precision variant this deployment serves (`VARIANT=int8`), where a version has it and one of its
   * providers loads; the version's default file otherwise, with a warning (model-loader.ts).
   */
  readonly variant: string | undefined;
  readonly cacheMemoryBytes: number;
  readonly diskCache: { readonly dir: string; readonly maxBytes: number };
  readonly configTtlMs: number;
  readonly intraOpThreads: number;
  readonly limits: ServingLimits;
  /** Lambda: answer 504 this long before the invocation's deadline. */
  readonly timeoutMarginMs: number;
  /** HTTP server: answer 504 after this long. */
  readonly requestTimeoutMs: number;
  readonly server: {
    readonly host: string;
    readonly port: number;
    readonly shutdownGraceMs: number;
    /** Requests that may wait per model version (unless its `dynamicBatching.maxQueueSize` says); 503 past it. */
    readonly maxQueueSize: number;
    /** Bytes of request bodies being read or served at once; 503 past it, decided before a body is read. */
    readonly maxInflightBytes: number;
  };
  /** HTTP server: batch models whose config.json has `dynamicBatching` (`DYNAMIC_BATCHING=on|off`). */
  readonly dynamicBatching: boolean;
  /**
   * HTTP server: run sessions in worker threads (the default) or on the event loop
   * (`ENGINE_THREAD=worker|main`). Lambda always runs them on the event loop, whatever this says.
   */
  readonly engineThread: EngineThread;
  readonly preload: readonly string[];
  readonly logLevel: string;
  /** The batch door (`ONNX_SERVE_BATCH_*`, docs/batch.md). */
  readonly batch: BatchConfig;
}

/** Facts about the instance that defaults derive from; the runtime measures them. */
export interface InstanceFacts {
  /** The memory the process may use: the Lambda function's memory, a cgroup limit or the machine's. */
  readonly memoryBytes: number;
  readonly availableParallelism: number;
  readonly tmpDir: string;
  /**
   * Whether the runtime can compress zstd (Node's zlib from 22.15), which
   * `ONNX_SERVE_BATCH_PARQUET_COMPRESSION=zstd` needs; absent: it cannot.
   */
  readonly zstdCompression?: boolean;
}

const MB = 1024 * 1024;
const LOG_LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'SILENT', 'CRITICAL'];

type Env = Readonly<Record<string, string | undefined>>;

/** Parses the environment. Throws {@link ConfigError} listing every problem. */
export function parseConfig(env: Env, facts: InstanceFacts): ServingConfig {
  const problems: string[] = [];
  const read = new EnvReader(env, problems);

  const lambdaMemoryMb = read.int('AWS_LAMBDA_FUNCTION_MEMORY_SIZE', 0, 0, 1 << 20, false);
  const memoryBytes = lambdaMemoryMb > 0 ? lambdaMemoryMb * MB : facts.memoryBytes;
  // Sessions get most of the memory; the rest is for Node, request bodies and the downloaded bytes of
  // a model that is loading.
  const defaultCacheMb = Math.max(64, Math.floor((memoryBytes * 0.6) / MB));

  const repository = parseRepository(read, env);
  const pinned = read.string('MODEL', '');
  if (pinned !== '' && !isValidModelName(pinned))
    problems.push(`${ENV_PREFIX}MODEL: '${pinned}' is not a valid model name`);
  const variant = read.string('VARIANT', '').toLowerCase();
  if (variant !== '' && !VARIANT_NAME.test(variant))
    problems.push(
      `${ENV_PREFIX}VARIANT: '${variant}' is not a variant name (lowercase letters, digits, '-' or '_', e.g. int8)`,
    );
  const preload = read
    .string('PRELOAD', '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const name of preload) {
    if (!isValidModelName(name)) problems.push(`${ENV_PREFIX}PRELOAD: '${name}' is not a valid model name`);
  }
  const logLevel = read.string('LOG_LEVEL', 'INFO').toUpperCase();
  if (!LOG_LEVELS.includes(logLevel))
    problems.push(`${ENV_PREFIX}LOG_LEVEL: must be one of ${LOG_LEVELS.join(', ')}`);
  // Measured in BENCHMARKS.md ("Overload"): with sessions in a worker, decoding requests overlaps the runs.
  const engineThread = read.string('ENGINE_THREAD', 'worker').toLowerCase();
  if (!(ENGINE_THREADS as readonly string[]).includes(engineThread))
    problems.push(`${ENV_PREFIX}ENGINE_THREAD: must be one of ${ENGINE_THREADS.join(', ')}`);
  const portFallback = read.int('PORT', 8080, 0, 65535, false);
  const maxBodyMb = read.int('MAX_BODY_MB', 16, 1, 4096);
  // Bodies in flight get a tenth of the memory (the session cache has most of it), and always room for
  // one body of the largest size.
  const maxInflightMb = read.int(
    'MAX_INFLIGHT_MB',
    Math.max(maxBodyMb, Math.floor((memoryBytes * 0.1) / MB)),
    1,
    1 << 20,
  );
  if (maxInflightMb < maxBodyMb) {
    problems.push(
      `${ENV_PREFIX}MAX_INFLIGHT_MB: ${maxInflightMb} is below ${ENV_PREFIX}MAX_BODY_MB (${maxBodyMb}): a request of the largest size could never be read`,
    );
  }

  const config: ServingConfig = {
    repository,
    pinnedModel: pinned === '' ? undefined : pinned,
    variant: variant === '' ? undefined : variant,
    cacheMemoryBytes: read.int('CACHE_MEMORY_MB', defaultCacheMb, 1, 1 << 24) * MB,
    diskCache: {
      dir: read.string('DISK_CACHE_DIR', `${facts.tmpDir}/onnx-serve-models`),
      maxBytes: read.int('DISK_CACHE_MB', 400, 0, 1 << 24) * MB,
    },
    configTtlMs: read.int('CONFIG_TTL_SECONDS', 30, 0, 86_400) * 1000,
    intraOpThreads: read.int('INTRA_OP_THREADS', defaultThreads(lambdaMemoryMb, facts), 1, 1024),
    limits: {
      maxBodyBytes: maxBodyMb * MB,
      maxTensorElements: read.int('MAX_TENSOR_ELEMENTS', 16 * MB, 1, 2 ** 31),
    },
    timeoutMarginMs: read.int('TIMEOUT_MARGIN_MS', 250, 0, 60_000),
    requestTimeoutMs: read.int('REQUEST_TIMEOUT_MS', 30_000, 1, 3_600_000),
    server: {
      host: read.string('HOST', '127.0.0.1'),
      port: read.int('PORT', portFallback, 0, 65535),
      shutdownGraceMs: read.int('SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
      maxQueueSize: read.int('MAX_QUEUE_SIZE', DEFAULT_MAX_QUEUE_SIZE, 1, 1 << 20),
      maxInflightBytes: maxInflightMb * MB,
    },
    dynamicBatching: read.onOff('DYNAMIC_BATCHING', true),
    engineThread: engineThread === 'main' ? 'main' : 'worker',
    preload,
    logLevel,
    batch: parseBatchConfig(read, ENV_PREFIX, { zstdCompression: facts.zstdCompression === true }),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

function parseRepository(read: EnvReader, env: Env): RepositoryConfig {
  const location = read.string('MODEL_REPOSITORY', './models');
  if (!location.startsWith('s3://')) return { kind: 'file', root: location };
  const rest = location.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const prefix = slash === -1 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    read.problem(`${ENV_PREFIX}MODEL_REPOSITORY: '${bucket}' is not a valid bucket name`);
  }
  if (prefix.split('/').includes('..'))
    read.problem(`${ENV_PREFIX}MODEL_REPOSITORY: the prefix may not contain '..'`);
  const endpoint = read.string('S3_ENDPOINT', '');
  if (endpoint !== '' && !/^https?:\/\/[^\s]+$/.test(endpoint)) {
    read.problem(`${ENV_PREFIX}S3_ENDPOINT: must be an http(s) URL`);
  }
  return {
    kind: 's3',
    bucket,
    prefix,
    endpoint: endpoint === '' ? undefined : endpoint,
    region: read.string('S3_REGION', env.AWS_REGION ?? 'us-east-1'),
    partSizeBytes: read.int('S3_PART_SIZE_MB', 8, 1, 5120) * MB,
    concurrency: read.int('S3_CONCURRENCY', 8, 1, 64),
  };
}

class EnvReader {
  constructor(
    private readonly env: Env,
    private readonly problems: string[],
  ) {}

  problem(message: string): void {
    this.problems.push(message);
  }

  string(key: string, fallback: string): string {
    const value = this.env[ENV_PREFIX + key]?.trim();
    return value === undefined || value === '' ? fallback : value;
  }

  /** `on` or `off` (any case). */
  onOff(key: string, fallback: boolean): boolean {
    const value = this.string(key, fallback ? 'on' : 'off').toLowerCase();
    if (value !== 'on' && value !== 'off') this.problems.push(`${ENV_PREFIX}${key}: must be 'on' or 'off'`);
    return value === 'on' || (value !== 'off' && fallback);
  }

  /** An integer in [min, max]; `prefixed` false reads a key outside our prefix (e.g. PORT). */
  int(key: string, fallback: number, min: number, max: number, prefixed = true): number {
    const name = prefixed ? ENV_PREFIX + key : key;
    const raw = this.env[name]?.trim();
    if (raw === undefined || raw === '') return fallback;
    const value = Number(raw);
    if (!/^-?\d+$/.test(raw) || value < min || value > max) {
      this.problems.push(`${name}: '${raw}' must be an integer from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }
}

/** Lambda's CPU share grows with memory: one vCPU's worth at 1,769 MB, six at 10,240 MB. */
const LAMBDA_MB_PER_VCPU = 1769;

/**
 * onnxruntime threads per session: the instance's available parallelism, but on Lambda no more than the
 * vCPUs its memory buys. Small Lambda functions still see two CPUs while their quota is a fraction of one,
 * and threads beyond the quota only contend.
 */
function defaultThreads(lambdaMemoryMb: number, facts: InstanceFacts): number {
  if (lambdaMemoryMb <= 0) return facts.availableParallelism;
  const vcpus = Math.max(1, Math.round(lambdaMemoryMb / LAMBDA_MB_PER_VCPU));
  return Math.min(facts.availableParallelism, vcpus);
}
