/**
 * Helpers for tests of the server door over real HTTP: a model repository in a temporary folder, the
 * serving config for it, a small HTTP client (one connection per request, as separate clients), and
 * reading Prometheus text.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { parseConfig, type ServingConfig } from '../../shared/core/config';

export interface RepositoryModel {
  readonly name: string;
  readonly bytes: Uint8Array;
  /** Top-level config.json keys besides `versions` (e.g. `maxBatchSize`, `dynamicBatching`, `session`). */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Precision variants of version 1, written as `1/model.<name>.onnx`. */
  readonly variants?: readonly { name: string; bytes: Uint8Array; providers: readonly string[] }[];
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Writes version 1 of each model (and its variants) with a config.json that records their hashes. */
export async function writeRepository(dir: string, models: readonly RepositoryModel[]): Promise<void> {
  for (const model of models) {
    const versionDir = join(dir, model.name, '1');
    await mkdir(versionDir, { recursive: true });
    await writeFile(join(versionDir, 'model.onnx'), model.bytes);
    const variants: Record<string, unknown> = {};
    for (const variant of model.variants ?? []) {
      await writeFile(join(versionDir, `model.${variant.name}.onnx`), variant.bytes);
      variants[variant.name] = {
        sha256: sha256(variant.bytes),
        size: variant.bytes.byteLength,
        providers: variant.providers,
      };
    }
    const version = {
      sha256: sha256(model.bytes),
      size: model.bytes.byteLength,
      ...(model.variants === undefined ? {} : { variants }),
    };
    const config = { name: model.name, ...model.config, versions: { '1': version } };
    await writeFile(join(dir, model.name, 'config.json'), JSON.stringify(config));
  }
}

/**
 * The serving config of a server on a free loopback port over the repository in `dir`, logs off. Sessions
 * run on the event loop: a worker thread needs the bundled `ort-worker.js`, which an in-process server
 * started from TypeScript does not have beside it (test/integration/server-process.test.ts runs the
 * bundled server with the default worker engine).
 */
export function serverConfig(dir: string, env: Readonly<Record<string, string>> = {}): ServingConfig {
  return parseConfig(
    {
      ONNX_SERVE_MODEL_REPOSITORY: dir,
      ONNX_SERVE_PORT: '0',
      ONNX_SERVE_DISK_CACHE_MB: '0',
      ONNX_SERVE_INTRA_OP_THREADS: '1',
      ONNX_SERVE_ENGINE_THREAD: 'main',
      ONNX_SERVE_LOG_LEVEL: 'SILENT',
      ...env,
    },
    { memoryBytes: 2 * 1024 ** 3, availableParallelism: 2, tmpDir: dir },
  );
}

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are read as loose JSON
  readonly json: any;
}

export interface Call {
  readonly reply: Promise<Reply>;
  /** Closes the connection before the answer, as a client that gives up. */
  abort(): void;
}

/** One request on its own connection. */
export function call(baseUrl: string, method: string, path: string, body?: string): Call {
  let abort = () => {};
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = httpRequest(
      `${baseUrl}${path}`,
      {
        method,
        agent: false,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    abort = () => req.destroy();
    req.end(body);
  });
  return { reply, abort: () => abort() };
}

export function get(baseUrl: string, path: string): Promise<Reply> {
  return call(baseUrl, 'GET', path).reply;
}

export function post(baseUrl: string, path: string, body: string): Promise<Reply> {
  return call(baseUrl, 'POST', path, body).reply;
}

/** An OIP JSON request for the linear model: `rows` rows of 10 features. */
export function linearRequest(rows: readonly (readonly number[])[]): string {
  return JSON.stringify({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [rows.length, 10], data: rows.flat() }],
  });
}

/** Polls `check` until it holds (no timed assertion: the test's own timeout is the limit). */
export async function waitFor(check: () => boolean | Promise<boolean>, intervalMs = 5): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setTimeout(resolve, intervalMs));
}

/** The value of the series `name{labels}` in Prometheus text, or `undefined` when absent. */
export function metric(
  text: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const have = (match[2] ?? '').split(',').filter((p) => p !== '');
    if (wanted.length === have.length && wanted.every((w) => have.includes(w))) return Number(match[3]);
  }
  return undefined;
}
