/**
 * The request queues of the container door: every model version gets a bounded first-in, first-out queue
 * and at most `maxConcurrentBatches` engine runs at a time; models whose config.json has `dynamicBatching`
 * also get their concurrent requests stacked along the batch axis into one run, each request getting its
 * own rows back.
 *
 * Rules, per model version (name, version and sha256):
 * - requests run in the order they arrive; past the queue bound (`dynamicBatching.maxQueueSize`, else the
 *   server-wide `maxQueueSize`) a request is refused at once with {@link OverloadedError} (503 +
 *   Retry-After, estimated from the queue and the observed run time), never left to time out;
 * - only models with `dynamicBatching` batch (when `batching` is on), and only when every input's dim 0 is
 *   the dynamic batch axis and every output has a dim 0; their other requests, and every request of the
 *   other models, run one at a time in their turn;
 * - batched requests are grouped into lanes by their non-batch shapes, datatypes and requested outputs:
 *   requests whose shapes differ are never stacked together;
 * - a lane is due when it holds `maxBatchSize` rows or its oldest request has waited `maxQueueDelayMs`;
 *   of the due lanes the one whose oldest request came first runs; while runs are in flight the queue
 *   grows, so a busy model runs fuller batches;
 * - a request with more rows than `maxBatchSize` runs alone;
 * - a request whose signal aborts while it waits is removed and never runs; one that aborts while its
 *   batch runs is dropped when the batch completes;
 * - when a batched run fails, each of its requests is run again alone, so only a faulty one fails.
 *
 * One run at a time also keeps the server responsive with sessions on the event loop (onnxruntime-node's
 * `session.run` is synchronous): between two runs the event loop reads and decodes the requests that
 * arrived meanwhile, instead of running every decoded request back to back while bodies wait unread.
 *
 * Requests reach the queue validated (the service checked names, datatypes and shapes), so stacking
 * only has to copy.
 */
import { OverloadedError, RequestAbortedError } from './errors';
import type { Runner } from './inference-service';
import type { DynamicBatchingConfig } from './model-config';
import type { ResolvedModel } from './model-registry';
import type { Clock, LoadedModel, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';
import { allocateData, elementCount, type Tensor, type TensorData } from './tensor';

// Kept importable from here, where it was first defined.
export { RequestAbortedError } from './errors';

/** Timer functions, injected so tests can drive time. */
export interface BatcherTimers {
  set(callback: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const REAL_TIMERS: BatcherTimers = {
  set: (callback, ms) => setTimeout(callback, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface DynamicBatcherOptions {
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
  readonly timers?: BatcherTimers;
  /**
   * Engine runs of one model version in flight at once (default 1, as one Triton model instance). One
   * session run already uses every intra-op thread (CPU) or the whole device (GPU); a second would only
   * compete with it, while waiting lets the next batch fill.
   */
  readonly maxConcurrentBatches?: number;
  /** The least `Retry-After` of a refused request, in seconds (default 1); at most 60 is ever sent. */
  readonly retryAfterSeconds?: number;
  /** Stack requests of models whose config.json has `dynamicBatching` (default true). */
  readonly batching?: boolean;
  /** Requests that may wait per model version unless its `dynamicBatching.maxQueueSize` says (default 256). */
  readonly maxQueueSize?: number;
}

/** The default of {@link DynamicBatcherOptions.maxQueueSize}. */
export const DEFAULT_MAX_QUEUE_SIZE = 256;
const MAX_RETRY_AFTER_SECONDS = 60;

interface Entry {
  readonly model: LoadedModel;
  readonly feeds: Record<string, Tensor>;
  readonly outputs: readonly string[] | undefined;
  readonly rows: number;
  /** Runs on its own: the model does not batch, or this request cannot be stacked. */
  readonly alone: boolean;
  readonly at: number;
  readonly lane: Lane;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (outputs: Record<string, Tensor>) => void;
  readonly reject: (error: unknown) => void;
  readonly onAbort: () => void;
  state: 'queued' | 'running' | 'settled';
}

/**
 * Requests that can share a batch: same input names, datatypes and non-batch dims, same outputs. The
 * lane {@link ALONE} holds the requests that run one at a time.
 */
interface Lane {
  readonly key: string;
  readonly entries: Entry[];
  rows: number;
}

/** The key of the lane of requests that run alone (NUL-free lane keys never start with this). */
const ALONE = '\u0002alone';

/** The queue of one model version. */
interface VersionQueue {
  readonly key: string;
  readonly model: string;
  readonly version: string;
  /** The model's `dynamicBatching` while batching is on; `undefined`: every request runs alone. */
  config: DynamicBatchingConfig | undefined;
  maxQueueSize: number;
  readonly lanes: Map<string, Lane>;
  /** Requests waiting (not yet running), across lanes: the number bounded by `maxQueueSize`. */
  queued: number;
  running: number;
  timer: unknown;
  timerAt: number;
}

/** A batched run whose outputs cannot be split by rows (an output without the batch dim). */
class UnsplittableError extends Error {}

/**
 * Builds the {@link Runner} of the HTTP server. One batcher queues every model of the process.
 *
 * @example
 * const batcher = new DynamicBatcher({ telemetry, maxQueueSize: 256 });
 * const service = new InferenceService({ registry, cache, loader, limits, runner: batcher.runner });
 */
export class DynamicBatcher {
  readonly #telemetry: Telemetry;
  readonly #clock: Clock;
  readonly #timers: BatcherTimers;
  readonly #maxConcurrent: number;
  readonly #retryAfterSeconds: number;
  readonly #batching: boolean;
  readonly #maxQueueSize: number;
  readonly #queues = new Map<string, VersionQueue>();
  /**
   * Per queue key, a moving average of the engine run time (ms), for Retry-After. Kept when an idle queue
   * is forgotten: one entry per model version ever served.
   */
  readonly #runMs = new Map<string, number>();
  /** Per session: whether its signature has a batch axis everywhere (false also once a split failed). */
  readonly #batchable = new WeakMap<LoadedModel, boolean>();

  constructor(options: DynamicBatcherOptions = {}) {
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#clock = options.clock ?? (() => performance.now());
    this.#timers = options.timers ?? REAL_TIMERS;
    this.#maxConcurrent = options.maxConcurrentBatches ?? 1;
    this.#retryAfterSeconds = options.retryAfterSeconds ?? 1;
    this.#batching = options.batching ?? true;
    this.#maxQueueSize = options.maxQueueSize ?? DEFAULT_MAX_QUEUE_SIZE;
    if (!Number.isSafeInteger(this.#maxConcurrent) || this.#maxConcurrent < 1) {
      throw new RangeError(`'maxConcurrentBatches' must be a positive integer`);
    }
    if (!Number.isSafeInteger(this.#maxQueueSize) || this.#maxQueueSize < 1) {
      throw new RangeError(`'maxQueueSize' must be a positive integer`);
    }
  }

  /** The runner to give the inference service. */
  readonly runner: Runner = (model, resolved, feeds, outputs, signal) =>
    this.#submit(model, resolved, feeds, outputs, signal);

  /** Requests waiting (not yet running) across every model. */
  get queued(): number {
    let n = 0;
    for (const queue of this.#queues.values()) n += queue.queued;
    return n;
  }

  /**
   * The refusal a new request for `model` (of `version`, when the request names one) would meet now, for
   * a door to answer before it reads the request's body: when every queue of the model (or the named
   * version's) is at its bound, counting `arriving` requests the door has admitted whose bodies it is
   * still reading. `undefined` when one has room, or none exists yet.
   */
  refusal(model: string, version?: string, arriving = 0): OverloadedError | undefined {
    let full: VersionQueue | undefined;
    for (const queue of this.#queues.values()) {
      if (queue.model !== model || (version !== undefined && queue.version !== version)) continue;
      if (queue.queued + arriving < queue.maxQueueSize) return undefined;
      full = queue;
    }
    return full === undefined ? undefined : this.#overloaded(full);
  }

  #submit(
    model: LoadedModel,
    resolved: ResolvedModel,
    feeds: Record<string, Tensor>,
    outputs: readonly string[] | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Record<string, Tensor>> {
    const config = this.#batching ? resolved.config.dynamicBatching : undefined;
    const rows = config === undefined || !this.#isBatchable(model) ? undefined : rowsOf(feeds);
    const { name } = resolved.config;
    const { version } = resolved;
    if (signal?.aborted) return Promise.reject(aborted(name, version));

    const key = `${name}@${version}#${resolved.sha256}`;
    let queue = this.#queues.get(key);
    if (queue === undefined) {
      queue = {
        key,
        model: name,
        version,
        config,
        maxQueueSize: this.#maxQueueSize,
        lanes: new Map(),
        queued: 0,
        running: 0,
        timer: undefined,
        timerAt: 0,
      };
      this.#queues.set(key, queue);
    }
    // config.json may change within a version (its TTL re-read): the latest settings apply.
    queue.config = config;
    queue.maxQueueSize = config?.maxQueueSize ?? this.#maxQueueSize;
    if (queue.queued >= queue.maxQueueSize) return Promise.reject(this.#overloaded(queue));
    const laneKey = rows === undefined ? ALONE : laneKeyOf(feeds, outputs);
    let lane = queue.lanes.get(laneKey);
    if (lane === undefined) {
      lane = { key: laneKey, entries: [], rows: 0 };
      queue.lanes.set(laneKey, lane);
    }
    return this.#enqueue(queue, lane, {
      model,
      feeds,
      outputs,
      rows: rows ?? 1,
      alone: rows === undefined,
      signal,
    });
  }

  #overloaded(queue: VersionQueue): OverloadedError {
    // Runs needed to drain the queue (batched: full batches) times the observed run time.
    const runs =
      queue.config === undefined ? queue.queued : Math.ceil(queue.queued / queue.config.maxBatchSize);
    const waitSeconds = (runs * (this.#runMs.get(queue.key) ?? 0)) / 1000 / this.#maxConcurrent;
    const retryAfter = Math.min(
      MAX_RETRY_AFTER_SECONDS,
      Math.max(this.#retryAfterSeconds, Math.ceil(waitSeconds)),
    );
    return new OverloadedError(
      `model '${queue.model}' has ${queue.queued} requests queued, its limit; retry later`,
      retryAfter,
    );
  }

  #enqueue(
    queue: VersionQueue,
    lane: Lane,
    request: Pick<Entry, 'model' | 'feeds' | 'outputs' | 'rows' | 'alone' | 'signal'>,
  ): Promise<Record<string, Tensor>> {
    return new Promise((resolve, reject) => {
      const entry: Entry = {
        ...request,
        at: this.#clock(),
        lane,
        resolve,
        reject,
        onAbort: () => this.#abort(queue, entry),
        state: 'queued',
      };
      lane.entries.push(entry);
      lane.rows += entry.rows;
      queue.queued += 1;
      entry.signal?.addEventListener('abort', entry.onAbort, { once: true });
      this.#depthChanged(queue);
      this.#pump(queue);
    });
  }

  #isBatchable(model: LoadedModel): boolean {
    let batchable = this.#batchable.get(model);
    if (batchable === undefined) {
      const { inputs, outputs } = model.signature;
      const axisNames = new Set(inputs.map((spec) => spec.dims?.[0] ?? -1));
      batchable =
        inputs.length > 0 &&
        inputs.every((spec) => spec.shape[0] === -1) &&
        // Two inputs whose dim 0 have different symbolic names are two different axes, not one batch.
        axisNames.size === 1 &&
        outputs.every((spec) => spec.shape.length > 0 && (spec.shape[0] as number) < 0);
      this.#batchable.set(model, batchable);
    }
    return batchable;
  }

  /** Starts every due batch a free slot allows, then arms the timer for the next lane to come due. */
  #pump(queue: VersionQueue): void {
    const now = this.#clock();
    while (queue.running < this.#maxConcurrent) {
      const lane = this.#nextDue(queue, now);
      if (lane === undefined) break;
      const batch = take(lane, lane.key === ALONE ? 1 : (queue.config?.maxBatchSize ?? 1));
      if (lane.entries.length === 0) queue.lanes.delete(lane.key);
      queue.queued -= batch.length;
      queue.running += 1;
      this.#depthChanged(queue);
      void this.#execute(queue, batch).finally(() => {
        queue.running -= 1;
        this.#pump(queue);
      });
    }
    this.#arm(queue, now);
    this.#forgetIfIdle(queue);
  }

  /** The due lane whose oldest request has waited longest: requests run in their order of arrival. */
  #nextDue(queue: VersionQueue, now: number): Lane | undefined {
    const { config } = queue;
    let best: Lane | undefined;
    for (const lane of queue.lanes.values()) {
      const head = lane.entries[0];
      if (head === undefined) continue;
      const due =
        lane.key === ALONE ||
        config === undefined ||
        lane.rows >= config.maxBatchSize ||
        now - head.at >= config.maxQueueDelayMs;
      if (due && (best === undefined || head.at < (best.entries[0] as Entry).at)) best = lane;
    }
    return best;
  }

  #arm(queue: VersionQueue, now: number): void {
    let at = Number.POSITIVE_INFINITY;
    // With every slot busy the end of a run pumps the queue; no timer is needed until then.
    // Requests that run alone are due at once: only a batch lane waiting for its delay needs a timer.
    if (queue.running < this.#maxConcurrent && queue.config !== undefined) {
      for (const lane of queue.lanes.values()) {
        const head = lane.entries[0];
        if (head !== undefined && lane.key !== ALONE)
          at = Math.min(at, head.at + queue.config.maxQueueDelayMs);
      }
    }
    if (queue.timer !== undefined && queue.timerAt === at) return;
    if (queue.timer !== undefined) this.#timers.clear(queue.timer);
    queue.timer = undefined;
    if (at === Number.POSITIVE_INFINITY) return;
    queue.timerAt = at;
    queue.timer = this.#timers.set(
      () => {
        queue.timer = undefined;
        this.#pump(queue);
      },
      Math.max(0, at - now),
    );
  }

  #forgetIfIdle(queue: VersionQueue): void {
    if (queue.queued > 0 || queue.running > 0 || queue.lanes.size > 0) return;
    if (queue.timer !== undefined) this.#timers.clear(queue.timer);
    queue.timer = undefined;
    if (this.#queues.get(queue.key) === queue) this.#queues.delete(queue.key);
  }

  /** Runs a batch and settles every request of it; never rejects. */
  async #execute(queue: VersionQueue, batch: readonly Entry[]): Promise<void> {
    try {
      await this.#executeBatch(queue, batch);
    } catch (error) {
      for (const entry of batch) settle(entry, () => entry.reject(error));
    }
  }

  async #executeBatch(queue: VersionQueue, batch: readonly Entry[]): Promise<void> {
    for (const entry of batch) {
      entry.state = 'running';
      // Aborting from now on only drops the answer: the run cannot be cancelled.
      entry.signal?.removeEventListener('abort', entry.onAbort);
    }
    const first = batch[0] as Entry;
    if (batch.length === 1) {
      await this.#runAlone(queue, first);
      return;
    }
    const started = this.#clock();
    let parts: Record<string, Tensor>[];
    try {
      const results = await first.model.run(stack(batch), first.outputs);
      parts = split(results, batch);
    } catch (error) {
      if (error instanceof UnsplittableError) this.#batchable.set(first.model, false);
      // One bad request must not fail its neighbours: each runs again alone, and only a faulty one fails.
      for (const entry of batch) await this.#runAlone(queue, entry);
      return;
    }
    this.#ran(queue, batch, started);
    for (const [i, entry] of batch.entries()) {
      settle(entry, () => entry.resolve(parts[i] as Record<string, Tensor>));
    }
  }

  async #runAlone(queue: VersionQueue, entry: Entry): Promise<void> {
    if (entry.signal?.aborted) {
      settle(entry, () => entry.reject(aborted(queue.model, queue.version)));
      return;
    }
    const started = this.#clock();
    try {
      const outputs = await entry.model.run(entry.feeds, entry.outputs);
      this.#ran(queue, [entry], started);
      settle(entry, () => entry.resolve(outputs));
    } catch (error) {
      settle(entry, () => entry.reject(error));
    }
  }

  #ran(queue: VersionQueue, batch: readonly Entry[], started: number): void {
    const ms = this.#clock() - started;
    const average = this.#runMs.get(queue.key);
    this.#runMs.set(queue.key, average === undefined ? ms : average * 0.8 + ms * 0.2);
    // Batch metrics describe batching: requests of models that do not batch are not batches.
    if (queue.config === undefined || (batch.length === 1 && (batch[0] as Entry).alone)) return;
    this.#telemetry.emit({
      type: 'batch',
      model: queue.model,
      version: queue.version,
      rows: batch.reduce((n, e) => n + e.rows, 0),
      requests: batch.length,
      ms,
    });
  }

  #abort(queue: VersionQueue, entry: Entry): void {
    if (entry.state !== 'queued') return;
    const lane = entry.lane;
    const at = lane.entries.indexOf(entry);
    if (at !== -1) lane.entries.splice(at, 1);
    lane.rows -= entry.rows;
    if (lane.entries.length === 0 && queue.lanes.get(lane.key) === lane) queue.lanes.delete(lane.key);
    queue.queued -= 1;
    this.#depthChanged(queue);
    settle(entry, () => entry.reject(aborted(queue.model, queue.version)));
    this.#pump(queue);
  }

  #depthChanged(queue: VersionQueue): void {
    this.#telemetry.emit({ type: 'queue', model: queue.model, version: queue.version, depth: queue.queued });
  }
}

function aborted(model: string, version: string): RequestAbortedError {
  return new RequestAbortedError(
    `a request for model '${model}' version ${version} was aborted before it ran`,
  );
}

function settle(entry: Entry, action: () => void): void {
  if (entry.state === 'settled') return;
  entry.state = 'settled';
  action();
}

/** The request's batch size: dim 0 shared by every input, or `undefined` when they disagree. */
function rowsOf(feeds: Record<string, Tensor>): number | undefined {
  let rows: number | undefined;
  for (const tensor of Object.values(feeds)) {
    const dim = tensor.shape[0];
    if (dim === undefined || dim < 1 || (rows !== undefined && dim !== rows)) return undefined;
    rows = dim;
  }
  return rows;
}

function laneKeyOf(feeds: Record<string, Tensor>, outputs: readonly string[] | undefined): string {
  const inputs = Object.keys(feeds)
    .sort()
    .map((name) => {
      const tensor = feeds[name] as Tensor;
      return `${name}:${tensor.datatype}:${tensor.shape.slice(1).join('x')}`;
    });
  // NUL cannot appear in a validated name, so the parts cannot run into each other.
  return `${inputs.join('\u0000')}\u0001${outputs === undefined ? '*' : outputs.join('\u0000')}`;
}

/** Takes requests from the head of `lane`, in order, while they fit in `maxRows` (the first always). */
function take(lane: Lane, maxRows: number): Entry[] {
  const batch = [lane.entries.shift() as Entry];
  let rows = (batch[0] as Entry).rows;
  for (
    let next = lane.entries[0];
    next !== undefined && rows + next.rows <= maxRows;
    next = lane.entries[0]
  ) {
    batch.push(lane.entries.shift() as Entry);
    rows += next.rows;
  }
  lane.rows -= rows;
  return batch;
}

/** The feeds of `batch` concatenated along axis 0. */
function stack(batch: readonly Entry[]): Record<string, Tensor> {
  const first = batch[0] as Entry;
  const rows = batch.reduce((n, e) => n + e.rows, 0);
  const feeds: Record<string, Tensor> = Object.create(null);
  for (const [name, spec] of Object.entries(first.feeds)) {
    const shape = [rows, ...spec.shape.slice(1)];
    const parts = batch.map((e) => (e.feeds[name] as Tensor).data);
    feeds[name] = { datatype: spec.datatype, shape, data: concat(spec, parts, elementCount(shape)) };
  }
  return feeds;
}

function concat(spec: Tensor, parts: readonly TensorData[], length: number): TensorData {
  if (spec.datatype === 'BYTES') return (parts as readonly string[][]).flat();
  const out = allocateData(spec.datatype, length);
  let at = 0;
  for (const part of parts) {
    // Each part is the typed array allocateData gives for this datatype (the service validated it).
    (out as Float32Array).set(part as Float32Array, at);
    at += part.length;
  }
  return out;
}

/** Each request's rows of every output, copied so no response holds the whole batch's memory. */
function split(results: Record<string, Tensor>, batch: readonly Entry[]): Record<string, Tensor>[] {
  const rows = batch.reduce((n, e) => n + e.rows, 0);
  const parts = batch.map(() => Object.create(null) as Record<string, Tensor>);
  for (const [name, tensor] of Object.entries(results)) {
    if (tensor.shape[0] !== rows) {
      throw new UnsplittableError(`output '${name}' has dim 0 ${tensor.shape[0]} for a batch of ${rows}`);
    }
    const perRow = elementCount(tensor.shape.slice(1));
    let offset = 0;
    batch.forEach((entry, i) => {
      const data = tensor.data.slice(offset * perRow, (offset + entry.rows) * perRow) as TensorData;
      (parts[i] as Record<string, Tensor>)[name] = {
        datatype: tensor.datatype,
        shape: [entry.rows, ...tensor.shape.slice(1)],
        data,
      };
      offset += entry.rows;
    });
  }
  return parts;
}
