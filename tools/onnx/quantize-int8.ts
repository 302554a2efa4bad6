/**
 * Dynamic int8 quantisation of the weight matmuls, as onnxruntime's `quantize_dynamic` does it for MatMul
 * (weight type QInt8, which is symmetric): each constant weight becomes int8 with scale `max|w| / 127`
 * and zero point 0, and the node becomes `com.microsoft.DynamicQuantizeMatMul`, which quantises its
 * activation at run time (uint8, per tensor, range including 0) and multiplies in integers. That op is
 * what onnxruntime's own optimiser fuses quantize_dynamic's DynamicQuantizeLinear + MatMulInteger + Cast +
 * Mul into. Scales are per column of the [K, N] weight (one per output feature, `per_channel=True` in
 * quantize_dynamic's terms) or one per tensor (its default).
 */
import type { onnx } from 'onnx-proto';
import { DataType, ensureOpset, MS_DOMAIN, makeNode, rawTensor } from './onnx-tensors';
import {
  findWeightMatMuls,
  replaceWeightMatMuls,
  type SkippedNode,
  type WeightMatMul,
} from './weight-matmuls';

export const INT8_SCALES = ['column', 'tensor'] as const;
/** `column`: one scale per output feature; `tensor`: one for the whole weight. */
export type Int8Scales = (typeof INT8_SCALES)[number];

/** An int8 weight: `w ≈ scale[column] · q` (symmetric, zero point 0). */
export interface Int8Weight {
  readonly values: Int8Array;
  /** One per column (`[N]`) or one for the tensor (`[1]`). */
  readonly scales: Float32Array;
}

/** Round half to even, as numpy's `round` (which onnxruntime's quantiser uses). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantises a `[k, n]` row-major weight to int8 in [-127, 127] (the symmetric range onnxruntime uses for
 * int8 weights). An all-zero column (or tensor) gets scale 1.
 */
export function quantizeInt8(weight: Float32Array, k: number, n: number, scales: Int8Scales): Int8Weight {
  const perColumn = scales === 'column';
  const absMax = new Float32Array(perColumn ? n : 1);
  for (let r = 0; r < k; r++) {
    for (let c = 0; c < n; c++) {
      const a = Math.abs(weight[r * n + c] as number);
      const i = perColumn ? c : 0;
      if (a > (absMax[i] as number)) absMax[i] = a;
    }
  }
  const scale = absMax.map((m) => (m === 0 ? 1 : m / 127));
  const values = new Int8Array(k * n);
  for (let r = 0; r < k; r++) {
    for (let c = 0; c < n; c++) {
      const s = scale[perColumn ? c : 0] as number;
      const q = roundHalfEven((weight[r * n + c] as number) / s);
      values[r * n + c] = Math.max(-127, Math.min(127, q));
    }
  }
  return { values, scales: scale };
}

/** What an int8 rewrite did. */
export interface Int8Rewrite {
  readonly nodes: number;
  readonly skipped: readonly SkippedNode[];
  readonly scales: Int8Scales;
}

/**
 * Rewrites `model` in place: every MatMul and Gemm with a constant float32 `[K, N]` weight becomes a
 * DynamicQuantizeMatMul with int8 weights (a Gemm's bias and beta as an Add after it). Returns what was
 * rewritten and what was not, and why.
 */
export function rewriteInt8(model: onnx.IModelProto, scales: Int8Scales = 'column'): Int8Rewrite {
  const graph = model.graph as onnx.IGraphProto;
  const { found, skipped } = findWeightMatMuls(graph);
  if (found.length > 0) {
    replaceWeightMatMuls(model, found, (m: WeightMatMul, product, names) => {
      const q = quantizeInt8(m.weight, m.k, m.n, scales);
      const weight = names.fresh(`${m.weightName}_int8`);
      const scale = names.fresh(`${m.weightName}_scale`);
      return {
        initializers: [
          rawTensor(weight, DataType.INT8, [m.k, m.n], q.values),
          rawTensor(scale, DataType.FLOAT, scales === 'column' ? [m.n] : [], q.scales),
        ],
        nodes: [
          makeNode(
            'DynamicQuantizeMatMul',
            [m.input, weight, scale],
            [product],
            names.fresh(`${m.label}_int8`),
            [],
            MS_DOMAIN,
          ),
        ],
      };
    });
    ensureOpset(model, MS_DOMAIN, 1);
  }
  return { nodes: found.length, skipped, scales };
}
