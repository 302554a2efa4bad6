/**
 * float32 → float16 conversion of a model for GPU execution providers, with the float32 interface kept:
 * float32 inputs are cast to float16 as they enter, float32 outputs cast back as they leave, and in between
 * every float32 weight (initialisers, Constant nodes) and computation is float16. Ops that have no float16
 * kernel on the usual providers or whose float inputs must stay float32 (Resize's scales, the ML ops, TopK,
 * Range, random generators, QuantizeLinear...; the list of onnxconverter-common's converter, the reference
 * tool) keep running in float32 with casts around them, as do ops of other domains. Element types are
 * followed through the graph to know which values are float.
 */
import type { onnx } from 'onnx-proto';
import {
  attributeOf,
  DataType,
  floatsToHalf,
  intAttribute,
  makeNode,
  NameAllocator,
  rawTensor,
  readFloats,
  subgraphsOf,
  tensorAttribute,
  toNumber,
} from './onnx-tensors';

/** Ops kept in float32 (with casts around them) in the float16 model. */
export const FLOAT32_OPS: ReadonlySet<string> = new Set([
  'ArrayFeatureExtractor',
  'Binarizer',
  'CastMap',
  'CategoryMapper',
  'DictVectorizer',
  'FeatureVectorizer',
  'Imputer',
  'LabelEncoder',
  'LinearClassifier',
  'LinearRegressor',
  'Normalizer',
  'OneHotEncoder',
  'SVMClassifier',
  'SVMRegressor',
  'Scaler',
  'TreeEnsembleClassifier',
  'TreeEnsembleRegressor',
  'ZipMap',
  'NonMaxSuppression',
  'TopK',
  'RoiAlign',
  'Resize',
  'Upsample',
  'Range',
  'CumSum',
  'Min',
  'Max',
  'RandomNormal',
  'RandomNormalLike',
  'RandomUniform',
  'RandomUniformLike',
  'Multinomial',
  'EyeLike',
  'QuantizeLinear',
  'DequantizeLinear',
  'DynamicQuantizeLinear',
]);

/** The model cannot be converted; the message says why. */
export class Fp16ConversionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Fp16ConversionError';
  }
}

/** What a float16 conversion did. */
export interface Fp16Rewrite {
  /** Float32 initialisers and Constant tensors now stored as float16. */
  readonly weights: number;
  /** Nodes left in float32, by op. */
  readonly float32Ops: Readonly<Record<string, number>>;
  /** Casts added at the model's inputs and outputs and around float32 nodes. */
  readonly casts: number;
}

const BOOL_OUTPUT = new Set([
  'Equal',
  'Less',
  'Greater',
  'LessOrEqual',
  'GreaterOrEqual',
  'And',
  'Or',
  'Xor',
  'Not',
  'IsNaN',
  'IsInf',
]);
const INT64_OUTPUT = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin']);

function isBlocked(node: onnx.INodeProto): boolean {
  return (node.domain ?? '') !== '' || FLOAT32_OPS.has(node.opType ?? '');
}

/** The element type of a Constant node's output. */
function constantType(node: onnx.INodeProto): number | undefined {
  const value = attributeOf(node, 'value');
  if (value?.t) return value.t.dataType ?? undefined;
  if (attributeOf(node, 'value_float') || attributeOf(node, 'value_floats')) return DataType.FLOAT;
  if (attributeOf(node, 'value_int') || attributeOf(node, 'value_ints')) return DataType.INT64;
  if (attributeOf(node, 'value_string') || attributeOf(node, 'value_strings')) return DataType.STRING;
  return undefined;
}

/** Output element types of `node` given its inputs' (`undefined`: unknown). */
function outputTypes(
  node: onnx.INodeProto,
  typeOf: (name: string) => number | undefined,
): (number | undefined)[] {
  const op = node.opType ?? '';
  const outputs = node.output ?? [];
  const inputs = node.input ?? [];
  const first = inputs.map((i) => (i === '' ? undefined : typeOf(i))).find((t) => t !== undefined);
  const all = (t: number | undefined) => outputs.map(() => t);
  if ((node.domain ?? '') === '') {
    if (op === 'Constant') return all(constantType(node));
    if (op === 'Cast') return all(toNumber(attributeOf(node, 'to')?.i));
    if (op === 'CastLike') return all(typeOf(inputs[1] ?? ''));
    if (INT64_OUTPUT.has(op)) return all(DataType.INT64);
    if (BOOL_OUTPUT.has(op)) return all(DataType.BOOL);
    if (op === 'ConstantOfShape') return all(attributeOf(node, 'value')?.t?.dataType ?? DataType.FLOAT);
    if (op === 'Where') return all(typeOf(inputs[1] ?? ''));
    if (op === 'OneHot') return all(typeOf(inputs[2] ?? ''));
    if (op === 'TopK' || op === 'MaxPool') return [first, DataType.INT64];
    if (op === 'Unique') return [first, DataType.INT64, DataType.INT64, DataType.INT64];
    if (op === 'DynamicQuantizeLinear') return [DataType.UINT8, DataType.FLOAT, DataType.UINT8];
    if (op === 'DequantizeLinear') return all(DataType.FLOAT);
    if (op === 'QuantizeLinear') return all(typeOf(inputs[2] ?? '') ?? DataType.UINT8);
    if (op.startsWith('Random') || op === 'Multinomial' || op === 'EyeLike') {
      const dtype = attributeOf(node, 'dtype');
      if (dtype) return all(toNumber(dtype.i));
      if (op === 'RandomNormal' || op === 'RandomUniform') return all(DataType.FLOAT);
      if (op === 'Multinomial') return all(DataType.INT32);
      return all(first);
    }
  }
  // Almost every op's outputs share its first input's type (elementwise, MatMul, Reshape, Gather...).
  return all(first);
}

function halfTensor(name: string, dims: readonly number[], values: Float32Array): onnx.ITensorProto {
  return rawTensor(name, DataType.FLOAT16, dims, floatsToHalf(values));
}

/** The tensor as float16, or undefined when it is not a float32 tensor held in the file. */
function toHalf(tensor: onnx.ITensorProto): onnx.ITensorProto | undefined {
  const values = readFloats(tensor);
  if (values === undefined) return undefined;
  return halfTensor(tensor.name ?? '', (tensor.dims ?? []).map(toNumber), values);
}

/**
 * Converts `model` in place to float16 compute with float32 inputs and outputs (see the file's comment).
 * Throws {@link Fp16ConversionError} for a model it cannot convert (subgraphs, external weights).
 */
export function convertToFp16(model: onnx.IModelProto): Fp16Rewrite {
  const graph = model.graph as onnx.IGraphProto;
  const nodes = graph.node ?? [];
  if (nodes.some((n) => subgraphsOf(n).length > 0)) {
    throw new Fp16ConversionError('models with If, Loop or Scan subgraphs are not converted to float16');
  }
  const names = new NameAllocator(graph);
  const types = new Map<string, number>();
  for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) {
    const t = v.type?.tensorType?.elemType;
    if (v.name && t) types.set(v.name, t);
  }
  for (const t of graph.initializer ?? []) if (t.name) types.set(t.name, t.dataType ?? 0);
  for (const node of nodes) {
    const inferred = outputTypes(node, (name) => types.get(name));
    (node.output ?? []).forEach((o, i) => {
      const t = inferred[i];
      if (o && !types.has(o) && t !== undefined) types.set(o, t);
    });
  }
  const isFloat = (name: string) => types.get(name) === DataType.FLOAT;

  /** Float32 values readable as float16 under another name (inputs, outputs of float32 nodes). */
  const alias16 = new Map<string, string>();
  /** Values that are float16 under their own name. */
  const half = new Set<string>();
  /** Float16 values' float32 copies, for float32 nodes. */
  const alias32 = new Map<string, string>();
  const out: onnx.INodeProto[] = [];
  let casts = 0;
  const cast = (from: string, to: string, type: number) => {
    casts++;
    out.push(makeNode('Cast', [from], [to], names.fresh(`${to}_cast`), [intAttribute('to', type)]));
  };

  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  const inputNames = new Set((graph.input ?? []).map((v) => v.name ?? ''));
  for (const input of graph.input ?? []) {
    const name = input.name ?? '';
    if (!isFloat(name) || initializerNames.has(name)) continue;
    const fp16 = names.fresh(`${name}_fp16`);
    cast(name, fp16, DataType.FLOAT16);
    alias16.set(name, fp16);
  }

  let weights = 0;
  const readByFp16Node = new Set<string>();
  for (const node of nodes) if (!isBlocked(node)) for (const i of node.input ?? []) readByFp16Node.add(i);
  graph.initializer = (graph.initializer ?? []).map((t) => {
    const name = t.name ?? '';
    if (t.dataType !== DataType.FLOAT || !readByFp16Node.has(name) || inputNames.has(name)) return t;
    const converted = toHalf(t);
    if (converted === undefined) {
      throw new Fp16ConversionError(`the float32 weight '${name}' is not stored in the file (external data)`);
    }
    weights++;
    half.add(name);
    return converted;
  });

  const float32Ops: Record<string, number> = {};
  for (const node of nodes) {
    const inputs = node.input ?? [];
    const outputs = node.output ?? [];
    if (isBlocked(node)) {
      const op = `${node.domain ? `${node.domain}.` : ''}${node.opType}`;
      float32Ops[op] = (float32Ops[op] ?? 0) + 1;
      node.input = inputs.map((i) => {
        if (!half.has(i)) return i;
        let fp32 = alias32.get(i);
        if (fp32 === undefined) {
          fp32 = names.fresh(`${i}_fp32`);
          cast(i, fp32, DataType.FLOAT);
          alias32.set(i, fp32);
        }
        return fp32;
      });
      out.push(node);
      for (const o of outputs) {
        if (!isFloat(o)) continue;
        const fp16 = names.fresh(`${o}_fp16`);
        cast(o, fp16, DataType.FLOAT16);
        alias16.set(o, fp16);
      }
      continue;
    }
    node.input = inputs.map((i) => alias16.get(i) ?? i);
    adjustForHalf(node, () => weights++);
    out.push(node);
    for (const o of outputs) if (isFloat(o)) half.add(o);
  }

  // Outputs: the float16 value gets a new name, and a Cast gives the float32 value the output's name.
  const renamed = new Map<string, string>();
  for (const output of graph.output ?? []) {
    const name = output.name ?? '';
    if (!isFloat(name) || !half.has(name)) continue;
    renamed.set(name, names.fresh(`${name}_fp16`));
  }
  if (renamed.size > 0) {
    const rename = (n: string) => renamed.get(n) ?? n;
    for (const node of out) {
      node.input = (node.input ?? []).map(rename);
      node.output = (node.output ?? []).map(rename);
    }
    for (const t of graph.initializer ?? []) t.name = rename(t.name ?? '');
    for (const [name, fp16] of renamed) cast(fp16, name, DataType.FLOAT);
  }

  graph.node = out;
  // Intermediate float types changed; onnxruntime infers them again.
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => v.type?.tensorType?.elemType !== DataType.FLOAT);
  return { weights, float32Ops, casts };
}

/** Makes a node that produces float32 by its attributes (Cast, Constant, ConstantOfShape) produce float16. */
function adjustForHalf(node: onnx.INodeProto, countWeight: () => void): void {
  if ((node.domain ?? '') !== '') return;
  const attributes = node.attribute ?? [];
  if (node.opType === 'Cast') {
    const to = attributeOf(node, 'to');
    if (to && toNumber(to.i) === DataType.FLOAT) to.i = DataType.FLOAT16;
  } else if (node.opType === 'Constant') {
    const value = attributeOf(node, 'value');
    if (value?.t && value.t.dataType === DataType.FLOAT) {
      const converted = toHalf(value.t);
      if (converted === undefined)
        throw new Fp16ConversionError(`a Constant's float32 tensor cannot be read`);
      value.t = converted;
      countWeight();
    }
    const scalar = attributeOf(node, 'value_float');
    const list = attributeOf(node, 'value_floats');
    if (scalar || list) {
      const values = scalar ? Float32Array.of(scalar.f ?? 0) : Float32Array.from(list?.floats ?? []);
      const dims = scalar ? [] : [values.length];
      node.attribute = [
        ...attributes.filter((a) => a !== scalar && a !== list),
        tensorAttribute('value', halfTensor('', dims, values)),
      ];
      countWeight();
    }
  } else if (node.opType === 'ConstantOfShape') {
    const value = attributeOf(node, 'value');
    if (value === undefined) {
      node.attribute = [...attributes, tensorAttribute('value', halfTensor('', [1], Float32Array.of(0)))];
    } else if (value.t && value.t.dataType === DataType.FLOAT) {
      const converted = toHalf(value.t);
      if (converted) value.t = converted;
    }
  }
}
