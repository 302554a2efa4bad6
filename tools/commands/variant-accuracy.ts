/**
 * How far a precision variant answers from the float32 model on the same inputs, and whether that is
 * within the bounds a variant must meet to be stored. Pure arithmetic on outputs: the runs happen in
 * tools/commands/variant.ts.
 */
import { fromHalfBits } from '../../shared/core/fp16';
import type { Tensor } from '../../shared/core/tensor';
import type { Precision } from '../onnx/precision-variant';

/** One output's agreement. */
export interface OutputAccuracy {
  /** Float outputs: the largest and the mean |variant - float32| over every element. */
  readonly maxAbsError?: number;
  readonly meanAbsError?: number;
  /** `maxAbsError` over the largest |float32 output| (0 when the outputs are all 0 and equal). */
  readonly relativeError?: number;
  /** The lowest cosine similarity of one example's output (a row along dim 0) and the float32 one's. */
  readonly cosine?: number;
  /**
   * Class-score outputs (`[batch, classes]`, at least two classes): the fraction of rows whose arg-max is
   * the same. Non-float outputs (labels, ids): the fraction of equal elements.
   */
  readonly top1Agreement?: number;
  readonly elements: number;
}

/** What config.json records next to a variant (`versions.<v>.variants.<name>.accuracy`). */
export interface AccuracyRecord {
  /** `samples`: real inputs from `--inputs`; `random`: seeded random inputs shaped from the model's dims. */
  readonly inputs: 'samples' | 'random';
  /** Examples compared (rows along the batch dim, or runs for a model without one). */
  readonly examples: number;
  /** Over every float output: the largest error, the mean error, the largest relative error... */
  readonly maxAbsError: number;
  readonly meanAbsError: number;
  readonly relativeError: number;
  /** ...the lowest cosine similarity, and the lowest top-1 agreement (absent without class scores). */
  readonly cosine: number;
  readonly top1Agreement?: number;
  readonly outputs: Readonly<Record<string, OutputAccuracy>>;
}

/** The worst a variant may answer and still be stored (without `--force`). */
export interface AccuracyBounds {
  /** The most `relativeError`: max |error| as a fraction of the largest |float32 output|. */
  readonly maxError: number;
  /** The least cosine similarity of any example's output. */
  readonly minCosine: number;
  /** The least top-1 agreement, where an output has class scores. */
  readonly minTop1: number;
}

/**
 * Defaults by precision, set from measurements (docs/models.md "Smaller models"): int8 answers within
 * 1-3% of the largest output, int4 within 10-20%, fp16 within 0.03% (an MLP) to 1.3% (the PaddleOCR
 * recogniser's 6,625-way softmax). The bounds refuse a variant that is broken or far worse than usual for its kind, not one that is
 * merely imperfect: a deployment that needs more sets them tighter.
 */
export const DEFAULT_BOUNDS: Readonly<Record<Precision, AccuracyBounds>> = {
  int8: { maxError: 0.1, minCosine: 0.99, minTop1: 0.9 },
  int4: { maxError: 0.25, minCosine: 0.95, minTop1: 0.8 },
  fp16: { maxError: 0.05, minCosine: 0.999, minTop1: 0.98 },
};

function isFloat(t: Tensor): boolean {
  return t.datatype === 'FP32' || t.datatype === 'FP64' || t.datatype === 'FP16';
}

function valueAt(t: Tensor, i: number): number {
  const v = t.data[i] as number;
  return t.datatype === 'FP16' ? fromHalfBits(v) : v;
}

interface Accumulator {
  float: boolean;
  elements: number;
  maxAbs: number;
  sumAbs: number;
  maxRef: number;
  minCosine: number;
  top1Rows: number;
  top1Same: number;
  equal: number;
}

/**
 * Compares runs output by output: `expected[i]` (float32 model) with `actual[i]` (variant) on the same
 * feeds. Throws when an output is missing or differs in type or shape: a variant must keep the model's
 * interface.
 */
export function measureAccuracy(
  expected: readonly Readonly<Record<string, Tensor>>[],
  actual: readonly Readonly<Record<string, Tensor>>[],
  inputs: AccuracyRecord['inputs'],
  examples: number,
): AccuracyRecord {
  const acc = new Map<string, Accumulator>();
  expected.forEach((want, run) => {
    const got = actual[run] ?? {};
    for (const [name, e] of Object.entries(want)) {
      const a = got[name];
      if (a === undefined) throw new Error(`the variant does not answer output '${name}'`);
      if (a.datatype !== e.datatype || a.shape.join(',') !== e.shape.join(',')) {
        throw new Error(
          `the variant's output '${name}' is ${a.datatype} [${a.shape.join(', ')}], the float32 model's ${e.datatype} [${e.shape.join(', ')}]`,
        );
      }
      let s = acc.get(name);
      if (s === undefined) {
        s = {
          float: isFloat(e),
          elements: 0,
          maxAbs: 0,
          sumAbs: 0,
          maxRef: 0,
          minCosine: 1,
          top1Rows: 0,
          top1Same: 0,
          equal: 0,
        };
        acc.set(name, s);
      }
      accumulate(s, e, a);
    }
  });

  const outputs: Record<string, OutputAccuracy> = {};
  let maxAbsError = 0;
  let sumAbs = 0;
  let floatElements = 0;
  let relativeError = 0;
  let cosine = 1;
  let top1: number | undefined;
  for (const [name, s] of acc) {
    if (!s.float) {
      const agreement = s.elements === 0 ? 1 : s.equal / s.elements;
      outputs[name] = { top1Agreement: agreement, elements: s.elements };
      top1 = Math.min(top1 ?? 1, agreement);
      continue;
    }
    const relative = s.maxRef === 0 ? (s.maxAbs === 0 ? 0 : Number.POSITIVE_INFINITY) : s.maxAbs / s.maxRef;
    const out: OutputAccuracy = {
      maxAbsError: s.maxAbs,
      meanAbsError: s.elements === 0 ? 0 : s.sumAbs / s.elements,
      relativeError: relative,
      cosine: s.minCosine,
      ...(s.top1Rows > 0 ? { top1Agreement: s.top1Same / s.top1Rows } : {}),
      elements: s.elements,
    };
    outputs[name] = out;
    maxAbsError = Math.max(maxAbsError, s.maxAbs);
    sumAbs += s.sumAbs;
    floatElements += s.elements;
    relativeError = Math.max(relativeError, relative);
    cosine = Math.min(cosine, s.minCosine);
    if (out.top1Agreement !== undefined) top1 = Math.min(top1 ?? 1, out.top1Agreement);
  }
  return {
    inputs,
    examples,
    maxAbsError,
    meanAbsError: floatElements === 0 ? 0 : sumAbs / floatElements,
    relativeError,
    cosine,
    ...(top1 === undefined ? {} : { top1Agreement: top1 }),
    outputs,
  };
}

function accumulate(s: Accumulator, e: Tensor, a: Tensor): void {
  const n = e.data.length;
  s.elements += n;
  if (!s.float) {
    for (let i = 0; i < n; i++) if (e.data[i] === a.data[i]) s.equal++;
    return;
  }
  for (let i = 0; i < n; i++) {
    const x = valueAt(e, i);
    const y = valueAt(a, i);
    const d = Math.abs(x - y);
    // NaN where float32 has NaN is agreement; NaN anywhere else is the worst error there is.
    const err = Number.isNaN(x) && Number.isNaN(y) ? 0 : Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
    if (err > s.maxAbs) s.maxAbs = err;
    s.sumAbs += err;
    const ref = Math.abs(x);
    if (ref > s.maxRef && Number.isFinite(ref)) s.maxRef = ref;
  }
  const rows = e.shape.length >= 1 ? (e.shape[0] as number) : 1;
  const width = rows === 0 ? 0 : n / rows;
  const classScores = e.shape.length === 2 && width >= 2;
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let ee = 0;
    let aa = 0;
    let bestE = 0;
    let bestA = 0;
    for (let j = 0; j < width; j++) {
      const i = r * width + j;
      const x = valueAt(e, i);
      const y = valueAt(a, i);
      dot += x * y;
      ee += x * x;
      aa += y * y;
      if (x > valueAt(e, r * width + bestE)) bestE = j;
      if (y > valueAt(a, r * width + bestA)) bestA = j;
    }
    const c = ee === 0 && aa === 0 ? 1 : ee === 0 || aa === 0 ? 0 : dot / Math.sqrt(ee * aa);
    s.minCosine = Math.min(s.minCosine, Number.isNaN(c) ? 0 : c);
    if (classScores) {
      s.top1Rows++;
      if (bestE === bestA) s.top1Same++;
    }
  }
}

/** The bounds `record` breaks, each as a sentence; empty when it meets them all. */
export function boundViolations(record: AccuracyRecord, bounds: AccuracyBounds): string[] {
  const problems: string[] = [];
  if (!(record.relativeError <= bounds.maxError)) {
    problems.push(
      `max error ${formatPercent(record.relativeError)} of the largest output is over --max-error ${formatPercent(bounds.maxError)}`,
    );
  }
  if (!(record.cosine >= bounds.minCosine)) {
    problems.push(`cosine similarity ${record.cosine.toFixed(4)} is under --min-cosine ${bounds.minCosine}`);
  }
  if (record.top1Agreement !== undefined && !(record.top1Agreement >= bounds.minTop1)) {
    problems.push(
      `top-1 agreement ${formatPercent(record.top1Agreement)} is under --min-top1 ${formatPercent(bounds.minTop1)}`,
    );
  }
  return problems;
}

export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return String(fraction);
  const p = fraction * 100;
  return `${p >= 10 ? p.toFixed(1) : p >= 0.01 ? p.toFixed(2) : p.toExponential(1)}%`;
}

/** One line: `max error 1.2% (3.4e-3 abs, mean 5.6e-4), cosine 0.9998, top-1 100% on 16 random examples`. */
export function formatAccuracy(record: AccuracyRecord): string {
  const top1 = record.top1Agreement === undefined ? '' : `, top-1 ${formatPercent(record.top1Agreement)}`;
  return (
    `max error ${formatPercent(record.relativeError)} (${record.maxAbsError.toExponential(2)} abs, mean ` +
    `${record.meanAbsError.toExponential(2)}), cosine ${record.cosine.toFixed(4)}${top1} on ${record.examples} ` +
    `${record.inputs === 'samples' ? 'sample' : 'random'} examples`
  );
}
