// Bundles every entry point with esbuild: CommonJS (Lambda finds the onnxruntime layer through NODE_PATH,
// which ESM ignores), onnxruntime-node external (a native addon, shipped in a layer or node_modules),
// source maps for readable stack traces. `node tools/build.mjs [name...] [--out dir]` builds a subset
// (into `dir` instead of dist/, e.g. for a test that must not replace dist/ under other tests).
import { build } from 'esbuild';

export const ENTRIES = {
  server: 'functions/server/main.ts',
  infer: 'functions/infer/handler.ts',
  batch: 'functions/batch/handler.ts',
  'tools/sample-models': 'tools/sample-models.ts',
  cli: 'tools/cli.ts',
};

/**
 * Worker threads bundled beside an entry's bundle: the server's WorkerOrtEngine starts
 * `dist/server/ort-worker.js` (found through `__dirname`).
 */
export const WORKERS = {
  server: { 'ort-worker': 'shared/adapters/ort-worker.ts' },
};

export const BUILD_OPTIONS = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  // Lambda and the containers run Node 22; Node 20 still runs the output for local use.
  target: 'node20',
  sourcemap: true,
  external: ['onnxruntime-node'],
  // Packages' ES module builds first (the AWS SDK's dist-es, where `main` is dist-cjs): esbuild can then
  // leave out what is never imported (client-s3's other commands and their schemas). The infer bundle
  // goes from 1.76 to 1.37 MB, and a cold start of the 1 MB MLP from 183 to 159 ms here (issue 11).
  mainFields: ['module', 'main'],
  logLevel: 'warning',
};

/**
 * The Lambda bundles (infer, batch) resolve credentials as Lambda hands them over: the environment or a
 * container credentials endpoint (shared/adapters/lambda-credential-provider.ts), not the SDK's whole
 * default chain (profiles, SSO and their STS/SSO clients: 355 kB, about 8 ms of module load). The
 * server and the model tool keep the full chain. serverless.yml sets the same alias.
 */
export const LAMBDA_ENTRIES = new Set(['infer', 'batch']);
export const LAMBDA_BUILD_OPTIONS = {
  alias: { '@aws-sdk/credential-provider-node': './shared/adapters/lambda-credential-provider.ts' },
};

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const out = outAt === -1 ? 'dist' : args[outAt + 1];
if (out === undefined) {
  console.error('--out names a folder');
  process.exit(2);
}
const wanted = outAt === -1 ? args : args.filter((_, i) => i !== outAt && i !== outAt + 1);
const names = wanted.length > 0 ? wanted : Object.keys(ENTRIES);
for (const name of names) {
  const entry = ENTRIES[name];
  if (entry === undefined) {
    console.error(`unknown entry '${name}'; known: ${Object.keys(ENTRIES).join(', ')}`);
    process.exit(2);
  }
  const options = LAMBDA_ENTRIES.has(name) ? { ...BUILD_OPTIONS, ...LAMBDA_BUILD_OPTIONS } : BUILD_OPTIONS;
  await build({ ...options, entryPoints: [entry], outfile: `${out}/${name}/index.js` });
  for (const [worker, source] of Object.entries(WORKERS[name] ?? {})) {
    await build({ ...BUILD_OPTIONS, entryPoints: [source], outfile: `${out}/${name}/${worker}.js` });
  }
}
