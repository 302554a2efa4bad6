/**
 * The arithmetic of precision variants, without onnxruntime: int8 and int4 weight quantisation in the
 * layouts the contrib ops read, float16 bits, graph rewrites on models built in memory, the accuracy
 * figures and their bounds, and the variant entries of config.json as the serving parser reads them.
 */
import { onnx } from 'onnx-proto';
import { toHalfBits } from '../../shared/core/fp16';
import { parseModelConfig } from '../../shared/core/model-config';
import type { Tensor } from '../../shared/core/tensor';
import { precisionList } from '../../tools/commands/quantize';
import { boundViolations, DEFAULT_BOUNDS, measureAccuracy } from '../../tools/commands/variant-accuracy';
import { buildLinearModel, buildMlpModel } from '../../tools/onnx/model-builder';
import { floatToHalfBits } from '../../tools/onnx/onnx-tensors';
import { buildPrecisionVariant, NothingToQuantizeError } from '../../tools/onnx/precision-variant';
import { quantizeInt4 } from '../../tools/onnx/quantize-int4';
import { quantizeInt8, roundHalfEven } from '../../tools/onnx/quantize-int8';

const T = onnx.TensorProto.DataType;

function fp32(shape: number[], values: number[]): Tensor {
  return { datatype: 'FP32', shape, data: Float32Array.from(values) };
}

describe('quantizeInt8', () => {
  // [k = 2, n = 3]: columns (1, -4), (0.5, 0.25), (0, 0).
  const weight = Float32Array.from([1, 0.5, 0, -4, 0.25, 0]);

  it('scales each column by its largest magnitude over 127, symmetric, zero point 0', () => {
    const q = quantizeInt8(weight, 2, 3, 'column');
    expect(Array.from(q.scales)).toEqual([4 / 127, 0.5 / 127, 1].map(Math.fround));
    expect(Array.from(q.values)).toEqual([32, 127, 0, -127, 64, 0]);
  });

  it('uses one scale for the whole weight per tensor, so small columns lose precision', () => {
    const q = quantizeInt8(weight, 2, 3, 'tensor');
    expect(Array.from(q.scales)).toEqual([Math.fround(4 / 127)]);
    // 0.25 / (4/127) = 7.94 -> 8; 0.5 -> 15.875 -> 16.
    expect(Array.from(q.values)).toEqual([32, 16, 0, -127, 8, 0]);
  });

  it('rounds half to even, as numpy does', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([
      0, 2, 2, -0, -2, -2, 2, -3,
    ]);
  });
});

describe('quantizeInt4', () => {
  it("packs MatMulNBits' layout: [N, blocks, block/2] nibbles (even row low), scales by column, zero points two a byte", () => {
    // k = 20 rows, n = 2 columns, blocks of 16: two blocks per column, the second padded.
    const k = 20;
    const weight = new Float32Array(k * 2);
    for (let r = 0; r < k; r++) {
      weight[r * 2] = r - 5; // column 0: -5 .. 14
      weight[r * 2 + 1] = -r; // column 1: 0 .. -19
    }
    const q = quantizeInt4(weight, k, 2, 16);
    expect(q.blocks).toBe(2);
    expect(q.packed.length).toBe(2 * 2 * 8);
    expect(q.scales.length).toBe(4);
    expect(q.zeroPoints.length).toBe(2);
    // Column 0, block 0: rows 0-15 hold -5..10: scale 15/15 = 1, zero point 5, q = w + 5 = 0..15.
    expect(q.scales[0]).toBe(1);
    expect(q.packed[0]).toBe(0 | (1 << 4));
    expect(q.packed[7]).toBe(14 | (15 << 4));
    // Column 0, block 1: rows 16-19 hold 11..14 and 0 joins the range: scale 14/15, zero point 0.
    expect(q.scales[1]).toBeCloseTo(14 / 15, 6);
    // Padding rows hold the zero point, so they add nothing.
    expect(q.packed[8 + 2]).toBe(0);
    // Zero points of column 0: block 0 (5) low nibble, block 1 (0) high nibble.
    expect(q.zeroPoints[0]).toBe(5 | (0 << 4));
    // Column 1, block 0: 0..-15: scale 1, zero point 15, q = w + 15.
    expect(q.scales[2]).toBe(1);
    expect(q.packed[16]).toBe(15 | (14 << 4));
    expect((q.zeroPoints[1] as number) & 0x0f).toBe(15);
  });

  it('dequantises every weight to within half a step of its block', () => {
    const k = 70;
    const n = 3;
    const weight = Float32Array.from({ length: k * n }, (_, i) => Math.sin(i * 1.3) * (1 + (i % n)));
    const q = quantizeInt4(weight, k, n, 32);
    for (let c = 0; c < n; c++) {
      for (let r = 0; r < k; r++) {
        const b = Math.floor(r / 32);
        const byte = q.packed[(c * q.blocks + b) * 16 + Math.floor((r % 32) / 2)] as number;
        const nibble = r % 2 === 0 ? byte & 0x0f : byte >> 4;
        const zpByte = q.zeroPoints[c * Math.ceil(q.blocks / 2) + (b >> 1)] as number;
        const zp = b % 2 === 0 ? zpByte & 0x0f : zpByte >> 4;
        const scale = q.scales[c * q.blocks + b] as number;
        expect(Math.abs((nibble - zp) * scale - (weight[r * n + c] as number))).toBeLessThanOrEqual(
          scale / 2 + 1e-6,
        );
      }
    }
  });
});

describe('floatToHalfBits', () => {
  it('equals the exact conversion for normals, subnormals, ties, overflow and specials', () => {
    const values = [0, -0, 1, -2, 65504, 65519, 65520, 1e6, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1e-8];
    values.push(Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1 + 2 ** -11, 1 + 3 * 2 ** -11);
    for (let i = 0; i < 20000; i++) values.push(Math.fround(Math.sin(i) * 10 ** ((i % 14) - 8)));
    const wrong = values.filter((v) => floatToHalfBits(v) !== toHalfBits(Math.fround(v)));
    expect(wrong).toEqual([]);
    expect(floatToHalfBits(Number.NaN) & 0x7c00).toBe(0x7c00);
  });
});

describe('buildPrecisionVariant', () => {
  const mlp = buildMlpModel({ inputSize: 32, hidden: [64], outputSize: 8, seed: 3 });

  it('turns each weight MatMul into DynamicQuantizeMatMul with int8 weights, and drops the float weights', () => {
    const { bytes, report } = buildPrecisionVariant(mlp, 'int8');
    const model = onnx.ModelProto.decode(bytes);
    const ops = (model.graph?.node ?? []).map((n) => `${n.domain ?? ''}:${n.opType}`);
    expect(ops.filter((o) => o === 'com.microsoft:DynamicQuantizeMatMul')).toHaveLength(2);
    expect(ops).not.toContain(':MatMul');
    const types = (model.graph?.initializer ?? []).map((t) => t.dataType);
    expect(types.filter((t) => t === T.INT8)).toHaveLength(2);
    expect(model.opsetImport.some((o) => o.domain === 'com.microsoft')).toBe(true);
    expect(report).toMatchObject({ precision: 'int8', nodes: 2, scales: 'column', skipped: [] });
    expect(bytes.byteLength).toBeLessThan(mlp.byteLength / 2);
  });

  it('turns a Gemm (transB) into a quantised product plus an Add of its bias', () => {
    const { bytes, report } = buildPrecisionVariant(buildLinearModel(), 'int4');
    const nodes = onnx.ModelProto.decode(bytes).graph?.node ?? [];
    expect(nodes.map((n) => n.opType)).toEqual(['MatMulNBits', 'Add']);
    expect(nodes[1]?.output).toEqual(['y']);
    expect(report).toMatchObject({ precision: 'int4', nodes: 1, blockSize: 32 });
  });

  it('refuses a model with no MatMul or Gemm of a constant weight, saying why', () => {
    const relu = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'g',
        node: [{ opType: 'MatMul', input: ['a', 'b'], output: ['y'], name: 'mm' }],
        input: ['a', 'b'].map((name) => ({ name, type: { tensorType: { elemType: T.FLOAT } } })),
        output: [{ name: 'y', type: { tensorType: { elemType: T.FLOAT } } }],
      },
    }).finish();
    expect(() => buildPrecisionVariant(relu, 'int8')).toThrow(NothingToQuantizeError);
    expect(() => buildPrecisionVariant(relu, 'int8')).toThrow(/mm: the weight is computed at run time/);
  });

  it('converts weights to float16 and keeps float32 at the edges', () => {
    const { bytes, report } = buildPrecisionVariant(mlp, 'fp16');
    const graph = onnx.ModelProto.decode(bytes).graph;
    expect((graph?.initializer ?? []).every((t) => t.dataType === T.FLOAT16)).toBe(true);
    expect(graph?.input?.[0]?.type?.tensorType?.elemType).toBe(T.FLOAT);
    expect(graph?.output?.[0]?.type?.tensorType?.elemType).toBe(T.FLOAT);
    const nodes = graph?.node ?? [];
    expect(nodes[0]).toMatchObject({ opType: 'Cast', input: ['x'] });
    expect(nodes.at(-1)).toMatchObject({ opType: 'Cast', output: ['y'] });
    expect(report).toMatchObject({ precision: 'fp16', weights: 4, casts: 2, float32Ops: {} });
  });
});

describe('measureAccuracy', () => {
  it('reports max, mean and relative error, the worst row cosine and the top-1 agreement of class scores', () => {
    const expected = [{ y: fp32([2, 3], [1, 2, 3, 3, 2, 1]) }];
    const actual = [{ y: fp32([2, 3], [1, 2, 3.5, 1, 2, 3]) }];
    const record = measureAccuracy(expected, actual, 'random', 2);
    expect(record.maxAbsError).toBeCloseTo(2, 6);
    expect(record.meanAbsError).toBeCloseTo(4.5 / 6, 6);
    expect(record.relativeError).toBeCloseTo(2 / 3, 6);
    // Row 2 is reversed: cos = (3 + 4 + 3) / 14.
    expect(record.cosine).toBeCloseTo(10 / 14, 6);
    expect(record.top1Agreement).toBe(0.5);
    expect(record.outputs.y).toMatchObject({ elements: 6, top1Agreement: 0.5 });
  });

  it('counts equal elements of integer outputs as their agreement, and refuses a changed interface', () => {
    const labels = (v: bigint[]): Tensor => ({ datatype: 'INT64', shape: [4], data: BigInt64Array.from(v) });
    const record = measureAccuracy(
      [{ k: labels([1n, 2n, 3n, 4n]) }],
      [{ k: labels([1n, 2n, 0n, 4n]) }],
      'samples',
      4,
    );
    expect(record.top1Agreement).toBe(0.75);
    expect(() =>
      measureAccuracy([{ y: fp32([1, 2], [1, 2]) }], [{ y: fp32([2, 1], [1, 2]) }], 'random', 1),
    ).toThrow(/output 'y' is FP32 \[2, 1\]/);
  });

  it('names every bound a record breaks', () => {
    const record = measureAccuracy([{ y: fp32([1, 2], [1, 0]) }], [{ y: fp32([1, 2], [0, 1]) }], 'random', 1);
    const problems = boundViolations(record, DEFAULT_BOUNDS.int8);
    expect(problems).toHaveLength(3);
    expect(problems.join('\n')).toMatch(/--max-error[\s\S]*--min-cosine[\s\S]*--min-top1/);
    expect(boundViolations(record, { maxError: 2, minCosine: -1, minTop1: 0 })).toEqual([]);
  });
});

describe('precisionList', () => {
  it('takes a comma list and refuses unknown or repeated precisions', () => {
    expect(precisionList('int8,int4', 'variants')).toEqual(['int8', 'int4']);
    expect(() => precisionList('int3', 'to')).toThrow(
      /--to must be one or more of int8, int4, fp16, got 'int3'/,
    );
    expect(() => precisionList('int8,int8', 'to')).toThrow(/twice/);
  });
});

describe('config.json variants', () => {
  const sha = (c: string) => c.repeat(64);
  const config = (variants: Record<string, unknown>) =>
    parseModelConfig('m', JSON.stringify({ versions: { '1': { sha256: sha('a'), size: 10, variants } } }));

  it('reads precision, runsOn, the ORT copy and the accuracy figures; a CPU variant has no automatic providers', () => {
    const parsed = config({
      int8: {
        sha256: sha('b'),
        size: 4,
        precision: 'int8',
        runsOn: ['CPU'],
        ort: { sha256: sha('c'), size: 5 },
        accuracy: {
          inputs: 'random',
          examples: 16,
          relativeError: 0.01,
          cosine: 0.9999,
          top1Agreement: 1,
          bounds: {},
        },
      },
      fp16: { sha256: sha('d'), size: 6, providers: ['cuda'] },
    });
    expect(parsed.versions['1']?.variants).toEqual({
      int8: {
        sha256: sha('b'),
        size: 4,
        precision: 'int8',
        providers: [],
        runsOn: ['cpu'],
        ort: { sha256: sha('c'), size: 5 },
        accuracy: { inputs: 'random', examples: 16, relativeError: 0.01, cosine: 0.9999, top1Agreement: 1 },
      },
      fp16: { sha256: sha('d'), size: 6, providers: ['cuda'], runsOn: ['cuda'] },
    });
  });

  it('refuses a variant without providers, an unknown precision or a malformed ORT copy', () => {
    expect(() => config({ int8: { sha256: sha('b'), size: 4 } })).toThrow(
      /variants\.int8' must list its providers/,
    );
    expect(() => config({ int8: { sha256: sha('b'), size: 4, runsOn: ['cpu'], precision: 'int3' } })).toThrow(
      /precision' must be one of fp16, int8, int4/,
    );
    expect(() => config({ int8: { sha256: sha('b'), size: 4, runsOn: ['cpu'], ort: { size: 1 } } })).toThrow(
      /variants\.int8\.ort\.sha256/,
    );
  });
});
