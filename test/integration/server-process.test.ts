/**
 * The bundled server as a process, as a container runs it (sessions in a worker thread, the default): it
 * becomes ready after preloading, and on SIGTERM it drains the request in flight, then exits 0.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type BuildOptions, build } from 'esbuild';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { get, linearRequest, metric, post, waitFor, writeRepository } from '../support/server-harness';

const ROOT = resolve(__dirname, '../..');
let dir: string;
let bundle: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'server-process-'));
  bundle = join(dir, 'server.js');
  // The same options as tools/build.mjs: CommonJS, onnxruntime-node external, and the sessions' worker
  // (the default engine of the server) bundled beside the server.
  const options: BuildOptions = {
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['onnxruntime-node'],
    logLevel: 'silent',
  };
  await build({ ...options, entryPoints: [join(ROOT, 'functions/server/main.ts')], outfile: bundle });
  await build({
    ...options,
    entryPoints: [join(ROOT, 'shared/adapters/ort-worker.ts')],
    outfile: join(dir, 'ort-worker.js'),
  });
  const batching = { maxBatchSize: 8, maxQueueDelayMs: 400, maxQueueSize: 16 };
  await writeRepository(join(dir, 'models'), [
    { name: 'linear', bytes: buildLinearModel(), config: { maxBatchSize: 8, dynamicBatching: batching } },
  ]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Log lines of the child, parsed as they arrive. */
function logsOf(child: ChildProcess): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ message: line });
      }
    }
  });
  return lines;
}

describe('server process', () => {
  it('is ready after preloading, and on SIGTERM drains the request in flight and exits 0', async () => {
    const child = spawn(process.execPath, [bundle], {
      env: {
        ...process.env,
        NODE_PATH: join(ROOT, 'node_modules'),
        ONNX_SERVE_MODEL_REPOSITORY: join(dir, 'models'),
        ONNX_SERVE_PORT: '0',
        ONNX_SERVE_PRELOAD: 'linear',
        ONNX_SERVE_DISK_CACHE_MB: '0',
        ONNX_SERVE_SHUTDOWN_GRACE_MS: '30000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    try {
      const logs = logsOf(child);
      await waitFor(() => logs.some((l) => l.message === 'ready'));
      const url = logs.find((l) => l.message === 'listening')?.url as string;
      expect(await get(url, '/v2/health/ready')).toMatchObject({ status: 200, json: { ready: true } });

      const inFlight = post(url, '/v2/models/linear/infer', linearRequest([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]));
      await waitFor(
        async () =>
          metric((await get(url, '/metrics')).text, 'onnx_serve_queue_depth', {
            model: 'linear',
            version: '1',
          }) === 1,
      );
      child.kill('SIGTERM');
      const reply = await inFlight;
      expect(reply.status).toBe(200);
      expect(reply.json.outputs[0].shape).toEqual([1, 2]);
      expect(await exited).toBe(0);
      expect(logs.find((l) => l.message === 'listening')).toMatchObject({ engineThread: 'worker' });
      expect(logs.find((l) => l.message === 'shutting down')).toMatchObject({
        signal: 'SIGTERM',
        inFlight: 1,
      });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
