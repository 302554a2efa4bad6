/**
 * Session creation time and resident memory, each measured in a fresh Node process: in this process
 * onnxruntime, the allocator and earlier sessions would blur both numbers.
 */
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { ortSessionOptions } from '../../shared/adapters/ort-engine';
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

/** Session options as OrtEngine builds them, plus CPU only and quiet logs for a measurement. */
function measurementOptions(format: ArtifactFormat, options: EngineSessionOptions): Record<string, unknown> {
  return {
    ...ortSessionOptions(format, options, availableParallelism()),
    executionProviders: ['cpu'],
    logSeverityLevel: 3,
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
  const optionsJson = JSON.stringify(measurementOptions(format, options));
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
