/**
 * The worker of WorkerOrtEngine, bundled for tests. A worker thread cannot load TypeScript (jest's swc
 * transform does not reach it), so each test file bundles `shared/adapters/ort-worker.ts` with esbuild as
 * tools/build.mjs does, into its own folder under dist/ (so `onnxruntime-node` resolves from the
 * repository's node_modules), and removes it afterwards.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

const ROOT = resolve(__dirname, '../..');

/** Bundles the worker; returns its path and a function that removes it. */
export async function buildOrtWorker(): Promise<{ file: string; remove: () => Promise<void> }> {
  await mkdir(join(ROOT, 'dist'), { recursive: true });
  const dir = await mkdtemp(join(ROOT, 'dist', 'ort-worker-test-'));
  const file = join(dir, 'ort-worker.js');
  await build({
    entryPoints: [join(ROOT, 'shared/adapters/ort-worker.ts')],
    outfile: file,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['onnxruntime-node'],
    logLevel: 'warning',
  });
  return { file, remove: () => rm(dir, { recursive: true, force: true }) };
}
