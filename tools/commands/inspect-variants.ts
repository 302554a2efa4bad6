/**
 * What `inspect` says about precision: in an ONNX file, the MatMul/Gemm nodes a quantiser can rewrite and
 * the quantised or float16 nodes it holds; for a stored version, its variants with their sizes and the
 * accuracy recorded when they were made.
 */
import { onnx } from 'onnx-proto';
import type { VersionInfo } from '../../shared/core/model-config';
import { DataType } from '../onnx/onnx-tensors';
import { findWeightMatMuls } from '../onnx/weight-matmuls';
import { formatBytes } from './command';
import { describeVariant } from './ls';

/** Precision facts of an ONNX file. */
export interface PrecisionInfo {
  /** MatMul/Gemm nodes with a constant float32 [K, N] weight: what `quantize --to int8|int4` rewrites. */
  readonly quantizableMatMuls: number;
  /** Contrib (com.microsoft) and other non-default-domain ops, by `domain.op`. */
  readonly customOps: Readonly<Record<string, number>>;
  /** Initialisers and Constant tensors by element type name, e.g. the float16 or int8 weights of a variant. */
  readonly weightTypes: Readonly<Record<string, number>>;
}

const TYPE_NAMES: Readonly<Record<number, string>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.FLOAT16]: 'float16',
  [DataType.INT8]: 'int8',
  [DataType.UINT8]: 'uint8',
  [DataType.INT64]: 'int64',
  [DataType.INT32]: 'int32',
};

/** Reads {@link PrecisionInfo} from a model's bytes (already known to decode). */
export function precisionInfo(bytes: Uint8Array): PrecisionInfo {
  const graph = onnx.ModelProto.decode(bytes).graph ?? {};
  const customOps: Record<string, number> = {};
  for (const node of graph.node ?? []) {
    if ((node.domain ?? '') === '' || node.domain === 'ai.onnx') continue;
    const key = `${node.domain}.${node.opType}`;
    customOps[key] = (customOps[key] ?? 0) + 1;
  }
  const weightTypes: Record<string, number> = {};
  const constants = (graph.node ?? [])
    .filter((n) => n.opType === 'Constant')
    .flatMap((n) => (n.attribute ?? []).map((a) => a.t))
    .filter((t): t is onnx.ITensorProto => t !== null && t !== undefined);
  for (const t of [...(graph.initializer ?? []), ...constants]) {
    const name = TYPE_NAMES[t.dataType ?? 0] ?? `type ${t.dataType}`;
    weightTypes[name] = (weightTypes[name] ?? 0) + 1;
  }
  return { quantizableMatMuls: findWeightMatMuls(graph).found.length, customOps, weightTypes };
}

/** The lines `inspect` adds for a file. */
export function formatPrecisionInfo(info: PrecisionInfo): string[] {
  const count = (r: Readonly<Record<string, number>>) =>
    Object.entries(r)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ');
  const lines = [
    `quantisable:   ${info.quantizableMatMuls} MatMul/Gemm with a constant float32 weight` +
      (info.quantizableMatMuls > 0 ? ' (quantize --to int8|int4 rewrites them)' : ''),
  ];
  if (Object.keys(info.customOps).length > 0) lines.push(`custom ops:    ${count(info.customOps)}`);
  lines.push(`weight types:  ${count(info.weightTypes) || '(none)'}`);
  return lines;
}

/** A stored version's files and variants, from its config.json entry. */
export function formatStoredVersion(label: string, location: string, info: VersionInfo): string {
  const lines = [`${label} in ${location}`, `  model.onnx  ${formatBytes(info.size)}  sha256 ${info.sha256}`];
  if (info.ort !== undefined)
    lines.push(`  model.ort   ${formatBytes(info.ort.size)}  sha256 ${info.ort.sha256}`);
  const variants = Object.entries(info.variants ?? {});
  if (variants.length === 0)
    lines.push('  no precision variants (make one with quantize --to int8|int4|fp16)');
  for (const [name, v] of variants) {
    const share = `${((v.size / info.size) * 100).toFixed(1)}% of model.onnx`;
    const ort = v.ort === undefined ? '' : `, model.${name}.ort ${formatBytes(v.ort.size)}`;
    lines.push(`  ${name}: model.${name}.onnx ${formatBytes(v.size)} (${share})${ort}`);
    const a = v.accuracy;
    const abs =
      a?.maxAbsError === undefined
        ? ''
        : `; abs error max ${a.maxAbsError.toExponential(2)}, mean ${(a.meanAbsError ?? 0).toExponential(2)} on ${a.examples ?? '?'} examples`;
    lines.push(
      `    ${describeVariant({
        name,
        size: v.size,
        runsOn: v.runsOn,
        providers: v.providers,
        ...(a?.relativeError === undefined ? {} : { relativeError: a.relativeError }),
        ...(a?.cosine === undefined ? {} : { cosine: a.cosine }),
        ...(a?.top1Agreement === undefined ? {} : { top1Agreement: a.top1Agreement }),
        ...(a?.inputs === undefined ? {} : { inputs: a.inputs }),
      })}${abs}`,
    );
  }
  return lines.join('\n');
}
