/**
 * How long a run of a model version is expected to take for given input shapes, learnt from the runs this
 * instance has made. onnxruntime-node runs a session synchronously on the calling thread, so no timer can
 * answer while a run lasts: the Lambda door asks this estimator before a run whether it can end before
 * the invocation's deadline (see {@link admitRun} in `deadline.ts`).
 */
import { elementCount, type Tensor } from './tensor';

/** Where an estimate comes from; the 504 message says which. */
export type EstimateBasis =
  /** Recent runs of the very same input shapes. */
  | 'observed'
  /** Recent runs of the smallest seen shapes with at least as many elements (run time grows with size). */
  | 'larger'
  /** Scaled by element count from the largest seen shapes with fewer elements (linear, an upper bound). */
  | 'scaled';

export interface RunEstimate {
  /** Expected milliseconds of the run. */
  readonly ms: number;
  readonly basis: EstimateBasis;
  /** The shapes the estimate was taken from, as `x[1,3,224,224]`, for messages. */
  readonly from: string;
}

export interface RunTimeEstimatorOptions {
  /** Runs remembered per shape; the estimate is the longest of them. Default 8. */
  readonly window?: number;
  /** Shapes remembered per model version (the oldest seen is forgotten first). Default 64. */
  readonly maxShapes?: number;
  /** Model versions remembered. Default 64. */
  readonly maxModels?: number;
  /** Largest ratio of elements a scaled estimate spans; beyond it there is no estimate. Default 64. */
  readonly maxScale?: number;
}

interface ShapeRecord {
  readonly elements: number;
  readonly recent: number[];
  /** The longest of `recent`, kept so an estimate costs no scan. */
  longest: number;
}

/**
 * Run times per model version and input shapes. Pure and synchronous; a few map lookups per request.
 *
 * @example
 * const runTimes = new RunTimeEstimator();
 * runTimes.observe('resnet', '1', feeds, 180);
 * runTimes.estimate('resnet', '1', feeds); // { ms: 180, basis: 'observed', from: 'x[1,3,224,224]' }
 */
export class RunTimeEstimator {
  readonly #window: number;
  readonly #maxShapes: number;
  readonly #maxModels: number;
  readonly #maxScale: number;
  readonly #models = new Map<string, Map<string, ShapeRecord>>();

  constructor(options: RunTimeEstimatorOptions = {}) {
    this.#window = options.window ?? 8;
    this.#maxShapes = options.maxShapes ?? 64;
    this.#maxModels = options.maxModels ?? 64;
    this.#maxScale = options.maxScale ?? 64;
  }

  /** Records that a run of `model` `version` on `feeds` took `ms`. */
  observe(model: string, version: string, feeds: Readonly<Record<string, Tensor>>, ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const modelKey = `${model}@${version}`;
    let shapes = this.#models.get(modelKey);
    if (shapes === undefined) {
      shapes = new Map();
      this.#models.set(modelKey, shapes);
      evictOldest(this.#models, this.#maxModels);
    }
    const key = shapeKey(feeds);
    let record = shapes.get(key);
    if (record === undefined) {
      record = { elements: totalElements(feeds), recent: [], longest: 0 };
      shapes.set(key, record);
      evictOldest(shapes, this.#maxShapes);
    }
    record.recent.push(ms);
    if (record.recent.length > this.#window) record.recent.shift();
    record.longest = Math.max(...record.recent);
  }

  /**
   * The expected time of a run of `model` `version` on `feeds`, or `undefined` when nothing seen bounds it
   * (no run of the version yet, or only shapes more than `maxScale` times smaller).
   */
  estimate(model: string, version: string, feeds: Readonly<Record<string, Tensor>>): RunEstimate | undefined {
    const shapes = this.#models.get(`${model}@${version}`);
    if (shapes === undefined) return undefined;
    const key = shapeKey(feeds);
    const exact = shapes.get(key);
    if (exact !== undefined) return { ms: exact.longest, basis: 'observed', from: key };
    const elements = totalElements(feeds);
    let larger: [string, ShapeRecord] | undefined;
    let smaller: [string, ShapeRecord] | undefined;
    for (const entry of shapes) {
      const seen = entry[1];
      if (seen.elements >= elements) {
        if (larger === undefined || seen.elements < larger[1].elements) larger = entry;
      } else if (smaller === undefined || seen.elements > smaller[1].elements) {
        smaller = entry;
      }
    }
    if (larger !== undefined) return { ms: larger[1].longest, basis: 'larger', from: larger[0] };
    if (smaller === undefined || smaller[1].elements === 0) return undefined;
    const ratio = elements / smaller[1].elements;
    if (ratio > this.#maxScale) return undefined;
    return { ms: smaller[1].longest * ratio, basis: 'scaled', from: smaller[0] };
  }
}

/** The shapes of `feeds` as `a[1,3], b[1]`, names sorted so the order of a request's inputs does not matter. */
export function shapeKey(feeds: Readonly<Record<string, Tensor>>): string {
  const names = Object.keys(feeds);
  if (names.length > 1) names.sort();
  return names.map((name) => `${name}[${feeds[name]?.shape.join(',')}]`).join(', ');
}

function totalElements(feeds: Readonly<Record<string, Tensor>>): number {
  let total = 0;
  for (const tensor of Object.values(feeds)) total += elementCount(tensor.shape);
  return total;
}

function evictOldest<V>(map: Map<string, V>, max: number): void {
  while (map.size > max) {
    const oldest = map.keys().next().value as string;
    map.delete(oldest);
  }
}
