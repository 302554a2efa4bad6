/**
 * The bundled HTTP server (dist/server/index.js) as the benchmarks run it: a model repository folder, and
 * the server in its own process on a free loopback port with the models preloaded.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchModel } from './models';

/** Writes version 1 of `model` (both formats) into `repository`, with `config` as its config.json keys. */
export async function publishToFolder(
  repository: string,
  model: BenchModel,
  config: Readonly<Record<string, unknown>>,
): Promise<void> {
  const dir = join(repository, model.name, '1');
  await mkdir(dir, { recursive: true });
  await copyFile(model.onnx.file, join(dir, 'model.onnx'));
  await copyFile(model.ort.file, join(dir, 'model.ort'));
  const document = {
    name: model.name,
    ...config,
    versions: {
      '1': {
        sha256: model.onnx.sha256,
        size: model.onnx.size,
        ort: { sha256: model.ort.sha256, size: model.ort.size },
      },
    },
  };
  await writeFile(join(repository, model.name, 'config.json'), JSON.stringify(document, null, 2));
}

export interface ServerProcess {
  readonly url: string;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts the bundled server on a free port with `models` preloaded and `env` added to its environment;
 * resolves once it logs `ready` (so `ONNX_SERVE_LOG_LEVEL` must stay at `INFO` or below).
 */
export async function startServerProcess(
  bundle: string,
  repository: string,
  models: readonly BenchModel[],
  label: string,
  env: Readonly<Record<string, string>> = {},
): Promise<ServerProcess> {
  const child: ChildProcess = spawn(process.execPath, [bundle], {
    env: {
      PATH: process.env.PATH ?? '',
      ONNX_SERVE_MODEL_REPOSITORY: repository,
      ONNX_SERVE_PORT: '0',
      ONNX_SERVE_PRELOAD: models.map((m) => m.name).join(','),
      ONNX_SERVE_DISK_CACHE_MB: '0',
      ONNX_SERVE_LOG_LEVEL: 'INFO',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the ${label} server did not start:\n${output}`)),
      60_000,
    );
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${label} server exited with ${code}:\n${output}`));
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-4000);
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-4000);
      const listening = /"message":"listening".*?"url":"([^"]+)"/.exec(output);
      if (listening?.[1] !== undefined && /"message":"ready"/.test(output)) {
        clearTimeout(timer);
        resolve(listening[1]);
      }
    });
  });
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
