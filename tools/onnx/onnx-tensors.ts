/**
 * Reading and writing the pieces of a decoded ONNX `ModelProto` that graph rewrites need: int64 fields
 * (protobufjs gives `Long` objects), float tensors stored as `raw_data` or `float_data`, new initialisers,
 * attributes and fresh names. Build tooling: no onnxruntime here.
 */
import { onnx } from 'onnx-proto';

export const DataType = onnx.TensorProto.DataType;

/** The custom-op domain of onnxruntime's contrib ops (DynamicQuantizeMatMul, MatMulNBits). */
export const MS_DOMAIN = 'com.microsoft';

type LongLike = number | { toNumber(): number } | null | undefined;

/** An int64 field of a decoded message as a number. */
export function toNumber(value: unknown): number {
  const v = value as LongLike;
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** The dims of a tensor as numbers. */
export function dimsOf(tensor: onnx.ITensorProto): number[] {
  return (tensor.dims ?? []).map(toNumber);
}

/** Elements a tensor of `dims` holds (1 for a scalar). */
export function elementsOf(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

/** A tensor's bytes are in a file beside the model. */
export function isExternal(tensor: onnx.ITensorProto): boolean {
  return tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
}

/**
 * The values of a FLOAT tensor (from `raw_data`, little-endian, or `float_data`), or `undefined` when it
 * is not a float32 tensor held in the file.
 */
export function readFloats(tensor: onnx.ITensorProto): Float32Array | undefined {
  if (tensor.dataType !== DataType.FLOAT || isExternal(tensor)) return undefined;
  const count = elementsOf(dimsOf(tensor));
  const raw = tensor.rawData;
  if (raw !== undefined && raw !== null && raw.byteLength > 0) {
    if (raw.byteLength !== count * 4) return undefined;
    // raw_data may sit at any offset of the decoded buffer: copy into an aligned array.
    const out = new Float32Array(count);
    new Uint8Array(out.buffer).set(raw);
    return out;
  }
  const values = tensor.floatData ?? [];
  if (values.length !== count) return undefined;
  return Float32Array.from(values);
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** An initialiser of `dataType` from a typed array's bytes (stored as `raw_data`, little-endian). */
export function rawTensor(
  name: string,
  dataType: number,
  dims: readonly number[],
  data: ArrayBufferView,
): onnx.ITensorProto {
  return { name, dataType, dims: [...dims], rawData: bytesOf(data) };
}

/** A node; `domain` only for contrib ops. */
export function makeNode(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  name: string,
  attributes: readonly onnx.IAttributeProto[] = [],
  domain?: string,
): onnx.INodeProto {
  return {
    opType,
    input: [...inputs],
    output: [...outputs],
    name,
    attribute: [...attributes],
    ...(domain === undefined ? {} : { domain }),
  };
}

export function intAttribute(name: string, value: number): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

export function tensorAttribute(name: string, t: onnx.ITensorProto): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.TENSOR, t };
}

/** The attribute `name` of `node`, if set. */
export function attributeOf(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

/** An INT attribute's value, or `fallback` when the node does not set it. */
export function intAttributeOf(node: onnx.INodeProto, name: string, fallback: number): number {
  const attribute = attributeOf(node, name);
  return attribute === undefined ? fallback : toNumber(attribute.i);
}

/** A FLOAT attribute's value, or `fallback` when the node does not set it. */
export function floatAttributeOf(node: onnx.INodeProto, name: string, fallback: number): number {
  const attribute = attributeOf(node, name);
  return attribute === undefined ? fallback : (attribute.f ?? fallback);
}

/** Hands out names no tensor or node of the graph has yet: `base`, else `base_1`, `base_2`... */
export class NameAllocator {
  readonly #taken = new Set<string>();

  constructor(graph: onnx.IGraphProto) {
    const add = (name: string | null | undefined) => {
      if (name) this.#taken.add(name);
    };
    for (const t of graph.initializer ?? []) add(t.name);
    for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])])
      add(v.name);
    for (const n of graph.node ?? []) {
      add(n.name);
      for (const name of [...(n.input ?? []), ...(n.output ?? [])]) add(name);
    }
  }

  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.#taken.has(name); i++) name = `${base}_${i}`;
    this.#taken.add(name);
    return name;
  }
}

/**
 * Every tensor name that a subgraph (an If, Loop or Scan body, at any depth) reads: rewrites must leave
 * those values, and the initialisers behind them, as they are.
 */
export function namesReadBySubgraphs(graph: onnx.IGraphProto): Set<string> {
  const names = new Set<string>();
  const visit = (g: onnx.IGraphProto) => {
    for (const node of g.node ?? []) for (const input of node.input ?? []) names.add(input);
    for (const node of g.node ?? []) for (const sub of subgraphsOf(node)) visit(sub);
  };
  for (const node of graph.node ?? []) for (const sub of subgraphsOf(node)) visit(sub);
  return names;
}

/** The graphs held by a node's attributes (If branches, Loop and Scan bodies). */
export function subgraphsOf(node: onnx.INodeProto): onnx.IGraphProto[] {
  const graphs: onnx.IGraphProto[] = [];
  for (const a of node.attribute ?? []) {
    if (a.g !== undefined && a.g !== null) graphs.push(a.g);
    for (const g of a.graphs ?? []) graphs.push(g);
  }
  return graphs;
}

/** Adds an opset import for `domain` when the model has none. */
export function ensureOpset(model: onnx.IModelProto, domain: string, version: number): void {
  const imports = model.opsetImport ?? [];
  if (!imports.some((o) => (o.domain ?? '') === domain)) {
    model.opsetImport = [...imports, { domain, version }];
  }
}

/**
 * Removes initialisers (and their IR < 4 graph-input entries) that no node, graph output or subgraph reads
 * any more. Returns how many went.
 */
export function dropUnusedInitializers(graph: onnx.IGraphProto): number {
  const used = namesReadBySubgraphs(graph);
  for (const node of graph.node ?? []) for (const input of node.input ?? []) used.add(input);
  for (const output of graph.output ?? []) used.add(output.name ?? '');
  const before = graph.initializer?.length ?? 0;
  const gone = new Set<string>();
  graph.initializer = (graph.initializer ?? []).filter((t) => {
    const keep = used.has(t.name ?? '');
    if (!keep) gone.add(t.name ?? '');
    return keep;
  });
  graph.input = (graph.input ?? []).filter((v) => !gone.has(v.name ?? ''));
  return before - (graph.initializer?.length ?? 0);
}

/** Encodes a model into a buffer of its own (protobufjs may hand back a slice of a pooled buffer). */
export function encodeModel(model: onnx.IModelProto): Uint8Array {
  const bytes = onnx.ModelProto.encode(model).finish();
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/**
 * The IEEE half bits nearest to a float32 (round to nearest, ties to even; overflow to ±infinity), by bit
 * manipulation: fast enough for hundreds of megabytes of weights. Equals `toHalfBits` of shared/core/fp16
 * for every float32 input.
 */
export function floatToHalfBits(value: number): number {
  F32[0] = value;
  const x = U32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const midpoint = 1 << (shift - 1);
    const round = rest > midpoint || (rest === midpoint && (half & 1) === 1) ? 1 : 0;
    return sign | (half + round);
  }
  const half = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  const round = rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? 1 : 0;
  return sign | (half + round);
}

/** Half bits of every element. */
export function floatsToHalf(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = floatToHalfBits(values[i] as number);
  return out;
}
