/**
 * Finds the MatMul and Gemm nodes of a graph whose weight (the right-hand operand) is a constant, and
 * replaces each with the nodes a quantiser builds for it. A Gemm is brought to `A · W + addend` first:
 * `W = alpha · op(B)` as a [K, N] float32 matrix (transposed when transB), and `beta · C` added after.
 * Shared by the int8 and int4 rewrites; only the top-level graph is rewritten (subgraphs keep their nodes).
 */
import type { onnx } from 'onnx-proto';
import {
  DataType,
  dimsOf,
  dropUnusedInitializers,
  floatAttributeOf,
  intAttributeOf,
  makeNode,
  NameAllocator,
  namesReadBySubgraphs,
  rawTensor,
  readFloats,
} from './onnx-tensors';

/** A MatMul or Gemm whose weight is a constant: `output = input · weight (+ addend)`. */
export interface WeightMatMul {
  readonly node: onnx.INodeProto;
  /** A label for reports: the node's name, else its op and output. */
  readonly label: string;
  /** The activation, `[..., K]`. */
  readonly input: string;
  readonly output: string;
  /** The effective weight, `[K, N]` row-major (alpha and transB applied for a Gemm). */
  readonly weight: Float32Array;
  readonly k: number;
  readonly n: number;
  /** The initialiser or Constant output the weight came from. */
  readonly weightName: string;
  /** A Gemm's `beta · C`, added after the product. */
  readonly addend?:
    | { readonly kind: 'constant'; readonly dims: readonly number[]; readonly data: Float32Array }
    | { readonly kind: 'value'; readonly name: string; readonly beta: number };
}

/** A MatMul or Gemm left as it was, and why. */
export interface SkippedNode {
  readonly node: string;
  readonly op: string;
  readonly reason: string;
}

/** What a quantiser puts in place of one {@link WeightMatMul}: nodes (in order) and new initialisers. */
export interface Replacement {
  readonly nodes: readonly onnx.INodeProto[];
  readonly initializers: readonly onnx.ITensorProto[];
}

function labelOf(node: onnx.INodeProto): string {
  return node.name ? node.name : `${node.opType} -> ${node.output?.[0] ?? '?'}`;
}

/** Constant tensors by the name they are read under: initialisers, `Constant` outputs and `Identity` of those. */
function constantsOf(graph: onnx.IGraphProto): Map<string, onnx.ITensorProto> {
  const constants = new Map<string, onnx.ITensorProto>();
  for (const t of graph.initializer ?? []) constants.set(t.name ?? '', t);
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? ''));
  for (const node of graph.node ?? []) {
    if ((node.domain ?? '') !== '') continue;
    const output = node.output?.[0];
    if (!output) continue;
    if (node.opType === 'Constant') {
      const value = (node.attribute ?? []).find((a) => a.name === 'value')?.t;
      if (value) constants.set(output, value);
    } else if (node.opType === 'Identity') {
      // PyTorch's exporter shares equal weights through Identity nodes.
      const source = constants.get(node.input?.[0] ?? '');
      if (source) constants.set(output, source);
    }
  }
  // An initialiser that is also a graph input (IR < 4) may be overridden by a caller: not a constant.
  for (const name of inputs) constants.delete(name);
  return constants;
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c] as number;
  return out;
}

/**
 * The MatMul and Gemm nodes of `graph` (top level) that can take a quantised weight, and those that cannot
 * with the reason. `gemm: false` leaves every Gemm out (reported as skipped).
 */
export function findWeightMatMuls(
  graph: onnx.IGraphProto,
  { gemm = true } = {},
): { found: WeightMatMul[]; skipped: SkippedNode[] } {
  const constants = constantsOf(graph);
  const found: WeightMatMul[] = [];
  const skipped: SkippedNode[] = [];
  for (const node of graph.node ?? []) {
    const op = node.opType ?? '';
    if ((op !== 'MatMul' && op !== 'Gemm') || (node.domain ?? '') !== '') continue;
    const label = labelOf(node);
    const skip = (reason: string) => skipped.push({ node: label, op, reason });
    const [input, weightName, cName] = node.input ?? [];
    const output = node.output?.[0];
    if (!input || !weightName || !output) {
      skip('missing an input or output');
      continue;
    }
    if (op === 'Gemm' && !gemm) {
      skip('Gemm left as it is for this precision');
      continue;
    }
    const tensor = constants.get(weightName);
    if (tensor === undefined) {
      skip(
        constants.has(input)
          ? 'the constant is the left operand (W · x): only x · W is rewritten'
          : 'the weight is computed at run time, not a constant',
      );
      continue;
    }
    const dims = dimsOf(tensor);
    if (tensor.dataType !== DataType.FLOAT) {
      skip(`the weight is not float32 (ONNX type ${tensor.dataType})`);
      continue;
    }
    if (dims.length !== 2) {
      skip(`the weight has rank ${dims.length}; only a [K, N] matrix is rewritten`);
      continue;
    }
    const values = readFloats(tensor);
    if (values === undefined) {
      skip('the weight is not stored in the file (external data) or is malformed');
      continue;
    }
    const [rows, cols] = dims as [number, number];
    if (op === 'MatMul') {
      found.push({ node, label, input, output, weight: values, k: rows, n: cols, weightName });
      continue;
    }
    if (intAttributeOf(node, 'transA', 0) !== 0) {
      skip('Gemm with transA = 1 (the activation transposed) is left in float32');
      continue;
    }
    const alpha = floatAttributeOf(node, 'alpha', 1);
    const beta = floatAttributeOf(node, 'beta', 1);
    const transB = intAttributeOf(node, 'transB', 0) !== 0;
    const weight = transB ? transpose(values, rows, cols) : values;
    if (alpha !== 1) for (let i = 0; i < weight.length; i++) weight[i] = (weight[i] as number) * alpha;
    const [k, n] = transB ? [cols, rows] : [rows, cols];
    let addend: WeightMatMul['addend'];
    if (cName && beta !== 0) {
      const c = constants.get(cName);
      const cValues = c === undefined ? undefined : readFloats(c);
      if (c !== undefined && cValues !== undefined) {
        if (beta !== 1) for (let i = 0; i < cValues.length; i++) cValues[i] = (cValues[i] as number) * beta;
        addend = { kind: 'constant', dims: dimsOf(c), data: cValues };
      } else if (c !== undefined) {
        skip('the Gemm bias C is a constant that is not float32 in the file');
        continue;
      } else {
        addend = { kind: 'value', name: cName, beta };
      }
    }
    found.push({
      node,
      label,
      input,
      output,
      weight,
      k,
      n,
      weightName,
      ...(addend === undefined ? {} : { addend }),
    });
  }
  return { found, skipped };
}

/**
 * Replaces each of `found` (from {@link findWeightMatMuls} on `model.graph`) with what `build` returns for
 * it, in place: `build` gets the matmul and the name its product must have (the node's output, or a fresh
 * name when a Gemm addend follows). Initialisers and Constant nodes nothing reads any more are removed.
 */
export function replaceWeightMatMuls(
  model: onnx.IModelProto,
  found: readonly WeightMatMul[],
  build: (matmul: WeightMatMul, product: string, names: NameAllocator) => Replacement,
): void {
  const graph = model.graph as onnx.IGraphProto;
  const names = new NameAllocator(graph);
  const replacements = new Map<onnx.INodeProto, onnx.INodeProto[]>();
  const added: onnx.ITensorProto[] = [];
  for (const matmul of found) {
    const product = matmul.addend === undefined ? matmul.output : names.fresh(`${matmul.output}_product`);
    const { nodes, initializers } = build(matmul, product, names);
    added.push(...initializers);
    const all = [...nodes];
    const addend = matmul.addend;
    if (addend?.kind === 'constant') {
      const name = names.fresh(`${matmul.weightName}_bias`);
      added.push(rawTensor(name, DataType.FLOAT, addend.dims, addend.data));
      all.push(makeNode('Add', [product, name], [matmul.output], names.fresh(`${matmul.label}_bias_add`)));
    } else if (addend?.kind === 'value') {
      let c = addend.name;
      if (addend.beta !== 1) {
        const beta = names.fresh(`${matmul.label}_beta`);
        added.push(rawTensor(beta, DataType.FLOAT, [], Float32Array.of(addend.beta)));
        c = names.fresh(`${addend.name}_times_beta`);
        all.push(makeNode('Mul', [addend.name, beta], [c], names.fresh(`${matmul.label}_beta_mul`)));
      }
      all.push(makeNode('Add', [product, c], [matmul.output], names.fresh(`${matmul.label}_bias_add`)));
    }
    replacements.set(matmul.node, all);
  }
  graph.node = (graph.node ?? []).flatMap((node) => replacements.get(node) ?? [node]);
  graph.initializer = [...(graph.initializer ?? []), ...added];
  dropUnusedConstantNodes(graph);
  dropUnusedInitializers(graph);
}

/**
 * Removes Constant and Identity nodes whose output nothing reads (weights that moved into quantised
 * initialisers, and the Identity aliases PyTorch made of them), until none is left.
 */
function dropUnusedConstantNodes(graph: onnx.IGraphProto): void {
  for (;;) {
    const read = namesReadBySubgraphs(graph);
    for (const node of graph.node ?? []) for (const input of node.input ?? []) read.add(input);
    for (const output of graph.output ?? []) read.add(output.name ?? '');
    const before = graph.node?.length ?? 0;
    graph.node = (graph.node ?? []).filter(
      (node) =>
        (node.opType !== 'Constant' && node.opType !== 'Identity') ||
        (node.domain ?? '') !== '' ||
        (node.output ?? []).some((o) => read.has(o)),
    );
    if (graph.node.length === before) return;
  }
}
