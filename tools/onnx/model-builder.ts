/**
 * Builds small, valid ONNX models in pure Node (no Python, no onnxruntime) for tests, benchmarks and the
 * sample repository. Every model is opset 17, IR version 8; weights are deterministic.
 */
import { onnx } from 'onnx-proto';
import { DATATYPES, type Datatype } from '../../shared/core/tensor';
import { mulberry32 } from './prng';

export const OPSET_VERSION = 17;
export const IR_VERSION = 8;

const T = onnx.TensorProto.DataType;

/** The ONNX `TensorProto.DataType` of each OIP datatype. */
export const ONNX_ELEMENT_TYPE: Readonly<Record<Datatype, number>> = {
  BOOL: T.BOOL,
  UINT8: T.UINT8,
  UINT16: T.UINT16,
  UINT32: T.UINT32,
  UINT64: T.UINT64,
  INT8: T.INT8,
  INT16: T.INT16,
  INT32: T.INT32,
  INT64: T.INT64,
  FP16: T.FLOAT16,
  FP32: T.FLOAT,
  FP64: T.DOUBLE,
  BYTES: T.STRING,
};

/** A dim: a fixed size or a symbolic name such as `batch`. */
export type Dim = number | string;

function valueInfo(name: string, datatype: Datatype, shape: readonly Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_ELEMENT_TYPE[datatype],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function floatInitializer(name: string, dims: readonly number[], data: Float32Array): onnx.ITensorProto {
  // raw_data is little-endian by the ONNX spec, as is every platform onnxruntime-node ships for.
  return {
    name,
    dims: [...dims],
    dataType: T.FLOAT,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

function node(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  attributes: readonly onnx.IAttributeProto[] = [],
): onnx.INodeProto {
  return {
    opType,
    input: [...inputs],
    output: [...outputs],
    name: outputs[0] ?? opType,
    attribute: [...attributes],
  };
}

function intAttribute(name: string, value: number): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

function encodeModel(graph: onnx.IGraphProto, docString: string): Uint8Array {
  const model: onnx.IModelProto = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET_VERSION }],
    producerName: 'onnx-serverless model-builder',
    producerVersion: '1',
    docString,
    graph,
  };
  const bytes = onnx.ModelProto.encode(model).finish();
  // protobufjs may hand back a slice of a larger pooled buffer: give callers a buffer of their own.
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

/** In and out features of the linear model. */
export const LINEAR_IN = 10;
export const LINEAR_OUT = 2;

/**
 * The fixed weights of {@link buildLinearModel}, PyTorch layout: `weight[out][in]`, `bias[out]`. Multiples of
 * 1/8, so float32 holds them exactly.
 */
export const LINEAR_WEIGHTS: {
  readonly weight: readonly (readonly number[])[];
  readonly bias: readonly number[];
} = Object.freeze({
  weight: Object.freeze(
    Array.from({ length: LINEAR_OUT }, (_, o) =>
      Object.freeze(Array.from({ length: LINEAR_IN }, (_, i) => (((o * LINEAR_IN + i) % 7) - 3) / 8)),
    ),
  ),
  bias: Object.freeze([0.5, -0.25]),
});

/**
 * The classic example, `torch.nn.Linear(10, 2)` with {@link LINEAR_WEIGHTS}: `y = x · Wᵀ + b` as one Gemm.
 * Input `x` FP32 `[batch, 10]`, output `y` FP32 `[batch, 2]`.
 *
 * @example
 * const bytes = buildLinearModel();
 * const session = await InferenceSession.create(bytes);
 */
export function buildLinearModel(): Uint8Array {
  const weight = Float32Array.from(LINEAR_WEIGHTS.weight.flat());
  const bias = Float32Array.from(LINEAR_WEIGHTS.bias);
  return encodeModel(
    {
      name: 'linear',
      node: [node('Gemm', ['x', 'weight', 'bias'], ['y'], [intAttribute('transB', 1)])],
      initializer: [
        floatInitializer('weight', [LINEAR_OUT, LINEAR_IN], weight),
        floatInitializer('bias', [LINEAR_OUT], bias),
      ],
      input: [valueInfo('x', 'FP32', ['batch', LINEAR_IN])],
      output: [valueInfo('y', 'FP32', ['batch', LINEAR_OUT])],
    },
    'Linear(10, 2) with fixed weights',
  );
}

export interface MlpOptions {
  readonly inputSize: number;
  /** Widths of the hidden layers (each followed by Relu). */
  readonly hidden: readonly number[];
  readonly outputSize: number;
  /** PRNG seed: the same options give the same bytes. */
  readonly seed: number;
}

function layerSizes(options: MlpOptions): number[] {
  return [options.inputSize, ...options.hidden, options.outputSize];
}

/** The float32 weight and bias bytes of the MLP that {@link buildMlpModel} builds from `options`. */
export function mlpWeightBytes(options: MlpOptions): number {
  const sizes = layerSizes(options);
  let params = 0;
  for (let l = 0; l + 1 < sizes.length; l++) {
    const fanIn = sizes[l] as number;
    const fanOut = sizes[l + 1] as number;
    params += fanIn * fanOut + fanOut;
  }
  return params * 4;
}

/**
 * Options for an MLP of about `targetBytes` of float32 weights: `inputSize` → `layers` hidden layers of one
 * width → `outputSize`. E.g. `mlpOptionsForWeightBytes(50e6)` gives about 50 MB.
 */
export function mlpOptionsForWeightBytes(
  targetBytes: number,
  { inputSize = 256, outputSize = 10, layers = 2, seed = 1 } = {},
): MlpOptions {
  if (!(targetBytes > 0) || layers < 1)
    throw new RangeError('targetBytes must be positive and layers at least 1');
  // params(h) = (layers - 1)·h² + (inputSize + outputSize + layers)·h + outputSize; solve for h.
  const a = layers - 1;
  const b = inputSize + outputSize + layers;
  const c = outputSize - targetBytes / 4;
  const h = a === 0 ? -c / b : (-b + Math.sqrt(b * b - 4 * a * c)) / (2 * a);
  const width = Math.max(1, Math.round(h));
  return { inputSize, hidden: Array.from({ length: layers }, () => width), outputSize, seed };
}

/**
 * A multi-layer perceptron (MatMul + Add + Relu per hidden layer, MatMul + Add at the end) with weights drawn
 * from a seeded PRNG, uniform in ±1/√fanIn so activations stay in range at any width. Input `x` FP32
 * `[batch, inputSize]`, output `y` FP32 `[batch, outputSize]`; initialisers are stored as raw_data.
 *
 * @example
 * const bytes = buildMlpModel(mlpOptionsForWeightBytes(50e6)); // ~50 MB of weights
 */
export function buildMlpModel(options: MlpOptions): Uint8Array {
  const sizes = layerSizes(options);
  for (const size of sizes) {
    if (!Number.isSafeInteger(size) || size < 1)
      throw new RangeError(`MLP layer sizes must be positive integers`);
  }
  const random = mulberry32(options.seed);
  const nodes: onnx.INodeProto[] = [];
  const initializers: onnx.ITensorProto[] = [];
  let current = 'x';
  const layers = sizes.length - 1;
  for (let l = 0; l < layers; l++) {
    const fanIn = sizes[l] as number;
    const fanOut = sizes[l + 1] as number;
    const scale = 1 / Math.sqrt(fanIn);
    const weight = new Float32Array(fanIn * fanOut);
    for (let i = 0; i < weight.length; i++) weight[i] = (random() * 2 - 1) * scale;
    const bias = new Float32Array(fanOut);
    for (let i = 0; i < bias.length; i++) bias[i] = (random() * 2 - 1) * 0.1;
    initializers.push(
      floatInitializer(`w${l}`, [fanIn, fanOut], weight),
      floatInitializer(`b${l}`, [fanOut], bias),
    );
    const last = l === layers - 1;
    nodes.push(node('MatMul', [current, `w${l}`], [`mm${l}`]));
    nodes.push(node('Add', [`mm${l}`, `b${l}`], [last ? 'y' : `add${l}`]));
    if (!last) nodes.push(node('Relu', [`add${l}`], [`relu${l}`]));
    current = `relu${l}`;
  }
  return encodeModel(
    {
      name: 'mlp',
      node: nodes,
      initializer: initializers,
      input: [valueInfo('x', 'FP32', ['batch', options.inputSize])],
      output: [valueInfo('y', 'FP32', ['batch', options.outputSize])],
    },
    `MLP ${sizes.join('-')}, seed ${options.seed}`,
  );
}

/** Columns of every tensor of the typed identity model: shapes are `[batch, TYPED_IDENTITY_WIDTH]`. */
export const TYPED_IDENTITY_WIDTH = 3;

/** Input and output names of the typed identity model for `datatype`, e.g. `in_fp16` → `out_fp16`. */
export function typedIdentityNames(datatype: Datatype): { readonly input: string; readonly output: string } {
  const suffix = datatype.toLowerCase();
  return { input: `in_${suffix}`, output: `out_${suffix}` };
}

/**
 * One model with an input/output pair per OIP datatype that ONNX Runtime takes ({@link DATATYPES}), each
 * output = Identity(input), all `[batch, 3]`. Names come from {@link typedIdentityNames}.
 */
export function buildTypedIdentityModel(): Uint8Array {
  const shape: Dim[] = ['batch', TYPED_IDENTITY_WIDTH];
  return encodeModel(
    {
      name: 'typed_identity',
      node: DATATYPES.map((d) => {
        const { input, output } = typedIdentityNames(d);
        return node('Identity', [input], [output]);
      }),
      input: DATATYPES.map((d) => valueInfo(typedIdentityNames(d).input, d, shape)),
      output: DATATYPES.map((d) => valueInfo(typedIdentityNames(d).output, d, shape)),
    },
    'Identity for every datatype',
  );
}

/** A model without a batch axis: `x` FP32 `[2, 3]` (fixed) → `y = Relu(x)` FP32 `[2, 3]`. */
export function buildFixedShapeModel(): Uint8Array {
  return encodeModel(
    {
      name: 'fixed_shape',
      node: [node('Relu', ['x'], ['y'])],
      input: [valueInfo('x', 'FP32', [2, 3])],
      output: [valueInfo('y', 'FP32', [2, 3])],
    },
    'Relu over a fixed [2, 3] tensor',
  );
}

/** Two inputs: `a`, `b` FP32 `[batch, 4]` → `sum = a + b` FP32 `[batch, 4]`. */
export function buildAddModel(): Uint8Array {
  return encodeModel(
    {
      name: 'add',
      node: [node('Add', ['a', 'b'], ['sum'])],
      input: [valueInfo('a', 'FP32', ['batch', 4]), valueInfo('b', 'FP32', ['batch', 4])],
      output: [valueInfo('sum', 'FP32', ['batch', 4])],
    },
    'Element-wise sum of two inputs',
  );
}
