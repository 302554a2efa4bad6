/**
 * Session creation time and resident memory, each measured in a fresh Node process: in this process
 * onnxruntime, the allocator and earlier sessions would blur both numbers.
 */
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import type { ArtifactFormat, EngineSessionOptions } from '../../shared/core/ports';

const run = promisify(execFile);

/** One fresh-process measurement. */
export interface SessionMeasurement {
  /** `InferenceSession.create` from the bytes in memory, in milliseconds. */
  readonly createMs: number;
  /** Resident memory with onnxruntime loaded and the file read, before the session (bytes). */
  readonly rssBeforeBytes: number;
  /** Resident memory once the session exists and the bytes are still held, as the serving side holds them. */
  readonly rssAfterBytes: number;
}

/** The median of several fresh-process runs, and each run. */
export interface SessionMeasurements extends SessionMeasurement {
  readonly runs: readonly SessionMeasurement[];
}

// Runs as `node -e`: plain JavaScript, nothing to build. The session options arrive ready-made, mirroring
// OrtEngine's (shared/adapters/ort-engine.ts) for the given serving options.
const SCRIPT = `
const [ortPath, file, optionsJson] = process.argv.slice(1);
const ort = require(ortPath);
const bytes = require('node:fs').readFileSync(file);
const rssBeforeBytes = process.memoryUsage().rss;
const start = performance.now();
ort.InferenceSession.create(bytes, JSON.parse(optionsJson)).then((session) => {
  const createMs = performance.now() - start;
  const rssAfterBytes = process.memoryUsage().rss;
  process.stdout.write(JSON.stringify({ createMs, rssBeforeBytes, rssAfterBytes, held: bytes.length }));
  return session.release();
}).catch((error) => { console.error(String(error && error.message || error)); process.exit(1); });
`;

/** onnxruntime-node session options equal to what OrtEngine builds from `options` for `format`. */
export function ortSessionOptions(
  format: ArtifactFormat,
  options: EngineSessionOptions,
): Record<string, unknown> {
  const session: Record<string, string> = {};
  if (format === 'ort' && options.useModelBytesDirectly) {
    session.use_ort_model_bytes_directly = '1';
    session.use_ort_model_bytes_for_initializers = '1';
    if (options.disablePrepacking !== false) session.disable_prepacking = '1';
  } else if (options.disablePrepacking) {
    session.disable_prepacking = '1';
  }
  return {
    executionMode: 'sequential',
    graphOptimizationLevel: options.graphOptimizationLevel,
    intraOpNumThreads: options.intraOpThreads === 0 ? availableParallelism() : options.intraOpThreads,
    interOpNumThreads: options.interOpThreads,
    executionProviders: ['cpu'],
    logSeverityLevel: 3,
    extra: { session },
  };
}

/**
 * Creates a session from `file` in `runs` fresh processes, one after another, and returns the median
 * creation time and memory.
 *
 * @example
 * const before = await measureSession('/tmp/m/model.onnx', 'onnx', servingOptions('onnx'));
 */
export async function measureSession(
  file: string,
  format: ArtifactFormat,
  options: EngineSessionOptions,
  runs = 3,
  timeoutMs = 300_000,
): Promise<SessionMeasurements> {
  const ortPath = require.resolve('onnxruntime-node');
  const optionsJson = JSON.stringify(ortSessionOptions(format, options));
  const results: SessionMeasurement[] = [];
  for (let i = 0; i < Math.max(1, runs); i++) {
    const { stdout } = await run(process.execPath, ['-e', SCRIPT, ortPath, file, optionsJson], {
      timeout: timeoutMs,
      maxBuffer: 1024 * 1024,
    });
    const { createMs, rssBeforeBytes, rssAfterBytes } = JSON.parse(stdout) as SessionMeasurement;
    results.push({ createMs, rssBeforeBytes, rssAfterBytes });
  }
  return {
    createMs: median(results.map((r) => r.createMs)),
    rssBeforeBytes: median(results.map((r) => r.rssBeforeBytes)),
    rssAfterBytes: median(results.map((r) => r.rssAfterBytes)),
    runs: results,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
