/**
 * The in-memory tier of the warm cache: live sessions keyed by model, version and content hash, bounded
 * by an estimate of their bytes, least-recently-used evicted.
 *
 * Three rules shape it. Loads are single-flight: the cache stores the *promise* of a load, so concurrent
 * first requests share one download and one session creation. A failed load is dropped, and remembered
 * with a backoff (unless its file is missing): until it ends, requests for the same model version and
 * artifact under the same config.json (ETag) are answered with the failure's reason and `Retry-After`
 * ({@link ModelLoadBackoffError}) instead of costing a download each; the first request after it, or
 * the first under a changed config.json, tries again. A session is never released while a run holds it:
 * callers take a lease, and an entry over budget is evicted only once its last lease is returned.
 */
import { ModelLoadBackoffError, ModelNotFoundError } from './errors';
import type { Clock, LoadedModel, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';

/**
 * How long a failed load is remembered: `initialMs` after the first failure, doubling with each failure
 * in a row, at most `maxMs`. A successful load forgets the failures.
 */
export interface LoadBackoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_LOAD_BACKOFF: LoadBackoff = { initialMs: 1000, maxMs: 60_000 };

/** Failed loads remembered at once; the oldest is forgotten first. */
const MAX_FAILURES = 1024;

interface Failure {
  readonly error: Error;
  readonly count: number;
  readonly until: number;
  /** The config.json (ETag) the load failed under. */
  readonly config: string | undefined;
}

export interface CacheKey {
  readonly model: string;
  readonly version: string;
  readonly sha256: string;
  /**
   * The ETag of the config.json the load is made under. A failure remembered under another one is
   * forgotten: the fix to config.json (e.g. a wrong `emptyDims`) takes effect at once, not after the backoff.
   */
  readonly config?: string;
}

/** A session held for the duration of one use; `release` must be called exactly once. */
export interface Lease {
  readonly model: LoadedModel;
  release(): void;
  /**
   * Drops a session found broken (e.g. its worker died) from the cache, so the next request loads it
   * afresh; it is released once its last lease is returned.
   */
  discard(): void;
}

interface Entry {
  readonly key: CacheKey;
  readonly id: string;
  readonly bytes: number;
  readonly promise: Promise<LoadedModel>;
  model: LoadedModel | undefined;
  leases: number;
  discarded: boolean;
}

export interface ModelCacheOptions {
  /** Budget for the estimated bytes of loaded sessions. A single model over budget still loads, alone. */
  readonly maxBytes: number;
  readonly telemetry?: Telemetry;
  /** Default {@link DEFAULT_LOAD_BACKOFF}. */
  readonly loadBackoff?: LoadBackoff;
  /** Milliseconds, for the backoff; default `performance.now`. */
  readonly clock?: Clock;
}

export class ModelCache {
  readonly #maxBytes: number;
  readonly #telemetry: Telemetry;
  /** Map order is recency order: a use moves the entry to the end. */
  readonly #entries = new Map<string, Entry>();
  /** Failed loads by entry id, oldest first. */
  readonly #failures = new Map<string, Failure>();
  readonly #backoff: LoadBackoff;
  readonly #clock: Clock;
  #loadedBytes = 0;

  constructor(options: ModelCacheOptions) {
    this.#maxBytes = options.maxBytes;
    this.#telemetry = options.telemetry ?? NO_TELEMETRY;
    this.#backoff = options.loadBackoff ?? DEFAULT_LOAD_BACKOFF;
    this.#clock = options.clock ?? (() => performance.now());
  }

  /**
   * A lease on the session for `key`, loading it with `load` unless it is loaded or loading already.
   * `bytes` is the estimated resident size of the session, used for the budget.
   */
  async acquire(key: CacheKey, bytes: number, load: () => Promise<LoadedModel>): Promise<Lease> {
    const id = `${key.model}@${key.version}#${key.sha256}`;
    let entry = this.#entries.get(id);
    if (entry !== undefined) {
      this.#entries.delete(id);
      this.#entries.set(id, entry);
    } else {
      let failure = this.#failures.get(id);
      if (failure !== undefined && failure.config !== key.config) {
        this.#failures.delete(id);
        failure = undefined;
      }
      const waitMs = failure === undefined ? 0 : failure.until - this.#clock();
      if (failure !== undefined && waitMs > 0) {
        throw new ModelLoadBackoffError(failure.error, waitMs);
      }
      entry = this.#startLoad(key, id, bytes, load);
    }
    this.#telemetry.emit({
      type: 'cache',
      model: key.model,
      version: key.version,
      hit: entry.model !== undefined,
    });
    entry.leases += 1;
    let model: LoadedModel;
    try {
      model = await entry.promise;
    } catch (error) {
      entry.leases -= 1;
      throw error;
    }
    return this.#lease(entry, model);
  }

  /** Whether a session for the key is loaded (not merely loading). */
  isLoaded(key: CacheKey): boolean {
    for (const entry of this.#entries.values()) {
      if (sameKey(entry.key, key) && entry.model !== undefined) return true;
    }
    return false;
  }

  /** Estimated bytes of the loaded sessions. */
  get loadedBytes(): number {
    return this.#loadedBytes;
  }

  /** Keys of the loaded sessions, least recently used first. */
  loadedKeys(): CacheKey[] {
    return [...this.#entries.values()].filter((e) => e.model !== undefined).map((e) => e.key);
  }

  /** Releases every idle session (graceful shutdown). Sessions still leased are released on return. */
  async clear(): Promise<void> {
    const releases: Promise<void>[] = [];
    for (const entry of [...this.#entries.values()]) {
      if (entry.model !== undefined && entry.leases === 0) releases.push(this.#evict(entry));
    }
    await Promise.all(releases);
  }

  #startLoad(key: CacheKey, id: string, bytes: number, load: () => Promise<LoadedModel>): Entry {
    const entry: Entry = {
      key,
      id,
      bytes,
      model: undefined,
      leases: 0,
      discarded: false,
      promise: load().then(
        (model) => {
          this.#failures.delete(id);
          entry.model = model;
          this.#loadedBytes += bytes;
          this.#enforceBudget(entry);
          return model;
        },
        (error: unknown) => {
          // The failure is not cached, only remembered: the first request after its backoff loads afresh.
          if (this.#entries.get(id) === entry) this.#entries.delete(id);
          // A missing file costs no download to ask for again, and may appear any moment (an upload).
          if (!(error instanceof ModelNotFoundError)) this.#remember(id, key.config, error);
          throw error;
        },
      ),
    };
    this.#entries.set(id, entry);
    return entry;
  }

  #remember(id: string, config: string | undefined, error: unknown): void {
    const previous = this.#failures.get(id);
    // Failures in a row under the same config.json double the backoff; a new one starts it afresh.
    const count = (previous !== undefined && previous.config === config ? previous.count : 0) + 1;
    const { initialMs, maxMs } = this.#backoff;
    const delay = Math.min(maxMs, initialMs * 2 ** Math.min(count - 1, 30));
    this.#failures.delete(id);
    this.#failures.set(id, {
      error: error instanceof Error ? error : new Error(String(error)),
      count,
      until: this.#clock() + delay,
      config,
    });
    if (this.#failures.size > MAX_FAILURES) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
  }

  #lease(entry: Entry, model: LoadedModel): Lease {
    let returned = false;
    return {
      model,
      release: () => {
        if (returned) return;
        returned = true;
        entry.leases -= 1;
        if (entry.leases > 0) return;
        if (entry.discarded) void releaseQuietly(model);
        else this.#enforceBudget(undefined);
      },
      discard: () => {
        if (entry.discarded || this.#entries.get(entry.id) !== entry) return;
        entry.discarded = true;
        this.#remove(entry);
      },
    };
  }

  /**
   * Evicts idle sessions, least recently used first, until the budget holds. The most recently used
   * session always stays, so one model larger than the budget is kept rather than reloaded per request.
   */
  #enforceBudget(keep: Entry | undefined): void {
    if (this.#loadedBytes <= this.#maxBytes) return;
    const entries = [...this.#entries.values()];
    const newest = entries.findLast((e) => e.model !== undefined);
    for (const entry of entries) {
      if (this.#loadedBytes <= this.#maxBytes) return;
      if (entry === keep || entry === newest || entry.model === undefined || entry.leases > 0) continue;
      void this.#evict(entry);
    }
  }

  async #evict(entry: Entry): Promise<void> {
    const model = entry.model;
    if (model === undefined || this.#entries.get(entry.id) !== entry) return;
    this.#remove(entry);
    entry.model = undefined;
    await releaseQuietly(model);
  }

  /** Takes a loaded entry out of the cache and its budget. */
  #remove(entry: Entry): void {
    this.#entries.delete(entry.id);
    this.#loadedBytes -= entry.bytes;
    this.#telemetry.emit({
      type: 'model-evicted',
      model: entry.key.model,
      version: entry.key.version,
      bytes: entry.bytes,
    });
  }
}

function sameKey(a: CacheKey, b: CacheKey): boolean {
  return a.model === b.model && a.version === b.version && a.sha256 === b.sha256;
}

/** A session that fails to release is gone from the cache either way; nothing else can be done. */
async function releaseQuietly(model: LoadedModel): Promise<void> {
  try {
    await model.release();
  } catch {
    // Nothing more to do: the session is out of the cache already.
  }
}
