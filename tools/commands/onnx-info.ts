/**
 * Reads what a developer wants to know about an ONNX file without running it: the graph's inputs and
 * outputs with their symbolic dims, opset imports, producer, and how many bytes of weights it carries.
 */
import { createHash } from 'node:crypto';
import { onnx } from 'onnx-proto';

/** A dim: a size, a symbolic name such as `batch`, or `null` when the model leaves it unknown. */
export type OnnxDim = number | string | null;

export interface OnnxValueInfo {
  readonly name: string;
  /** The element type, e.g. `float32`, `int64`; `sequence`, `map` or `optional` for non-tensors. */
  readonly type: string;
  /** `null` when the model does not declare a shape (unknown rank). */
  readonly shape: readonly OnnxDim[] | null;
}

export interface OpsetImport {
  /** `ai.onnx` for the default domain (stored as `''`). */
  readonly domain: string;
  readonly version: number;
}

/** Weights by where they are kept: `raw_data`, the typed fields (`float_data`, `int64_data`...) or outside the file. */
export interface WeightBytes {
  readonly count: number;
  readonly bytes: number;
  readonly rawDataBytes: number;
  readonly typedFieldBytes: number;
  readonly externalBytes: number;
  /** Tensors stored in files beside the model (`data_location: EXTERNAL`). */
  readonly externalCount: number;
}

export interface OnnxInfo {
  readonly file: string;
  readonly size: number;
  readonly sha256: string;
  readonly irVersion: number;
  readonly opsets: readonly OpsetImport[];
  readonly producerName: string;
  readonly producerVersion: string;
  readonly modelVersion: number;
  readonly graphName: string;
  readonly docString: string;
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  /** Nodes of the main graph. */
  readonly nodeCount: number;
  /** Graphs held by node attributes (the branches of `If`, the bodies of `Loop` and `Scan`), at any depth. */
  readonly subgraphCount: number;
  /** Nodes inside those subgraphs. */
  readonly subgraphNodeCount: number;
  /** Graph initialisers (the usual home of weights), of the main graph and every subgraph. */
  readonly initializers: WeightBytes;
  /** Tensors held by `Constant` nodes (some exporters keep weights there), in every graph. */
  readonly constants: WeightBytes;
  readonly metadata: Readonly<Record<string, string>>;
}

/** The bytes are not an ONNX model. */
export class NotOnnxError extends Error {
  constructor(file: string, reason: string, options?: ErrorOptions) {
    super(`${file} is not an ONNX model: ${reason}`, options);
    this.name = 'NotOnnxError';
  }
}

const DataType = onnx.TensorProto.DataType;

/** Element type names and byte sizes by ONNX `TensorProto.DataType` (4-bit types take half a byte). */
const ELEMENT_TYPES: ReadonlyMap<number, { readonly name: string; readonly bytes: number }> = new Map([
  [DataType.FLOAT, { name: 'float32', bytes: 4 }],
  [DataType.UINT8, { name: 'uint8', bytes: 1 }],
  [DataType.INT8, { name: 'int8', bytes: 1 }],
  [DataType.UINT16, { name: 'uint16', bytes: 2 }],
  [DataType.INT16, { name: 'int16', bytes: 2 }],
  [DataType.INT32, { name: 'int32', bytes: 4 }],
  [DataType.INT64, { name: 'int64', bytes: 8 }],
  [DataType.STRING, { name: 'string', bytes: 0 }],
  [DataType.BOOL, { name: 'bool', bytes: 1 }],
  [DataType.FLOAT16, { name: 'float16', bytes: 2 }],
  [DataType.DOUBLE, { name: 'float64', bytes: 8 }],
  [DataType.UINT32, { name: 'uint32', bytes: 4 }],
  [DataType.UINT64, { name: 'uint64', bytes: 8 }],
  [DataType.COMPLEX64, { name: 'complex64', bytes: 8 }],
  [DataType.COMPLEX128, { name: 'complex128', bytes: 16 }],
  [DataType.BFLOAT16, { name: 'bfloat16', bytes: 2 }],
  // Newer than the onnx-proto release (ONNX 1.10): float8 variants, 4-bit integers, float4.
  [17, { name: 'float8e4m3fn', bytes: 1 }],
  [18, { name: 'float8e4m3fnuz', bytes: 1 }],
  [19, { name: 'float8e5m2', bytes: 1 }],
  [20, { name: 'float8e5m2fnuz', bytes: 1 }],
  [21, { name: 'uint4', bytes: 0.5 }],
  [22, { name: 'int4', bytes: 0.5 }],
  [23, { name: 'float4e2m1', bytes: 0.5 }],
]);

/** The ONNX element type name, e.g. `float32`, or `type <n>` for one this tool does not know. */
export function elementTypeName(dataType: number): string {
  return ELEMENT_TYPES.get(dataType)?.name ?? `type ${dataType}`;
}

type LongLike = number | { toNumber(): number } | null | undefined;

function toNumber(value: LongLike): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/**
 * Decodes `bytes` as an ONNX `ModelProto`. Throws {@link NotOnnxError} naming `file` when they are not one
 * (not protobuf, no graph, an ORT-format file).
 *
 * @example
 * const info = readOnnxInfo(await readFile('model.onnx'), 'model.onnx');
 * info.inputs[0]; // { name: 'input', type: 'float32', shape: ['batch', 16] }
 */
export function readOnnxInfo(bytes: Uint8Array, file: string): OnnxInfo {
  if (bytes.byteLength === 0) throw new NotOnnxError(file, 'the file is empty');
  if (bytes.byteLength >= 8 && Buffer.from(bytes.subarray(4, 8)).toString('latin1') === 'ORTM') {
    throw new NotOnnxError(file, 'it is an ORT-format model (add the .onnx it was made from)');
  }
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new NotOnnxError(file, `it does not decode as an ONNX protobuf (${(error as Error).message})`, {
      cause: error,
    });
  }
  const graph = model.graph;
  const irVersion = toNumber(model.irVersion as LongLike);
  if (irVersion <= 0) throw new NotOnnxError(file, 'it declares no IR version');
  if (graph === null || graph === undefined) throw new NotOnnxError(file, 'it has no graph');
  if (model.opsetImport.length === 0) throw new NotOnnxError(file, 'it imports no opset');

  const nodes = graph.node ?? [];
  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name));
  const graphs = allGraphs(graph);
  const initializers = graphs.flatMap((g) => g.initializer ?? []);
  const constantTensors = graphs
    .flatMap((g) => g.node ?? [])
    .filter((n) => n.opType === 'Constant')
    .flatMap((n) => (n.attribute ?? []).map((a) => a.t))
    .filter((t): t is onnx.ITensorProto => t !== null && t !== undefined);
  const subgraphs = graphs.slice(1);
  return {
    file,
    size: bytes.byteLength,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    irVersion,
    opsets: model.opsetImport.map((o) => ({
      domain: o.domain === '' || o.domain === undefined || o.domain === null ? 'ai.onnx' : o.domain,
      version: toNumber(o.version as LongLike),
    })),
    producerName: model.producerName ?? '',
    producerVersion: model.producerVersion ?? '',
    modelVersion: toNumber(model.modelVersion as LongLike),
    graphName: graph.name ?? '',
    docString: model.docString ?? '',
    // Before IR version 4, initialisers were also listed as graph inputs; they are not fed by a caller.
    inputs: (graph.input ?? []).filter((v) => !initializerNames.has(v.name)).map(valueInfo),
    outputs: (graph.output ?? []).map(valueInfo),
    nodeCount: nodes.length,
    subgraphCount: subgraphs.length,
    subgraphNodeCount: subgraphs.reduce((n, g) => n + (g.node ?? []).length, 0),
    initializers: weightBytes(initializers),
    constants: weightBytes(constantTensors),
    metadata: Object.fromEntries(model.metadataProps.map((p) => [p.key ?? '', p.value ?? ''])),
  };
}

/**
 * The main graph, then every graph held by a node attribute (`If` branches, `Loop` and `Scan` bodies, and
 * theirs), walked with an explicit stack so that deep nesting cannot overflow the call stack.
 */
function allGraphs(main: onnx.IGraphProto): onnx.IGraphProto[] {
  const graphs: onnx.IGraphProto[] = [];
  const stack = [main];
  for (let g = stack.pop(); g !== undefined; g = stack.pop()) {
    graphs.push(g);
    const held: onnx.IGraphProto[] = [];
    for (const node of g.node ?? []) {
      for (const attribute of node.attribute ?? []) {
        if (attribute.g !== null && attribute.g !== undefined) held.push(attribute.g);
        for (const sub of attribute.graphs ?? []) held.push(sub);
      }
    }
    // Reversed onto the stack so that graphs come out in the order the file holds them.
    stack.push(...held.reverse());
  }
  return graphs;
}

function valueInfo(value: onnx.IValueInfoProto): OnnxValueInfo {
  const name = value.name ?? '';
  const type = value.type;
  if (type?.tensorType !== undefined && type.tensorType !== null) {
    const tensor = type.tensorType;
    const shape =
      tensor.shape === undefined || tensor.shape === null ? null : (tensor.shape.dim ?? []).map(dim);
    return { name, type: elementTypeName(tensor.elemType ?? 0), shape };
  }
  if (type?.sequenceType) return { name, type: 'sequence', shape: null };
  if (type?.mapType) return { name, type: 'map', shape: null };
  return { name, type: 'unknown', shape: null };
}

function dim(d: onnx.TensorShapeProto.IDimension): OnnxDim {
  if (d.dimParam !== undefined && d.dimParam !== null && d.dimParam !== '') return d.dimParam;
  if (d.dimValue !== undefined && d.dimValue !== null) return toNumber(d.dimValue as LongLike);
  return null;
}

function weightBytes(tensors: readonly onnx.ITensorProto[]): WeightBytes {
  let rawDataBytes = 0;
  let typedFieldBytes = 0;
  let externalBytes = 0;
  let externalCount = 0;
  for (const tensor of tensors) {
    if (tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      externalCount++;
      const length = tensor.externalData?.find((e) => e.key === 'length')?.value;
      externalBytes += length === undefined || length === null ? declaredBytes(tensor) : Number(length);
    } else if (tensor.rawData !== undefined && tensor.rawData !== null && tensor.rawData.byteLength > 0) {
      rawDataBytes += tensor.rawData.byteLength;
    } else if (tensor.dataType === DataType.STRING) {
      typedFieldBytes += (tensor.stringData ?? []).reduce((sum, s) => sum + s.byteLength, 0);
    } else {
      // Typed fields widen small types (float16 and int8 live in int32_data): count the tensor's own size.
      typedFieldBytes += declaredBytes(tensor);
    }
  }
  return {
    count: tensors.length,
    bytes: rawDataBytes + typedFieldBytes + externalBytes,
    rawDataBytes,
    typedFieldBytes,
    externalBytes,
    externalCount,
  };
}

function declaredBytes(tensor: onnx.ITensorProto): number {
  const elements = (tensor.dims ?? []).reduce<number>((n, d) => n * toNumber(d as LongLike), 1);
  return Math.ceil(elements * (ELEMENT_TYPES.get(tensor.dataType ?? 0)?.bytes ?? 0));
}

/** `[batch, 3, 16, 16]`, with `?` for an unknown dim and `(unknown rank)` without a shape. */
export function formatShape(shape: readonly OnnxDim[] | null): string {
  if (shape === null) return '(unknown rank)';
  return `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}
