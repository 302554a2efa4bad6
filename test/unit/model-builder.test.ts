import { onnx } from 'onnx-proto';
import { DATATYPES } from '../../shared/core/tensor';
import {
  buildAddModel,
  buildFixedShapeModel,
  buildLinearModel,
  buildMlpModel,
  buildTypedIdentityModel,
  IR_VERSION,
  LINEAR_IN,
  LINEAR_OUT,
  LINEAR_WEIGHTS,
  mlpOptionsForWeightBytes,
  mlpWeightBytes,
  ONNX_ELEMENT_TYPE,
  OPSET_VERSION,
  TYPED_IDENTITY_WIDTH,
  typedIdentityNames,
} from '../../tools/onnx/model-builder';

function decode(bytes: Uint8Array): onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

function dims(info: onnx.IValueInfoProto | undefined): (string | number)[] {
  return (info?.type?.tensorType?.shape?.dim ?? []).map((d) =>
    d.dimParam ? d.dimParam : Number(d.dimValue),
  );
}

function floats(tensor: onnx.ITensorProto | undefined): number[] {
  const raw = new Uint8Array(tensor?.rawData ?? new Uint8Array());
  return Array.from(new Float32Array(raw.buffer));
}

function initializerBytes(model: onnx.ModelProto): number {
  return (model.graph?.initializer ?? []).reduce((sum, t) => sum + (t.rawData?.byteLength ?? 0), 0);
}

describe('model-builder', () => {
  describe('buildLinearModel', () => {
    const model = decode(buildLinearModel());

    it('declares opset 17 and IR version 8', () => {
      expect(Number(model.irVersion)).toBe(IR_VERSION);
      expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', OPSET_VERSION]]);
    });

    it('is Gemm(x, W, b, transB=1) with x [batch, 10] and y [batch, 2]', () => {
      const graph = model.graph;
      expect(graph?.node?.map((n) => n.opType)).toEqual(['Gemm']);
      expect(graph?.node?.[0]?.attribute?.map((a) => [a.name, Number(a.i)])).toEqual([['transB', 1]]);
      expect(dims(graph?.input?.[0])).toEqual(['batch', LINEAR_IN]);
      expect(dims(graph?.output?.[0])).toEqual(['batch', LINEAR_OUT]);
    });

    it('stores exactly LINEAR_WEIGHTS as raw float32 data', () => {
      const byName = new Map(model.graph?.initializer?.map((t) => [t.name, t]));
      expect(byName.get('weight')?.dims?.map(Number)).toEqual([LINEAR_OUT, LINEAR_IN]);
      expect(floats(byName.get('weight'))).toEqual(LINEAR_WEIGHTS.weight.flat());
      expect(floats(byName.get('bias'))).toEqual([...LINEAR_WEIGHTS.bias]);
    });

    it('gives the same bytes every time', () => {
      expect(Buffer.from(buildLinearModel()).equals(Buffer.from(buildLinearModel()))).toBe(true);
    });
  });

  describe('buildMlpModel', () => {
    const options = { inputSize: 8, hidden: [16, 12], outputSize: 3, seed: 42 };

    it('is deterministic for a seed and differs between seeds', () => {
      const a = Buffer.from(buildMlpModel(options));
      expect(a.equals(Buffer.from(buildMlpModel(options)))).toBe(true);
      expect(a.equals(Buffer.from(buildMlpModel({ ...options, seed: 43 })))).toBe(false);
    });

    it('chains MatMul + Add (+ Relu between layers) with weights in ±1/√fanIn', () => {
      const model = decode(buildMlpModel(options));
      expect(model.graph?.node?.map((n) => n.opType)).toEqual([
        'MatMul',
        'Add',
        'Relu',
        'MatMul',
        'Add',
        'Relu',
        'MatMul',
        'Add',
      ]);
      expect(dims(model.graph?.input?.[0])).toEqual(['batch', 8]);
      expect(dims(model.graph?.output?.[0])).toEqual(['batch', 3]);
      const w0 = floats(model.graph?.initializer?.find((t) => t.name === 'w0'));
      expect(w0).toHaveLength(8 * 16);
      expect(Math.max(...w0.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(8));
      expect(initializerBytes(model)).toBe(mlpWeightBytes(options));
    });

    it('rejects a layer size that is not a positive integer', () => {
      expect(() => buildMlpModel({ ...options, hidden: [0] })).toThrow(RangeError);
    });
  });

  describe('mlpOptionsForWeightBytes', () => {
    it.each([1e6, 50e6, 200e6])('sizes an MLP to within 1%% of %d bytes', (target) => {
      const options = mlpOptionsForWeightBytes(target);
      expect(Math.abs(mlpWeightBytes(options) - target) / target).toBeLessThan(0.01);
    });

    it('builds a ~1 MB model whose initialisers hold the promised bytes', () => {
      const options = mlpOptionsForWeightBytes(1e6, { seed: 3 });
      const bytes = buildMlpModel(options);
      expect(initializerBytes(decode(bytes))).toBe(mlpWeightBytes(options));
      expect(bytes.byteLength).toBeGreaterThan(1e6 * 0.99);
    });
  });

  describe('buildTypedIdentityModel', () => {
    const model = decode(buildTypedIdentityModel());

    it('has one Identity pair per datatype with its ONNX element type and [batch, 3]', () => {
      expect(model.graph?.input).toHaveLength(DATATYPES.length);
      for (const datatype of DATATYPES) {
        const { input, output } = typedIdentityNames(datatype);
        const inInfo = model.graph?.input?.find((i) => i.name === input);
        const outInfo = model.graph?.output?.find((o) => o.name === output);
        expect(inInfo?.type?.tensorType?.elemType).toBe(ONNX_ELEMENT_TYPE[datatype]);
        expect(outInfo?.type?.tensorType?.elemType).toBe(ONNX_ELEMENT_TYPE[datatype]);
        expect(dims(inInfo)).toEqual(['batch', TYPED_IDENTITY_WIDTH]);
        expect(model.graph?.node?.find((n) => n.output?.[0] === output)?.input).toEqual([input]);
      }
    });
  });

  describe('buildFixedShapeModel and buildAddModel', () => {
    it('declares a fixed [2, 3] input without a batch axis', () => {
      const graph = decode(buildFixedShapeModel()).graph;
      expect(dims(graph?.input?.[0])).toEqual([2, 3]);
    });

    it('declares two inputs a and b of [batch, 4]', () => {
      const graph = decode(buildAddModel()).graph;
      expect(graph?.input?.map((i) => [i.name, dims(i)])).toEqual([
        ['a', ['batch', 4]],
        ['b', ['batch', 4]],
      ]);
      expect(graph?.node?.[0]?.opType).toBe('Add');
    });
  });
});
