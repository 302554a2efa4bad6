/**
 * Builds a precision variant of an ONNX model from its float32 bytes: int8 (DynamicQuantizeMatMul), int4
 * (MatMulNBits) or fp16 (float16 compute, float32 interface). Pure graph rewriting: the result is checked
 * by running it (tools/commands/variant-accuracy.ts), not here.
 */
import { onnx } from 'onnx-proto';
import { convertToFp16, type Fp16Rewrite } from './convert-fp16';
import { encodeModel } from './onnx-tensors';
import { DEFAULT_BLOCK_SIZE, type Int4Rewrite, rewriteInt4 } from './quantize-int4';
import { type Int8Rewrite, type Int8Scales, rewriteInt8 } from './quantize-int8';
import type { SkippedNode } from './weight-matmuls';

export const PRECISIONS = ['int8', 'int4', 'fp16'] as const;
export type Precision = (typeof PRECISIONS)[number];

export function isPrecision(value: string): value is Precision {
  return (PRECISIONS as readonly string[]).includes(value);
}

export interface PrecisionOptions {
  /** int8: per-column (default) or per-tensor weight scales. */
  readonly scales?: Int8Scales;
  /** int4: rows of K per block (default 32). */
  readonly blockSize?: number;
}

/** How the graph was rewritten, as recorded in config.json next to the variant. */
export type RewriteReport =
  | ({ readonly precision: 'int8'; readonly op: 'com.microsoft.DynamicQuantizeMatMul' } & Int8Rewrite)
  | ({ readonly precision: 'int4'; readonly op: 'com.microsoft.MatMulNBits' } & Int4Rewrite)
  | ({ readonly precision: 'fp16' } & Fp16Rewrite);

export interface PrecisionVariant {
  readonly precision: Precision;
  readonly bytes: Uint8Array;
  readonly report: RewriteReport;
}

/** Nothing in the model can take the requested precision (e.g. no MatMul with a constant weight). */
export class NothingToQuantizeError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'NothingToQuantizeError';
  }
}

function describeSkipped(skipped: readonly SkippedNode[]): string {
  if (skipped.length === 0) return 'it has no MatMul or Gemm node';
  const shown = skipped.slice(0, 3).map((s) => `${s.node}: ${s.reason}`);
  return `none of its ${skipped.length} MatMul/Gemm nodes has a constant float32 [K, N] weight (${shown.join('; ')}${skipped.length > 3 ? '; ...' : ''})`;
}

/**
 * The `precision` variant of `onnxBytes` (a float32 model).
 *
 * @throws {@link NothingToQuantizeError} when int8 or int4 finds no MatMul or Gemm with a constant weight
 * @example
 * const { bytes, report } = buildPrecisionVariant(await readFile('model.onnx'), 'int8');
 * report.nodes; // MatMuls now DynamicQuantizeMatMul
 */
export function buildPrecisionVariant(
  onnxBytes: Uint8Array,
  precision: Precision,
  options: PrecisionOptions = {},
): PrecisionVariant {
  const model = onnx.ModelProto.decode(onnxBytes);
  if (model.graph === null || model.graph === undefined)
    throw new NothingToQuantizeError('the model has no graph');
  let report: RewriteReport;
  if (precision === 'int8') {
    const rewrite = rewriteInt8(model, options.scales ?? 'column');
    if (rewrite.nodes === 0) {
      throw new NothingToQuantizeError(`nothing to quantise to int8: ${describeSkipped(rewrite.skipped)}`);
    }
    report = { precision, op: 'com.microsoft.DynamicQuantizeMatMul', ...rewrite };
  } else if (precision === 'int4') {
    const rewrite = rewriteInt4(model, options.blockSize ?? DEFAULT_BLOCK_SIZE);
    if (rewrite.nodes === 0) {
      throw new NothingToQuantizeError(`nothing to quantise to int4: ${describeSkipped(rewrite.skipped)}`);
    }
    report = { precision, op: 'com.microsoft.MatMulNBits', ...rewrite };
  } else {
    const rewrite = convertToFp16(model);
    if (rewrite.weights === 0 && rewrite.casts === 0) {
      throw new NothingToQuantizeError('nothing to convert to float16: the model has no float32 values');
    }
    report = { precision, ...rewrite };
  }
  return { precision, bytes: encodeModel(model), report };
}
