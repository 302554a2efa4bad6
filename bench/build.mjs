// Bundles the benchmarks into dist/bench/ (run by `npm run bench` after tools/build.mjs has built the
// functions). The options are those of tools/build.mjs: CommonJS, onnxruntime-node external. The runner
// keeps every package external (it runs from the repository, beside node_modules); the cold-start
// baselines bundle the AWS SDK as a Lambda function would, and the handler under test is the product's
// own dist/infer/index.js.
import { readdirSync } from 'node:fs';
import { build } from 'esbuild';

const COMMON = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
};

await build({ ...COMMON, entryPoints: ['bench/run.ts'], outfile: 'dist/bench/run.js', packages: 'external' });
const children = readdirSync('bench/children').filter((file) => file.endsWith('.ts'));
await build({
  ...COMMON,
  entryPoints: children.map((file) => `bench/children/${file}`),
  outdir: 'dist/bench/children',
  external: ['onnxruntime-node'],
});
const micro = readdirSync('bench/micro').filter((file) => file.endsWith('.ts'));
await build({
  ...COMMON,
  entryPoints: micro.map((file) => `bench/micro/${file}`),
  outdir: 'dist/bench/micro',
  external: ['onnxruntime-node'],
});
