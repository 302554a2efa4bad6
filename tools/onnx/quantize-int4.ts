/**
 * 4-bit weight-only quantisation of the weight matmuls into `com.microsoft.MatMulNBits`, in the layout of
 * onnxruntime's MatMulNBitsQuantizer (QOperator format, asymmetric, its default):
 * - each column n of the [K, N] weight is cut into blocks of `blockSize` rows along K (the last one padded
 *   with zeros); a block has `scale = (max - min) / 15` over its values and 0 (so that 0 is exact) and a
 *   zero point `round(-min / scale)` in [0, 15]; a weight is `q = clamp(round(w / scale) + zp, 0, 15)`,
 *   so `w ≈ (q - zp) · scale`;
 * - B is uint8 `[N, blocks, blockSize / 2]`: two weights a byte, the even row in the low nibble;
 * - scales are float32 `[N · blocks]`, column-major by block;
 * - zero points are uint8 `[N · ceil(blocks / 2)]`: two a byte, the even block in the low nibble.
 * Attributes: K, N, bits = 4, block_size. Activations stay float32 (accuracy_level unset).
 */
import type { onnx } from 'onnx-proto';
import { DataType, ensureOpset, intAttribute, MS_DOMAIN, makeNode, rawTensor } from './onnx-tensors';
import { roundHalfEven } from './quantize-int8';
import { findWeightMatMuls, replaceWeightMatMuls, type SkippedNode } from './weight-matmuls';

export const DEFAULT_BLOCK_SIZE = 32;
/** Block sizes MatMulNBits takes: a power of two, at least 16. */
export const BLOCK_SIZES = [16, 32, 64, 128, 256] as const;

/** A 4-bit weight in MatMulNBits' layout (see the file's comment). */
export interface Int4Weight {
  readonly packed: Uint8Array;
  readonly scales: Float32Array;
  readonly zeroPoints: Uint8Array;
  readonly blocks: number;
}

/** Quantises a `[k, n]` row-major weight into MatMulNBits' blocks. */
export function quantizeInt4(weight: Float32Array, k: number, n: number, blockSize: number): Int4Weight {
  const blocks = Math.ceil(k / blockSize);
  const blobSize = blockSize / 2;
  const packed = new Uint8Array(n * blocks * blobSize);
  const scales = new Float32Array(n * blocks);
  const zpStride = Math.ceil(blocks / 2);
  const zeroPoints = new Uint8Array(n * zpStride);
  const q = new Uint8Array(blockSize);
  for (let c = 0; c < n; c++) {
    for (let b = 0; b < blocks; b++) {
      const start = b * blockSize;
      const end = Math.min(k, start + blockSize);
      let min = 0;
      let max = 0;
      for (let r = start; r < end; r++) {
        const w = weight[r * n + c] as number;
        if (w < min) min = w;
        if (w > max) max = w;
      }
      const scale = (max - min) / 15;
      const zp = scale === 0 ? 8 : Math.max(0, Math.min(15, roundHalfEven(-min / scale)));
      q.fill(zp);
      if (scale !== 0) {
        for (let r = start; r < end; r++) {
          const v = roundHalfEven((weight[r * n + c] as number) / scale) + zp;
          q[r - start] = Math.max(0, Math.min(15, v));
        }
      }
      // Padding rows (past K) hold the zero point, so they dequantise to exactly 0.
      const blob = (c * blocks + b) * blobSize;
      for (let j = 0; j < blobSize; j++) {
        packed[blob + j] = ((q[2 * j] as number) & 0x0f) | (((q[2 * j + 1] as number) & 0x0f) << 4);
      }
      scales[c * blocks + b] = scale;
      const zpByte = c * zpStride + (b >> 1);
      zeroPoints[zpByte] = (zeroPoints[zpByte] as number) | ((zp & 0x0f) << ((b & 1) * 4));
    }
  }
  return { packed, scales, zeroPoints, blocks };
}

/** What an int4 rewrite did. */
export interface Int4Rewrite {
  readonly nodes: number;
  readonly skipped: readonly SkippedNode[];
  readonly blockSize: number;
}

/**
 * Rewrites `model` in place: every MatMul and Gemm with a constant float32 `[K, N]` weight becomes a
 * MatMulNBits with 4-bit weights in blocks of `blockSize` (a Gemm's bias and beta as an Add after it).
 */
export function rewriteInt4(model: onnx.IModelProto, blockSize: number = DEFAULT_BLOCK_SIZE): Int4Rewrite {
  if (!(BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new RangeError(`block size must be one of ${BLOCK_SIZES.join(', ')}, got ${blockSize}`);
  }
  const graph = model.graph as onnx.IGraphProto;
  const { found, skipped } = findWeightMatMuls(graph);
  if (found.length > 0) {
    replaceWeightMatMuls(model, found, (m, product, names) => {
      const q = quantizeInt4(m.weight, m.k, m.n, blockSize);
      const base = m.weightName;
      const weight = names.fresh(`${base}_int4`);
      const scales = names.fresh(`${base}_int4_scales`);
      const zeroPoints = names.fresh(`${base}_int4_zero_points`);
      return {
        initializers: [
          rawTensor(weight, DataType.UINT8, [m.n, q.blocks, blockSize / 2], q.packed),
          rawTensor(scales, DataType.FLOAT, [m.n * q.blocks], q.scales),
          rawTensor(zeroPoints, DataType.UINT8, [q.zeroPoints.length], q.zeroPoints),
        ],
        nodes: [
          makeNode(
            'MatMulNBits',
            [m.input, weight, scales, zeroPoints],
            [product],
            names.fresh(`${m.label}_int4`),
            [
              intAttribute('K', m.k),
              intAttribute('N', m.n),
              intAttribute('bits', 4),
              intAttribute('block_size', blockSize),
            ],
            MS_DOMAIN,
          ),
        ],
      };
    });
    ensureOpset(model, MS_DOMAIN, 1);
  }
  return { nodes: found.length, skipped, blockSize };
}
