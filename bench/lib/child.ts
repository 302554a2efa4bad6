/**
 * Fresh Node processes for the measurements that need one (a cold start is only cold once per process),
 * and the one-line protocol they report through: a JSON object `{"benchResult": ...}` on stdout.
 */
import { spawn } from 'node:child_process';

const RESULT_KEY = 'benchResult';
const TAIL_CHARS = 4000;

/** Milliseconds since the epoch, with sub-millisecond resolution, comparable across processes. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Writes the child's result as the one line the parent looks for. */
export function reportResult(result: unknown): void {
  process.stdout.write(`${JSON.stringify({ [RESULT_KEY]: result })}\n`);
}

/** What a child run gave back. */
export interface ChildRun<T> {
  /** {@link epochNow} in the parent right before the spawn: "process start" of the measurement. */
  readonly spawnedAt: number;
  readonly result: T;
  /** The JSON lines of stdout that `keepLine` accepted (e.g. the service's structured logs). */
  readonly lines: readonly Record<string, unknown>[];
}

export interface ChildOptions {
  /** A JavaScript file run with this Node (`process.execPath`). */
  readonly script: string;
  readonly args?: readonly string[];
  /** The child's whole environment (nothing is inherited implicitly). */
  readonly env: NodeJS.ProcessEnv;
  readonly nodeOptions?: readonly string[];
  readonly timeoutMs: number;
  /** Which other JSON lines of stdout to keep; by default none (a chatty child costs no memory here). */
  readonly keepLine?: (line: Record<string, unknown>) => boolean;
}

/**
 * Spawns `node script ...args`, waits for it to exit, and returns its `{"benchResult": ...}` line. Rejects
 * with the tail of its output when it exits non-zero, reports nothing, or runs past `timeoutMs`.
 *
 * @example
 * const { spawnedAt, result } = await runChild<{ ms: number }>({ script, env, timeoutMs: 60_000 });
 */
export function runChild<T>(options: ChildOptions): Promise<ChildRun<T>> {
  return new Promise((resolve, reject) => {
    const spawnedAt = epochNow();
    const child = spawn(
      process.execPath,
      [...(options.nodeOptions ?? []), options.script, ...(options.args ?? [])],
      {
        env: options.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let result: T | undefined;
    const lines: Record<string, unknown>[] = [];
    let partial = '';
    let tail = '';
    const keepTail = (text: string) => {
      tail = (tail + text).slice(-TAIL_CHARS);
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      keepTail(chunk);
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        const parsed = parseObject(line);
        if (parsed === undefined) continue;
        if (RESULT_KEY in parsed) result = parsed[RESULT_KEY] as T;
        else if (options.keepLine?.(parsed)) lines.push(parsed);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', keepTail);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${options.script} ran past ${options.timeoutMs} ms\n${tail}`));
    }, options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const last = parseObject(partial);
      if (last !== undefined && RESULT_KEY in last) result = last[RESULT_KEY] as T;
      if (code !== 0 || result === undefined) {
        const why = code !== 0 ? `exited with ${signal ?? code}` : 'reported no result';
        reject(new Error(`${options.script} ${why}\n${tail}`));
        return;
      }
      resolve({ spawnedAt, result, lines });
    });
  });
}

function parseObject(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
