/**
 * Runs an unpacked function (lambda-layout.ts) the way Lambda's `nodejs22.x` runtime does: Node 22
 * running AWS's runtime interface client (`aws-lambda-ric`, the client of Lambda's Node.js base images),
 * which loads `_HANDLER` from `LAMBDA_TASK_ROOT` and polls the Runtime API at `AWS_LAMBDA_RUNTIME_API` for
 * events. Both are installed into `.build/` by tools/lambda-runtime.cjs when missing (minutes: the client
 * compiles curl and aws-lambda-cpp).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { ensureLambdaRuntime } from '../../tools/lambda-runtime.cjs';
import { type LambdaLayout, lambdaEnvironment } from './lambda-layout';

export interface RuntimeClientProcess {
  readonly process: ChildProcess;
  /** stdout and stderr so far (the client's and the function's logs). */
  output(): string;
  /** Resolves with the exit code when the process ends. */
  readonly exited: Promise<number | null>;
  stop(): Promise<void>;
}

export interface RuntimeClientOptions {
  /** `host:port` of the Runtime API. */
  readonly runtimeApi: string;
  /** On top of Lambda's environment and the function's packaged one. */
  readonly env?: Readonly<Record<string, string>>;
  /** Default: the function's packaged `Handler`. */
  readonly handler?: string;
}

/** Starts the runtime client for `layout`'s function; it runs until {@link RuntimeClientProcess.stop}. */
export function startRuntimeClient(
  layout: LambdaLayout,
  options: RuntimeClientOptions,
): RuntimeClientProcess {
  const { node22, ric } = ensureLambdaRuntime();
  const env: NodeJS.ProcessEnv = {
    ...lambdaEnvironment(layout),
    _HANDLER: options.handler ?? String(layout.fn.Properties?.Handler),
    AWS_LAMBDA_RUNTIME_API: options.runtimeApi,
    ...options.env,
  };
  // The flags Lambda's nodejs22.x bootstrap starts Node with.
  const child = spawn(node22.bin, ['--expose-gc', '--max-http-header-size', '81920', ric.entry], {
    cwd: layout.taskRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => resolve(code));
  });
  return {
    process: child,
    output: () => output,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
