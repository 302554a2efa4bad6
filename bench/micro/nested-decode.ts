/**
 * Micro-benchmark: decoding one 1x3x224x224 FP32 tensor (150,528 floats, a resnet18-sized image) from
 * JSON, as flat OIP /infer data, as nested OIP /infer data and as a nested /predict body. Each figure is
 * the median over `--iterations` (default 60) after 10 warm-up decodes, JSON.parse included; the bodies
 * are the same numbers written the same way, so the difference is the cost of the nesting alone.
 *
 * `node bench/build.mjs && node dist/bench/micro/nested-decode.js [--iterations N]`
 */
import { decodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { decodePredictRequest } from '../../shared/core/protocol/predict';
import type { ModelSignature } from '../../shared/core/tensor';
import { mulberry32 } from '../../tools/onnx/prng';

const SHAPE: readonly number[] = [1, 3, 224, 224];
const SIGNATURE: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 224, 224] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
};
const LIMITS = { maxTensorElements: 1 << 24 };

function nest(flat: readonly number[], shape: readonly number[]): unknown {
  if (shape.length === 1) return flat;
  const [outer = 0, ...rest] = shape;
  const size = flat.length / outer;
  return Array.from({ length: outer }, (_, i) => nest(flat.slice(i * size, (i + 1) * size), rest));
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

/** Medians of each case, run interleaved (one of each per round, order rotating) so load drift hits all alike. */
function timeAll(cases: readonly (() => unknown)[], iterations: number): number[] {
  for (let i = 0; i < 10; i++) for (const run of cases) run();
  const samples: number[][] = cases.map(() => []);
  for (let i = 0; i < iterations; i++) {
    for (let k = 0; k < cases.length; k++) {
      const c = (i + k) % cases.length;
      const t0 = performance.now();
      (cases[c] as () => unknown)();
      samples[c]?.push(performance.now() - t0);
    }
  }
  return samples.map(median);
}

const at = process.argv.indexOf('--iterations');
const iterations = at === -1 ? 60 : Number(process.argv[at + 1]);
const random = mulberry32(7);
const flat = Array.from({ length: SHAPE.reduce((a, b) => a * b, 1) }, () => Math.fround(random() * 2 - 1));
const nested = nest(flat, SHAPE);
const utf8 = new TextEncoder();
const inferFlat = utf8.encode(
  JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: SHAPE, data: flat }] }),
);
const inferNested = utf8.encode(
  JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: SHAPE, data: nested }] }),
);
const predict = utf8.encode(JSON.stringify(nested));
const parseOnly = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

const cases: [string, Uint8Array, () => unknown][] = [
  ['/infer flat', inferFlat, () => decodeInferRequest(inferFlat, undefined, LIMITS)],
  ['/infer nested', inferNested, () => decodeInferRequest(inferNested, undefined, LIMITS)],
  ['/predict nested', predict, () => decodePredictRequest(predict, SIGNATURE, LIMITS)],
  ['JSON.parse of the /infer flat body', inferFlat, () => parseOnly(inferFlat)],
  ['JSON.parse of the /predict body', predict, () => parseOnly(predict)],
];
const medians = timeAll(
  cases.map((c) => c[2]),
  iterations,
);
const rows = cases.map(([name, body], i) => [name, body.byteLength, medians[i] as number] as const);
const flatMs = rows[0]?.[2] ?? 0;
process.stdout.write(`decode of one FP32 [${SHAPE.join(',')}] tensor, median of ${iterations} (ms)\n`);
for (const [name, bytes, ms] of rows) {
  const extra = ms - flatMs;
  process.stdout.write(
    `${name.padEnd(36)} ${String(bytes).padStart(9)} B  ${ms.toFixed(2).padStart(7)} ms  ${extra >= 0 ? '+' : ''}${extra.toFixed(2)} vs flat\n`,
  );
}
