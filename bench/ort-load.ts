/**
 * Session creation time and resident memory for an MLP loaded through {@link OrtEngine}: from the `.onnx`
 * bytes, and from the ORT-format bytes with the zero-copy options. Each load runs in a fresh process, so
 * RSS is not polluted by earlier loads. Models are generated into a temporary folder and deleted after.
 *
 *   npx tsx bench/ort-load.ts [weightMB=50] [repeats=3]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { OrtEngine } from '../shared/adapters/ort-engine';
import type { ArtifactFormat, EngineSessionOptions } from '../shared/core/ports';
import { buildMlpModel, mlpOptionsForWeightBytes, mlpWeightBytes } from '../tools/onnx/model-builder';
import { convertToOrtFormat } from '../tools/onnx/ort-format';

interface Variant {
  readonly label: string;
  readonly format: ArtifactFormat;
  readonly useModelBytesDirectly: boolean;
  readonly disablePrepacking: boolean;
}

const VARIANTS: readonly Variant[] = [
  { label: '.onnx, defaults', format: 'onnx', useModelBytesDirectly: false, disablePrepacking: false },
  { label: '.onnx, prepacking off', format: 'onnx', useModelBytesDirectly: false, disablePrepacking: true },
  {
    label: '.ort, zero-copy, prepacking off',
    format: 'ort',
    useModelBytesDirectly: true,
    disablePrepacking: true,
  },
];

interface Sample {
  readonly createMs: number;
  readonly rssBeforeMB: number;
  readonly rssAfterMB: number;
  readonly firstRunMs: number;
}

const MB = 1024 * 1024;

async function measure(file: string, variant: Variant): Promise<Sample> {
  const bytes = new Uint8Array(readFileSync(file));
  const engine = new OrtEngine({ defaultIntraOpThreads: availableParallelism() });
  const options: EngineSessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpThreads: 0,
    interOpThreads: 1,
    executionProviders: ['cpu'],
    useModelBytesDirectly: variant.useModelBytesDirectly,
    disablePrepacking: variant.disablePrepacking,
  };
  const rssBeforeMB = process.memoryUsage().rss / MB;
  const t0 = performance.now();
  const model = await engine.load({ bytes, format: variant.format }, options);
  const createMs = performance.now() - t0;
  const rssAfterMB = process.memoryUsage().rss / MB;
  const input = model.signature.inputs[0];
  const width = input?.shape[1] ?? 1;
  const t1 = performance.now();
  await model.run({ x: { datatype: 'FP32', shape: [1, width], data: new Float32Array(width) } });
  const firstRunMs = performance.now() - t1;
  await model.release();
  return { createMs, rssBeforeMB, rssAfterMB, firstRunMs };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === '--child') {
    const [file, index] = rest;
    const variant = VARIANTS[Number(index)];
    if (file === undefined || variant === undefined) throw new Error('usage: --child <file> <variant>');
    process.stdout.write(JSON.stringify(await measure(file, variant)));
    return;
  }
  const weightMB = Number(mode ?? 50);
  const repeats = Number(rest[0] ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'ort-load-bench-'));
  try {
    const options = mlpOptionsForWeightBytes(weightMB * 1e6);
    const onnxBytes = buildMlpModel(options);
    const files: Record<ArtifactFormat, string> = {
      onnx: join(dir, 'model.onnx'),
      ort: join(dir, 'model.ort'),
    };
    writeFileSync(files.onnx, onnxBytes);
    const ortBytes = await convertToOrtFormat(onnxBytes, files.ort);
    console.log(
      `MLP ${[options.inputSize, ...options.hidden, options.outputSize].join('-')}: ` +
        `${(mlpWeightBytes(options) / 1e6).toFixed(1)} MB weights, .onnx ${(onnxBytes.byteLength / 1e6).toFixed(1)} MB, ` +
        `.ort ${(ortBytes.byteLength / 1e6).toFixed(1)} MB; ${availableParallelism()} cores, ${repeats} runs, medians`,
    );
    for (const [index, variant] of VARIANTS.entries()) {
      const samples: Sample[] = [];
      for (let r = 0; r < repeats; r++) {
        const out = execFileSync(
          process.execPath,
          [...process.execArgv, __filename, '--child', files[variant.format], String(index)],
          {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        samples.push(JSON.parse(out) as Sample);
      }
      const m = (key: keyof Sample) => median(samples.map((s) => s[key])).toFixed(0);
      console.log(
        `${variant.label.padEnd(34)} create ${m('createMs').padStart(5)} ms  RSS ${m('rssBeforeMB')} -> ${m('rssAfterMB')} MB  first run ${m('firstRunMs')} ms`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
