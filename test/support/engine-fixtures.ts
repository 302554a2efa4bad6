/** Engine test fixtures shared by the OrtEngine and WorkerOrtEngine tests. */
import type { EngineSessionOptions } from '../../shared/core/ports';
import type { Datatype, Tensor, TensorData } from '../../shared/core/tensor';

/** Serving-like session options: every optimisation, the zero-copy path for ORT files. */
export const ENGINE_OPTIONS: EngineSessionOptions = {
  graphOptimizationLevel: 'all',
  intraOpThreads: 0,
  interOpThreads: 1,
  executionProviders: ['cpu'],
  useModelBytesDirectly: true,
  disablePrepacking: false,
};

/** A small MLP whose weights are large enough for onnxruntime to use ORT bytes in place. */
export const SMALL_MLP = { inputSize: 16, hidden: [64], outputSize: 4, seed: 7 } as const;

/** An FP32 tensor of `shape` with element i set to `fill(i)`. */
export function fp32(shape: number[], fill: (i: number) => number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = fill(i);
  return { datatype: 'FP32', shape, data };
}

/**
 * Six values per datatype, edge cases included, for a `[2, 3]` tensor; a fresh array on every call, since
 * the worker engine takes (transfers) the arrays it is given.
 */
export function sampleData(datatype: Datatype): TensorData {
  const samples: Record<Datatype, TensorData> = {
    BOOL: Uint8Array.from([0, 1, 1, 0, 0, 1]),
    UINT8: Uint8Array.from([0, 1, 127, 128, 254, 255]),
    UINT16: Uint16Array.from([0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff]),
    UINT32: Uint32Array.from([0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]),
    UINT64: BigUint64Array.from([0n, 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 2n, 2n ** 64n - 1n]),
    INT8: Int8Array.from([-128, -1, 0, 1, 126, 127]),
    INT16: Int16Array.from([-32768, -1, 0, 1, 32766, 32767]),
    INT32: Int32Array.from([-(2 ** 31), -1, 0, 1, 2 ** 31 - 2, 2 ** 31 - 1]),
    INT64: BigInt64Array.from([-(2n ** 63n), -(2n ** 53n) - 1n, -1n, 0n, 2n ** 53n + 1n, 2n ** 63n - 1n]),
    // Half bits: 0, 1.0, -2.0, 65504 (max), -0, the smallest subnormal.
    FP16: Uint16Array.from([0x0000, 0x3c00, 0xc000, 0x7bff, 0x8000, 0x0001]),
    FP32: Float32Array.from([
      0,
      -1.5,
      3.4028234663852886e38,
      1.401298464324817e-45,
      Number.POSITIVE_INFINITY,
      -0,
    ]),
    FP64: Float64Array.from([
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      -0,
      Number.NaN,
      Math.PI,
      Number.NEGATIVE_INFINITY,
    ]),
    BYTES: ['', 'a', 'héllo', '🙂 emoji', 'with\nnewline', 'x'.repeat(300)],
  };
  return samples[datatype];
}
