/**
 * The bound on memory held by request bodies: a door takes a request's bytes before it reads them (its
 * Content-Length, or chunk by chunk as a body without one streams in) and gives them back once the
 * request is answered. Past the bound a request is refused with {@link OverloadedError} (503 +
 * Retry-After) instead of being read.
 */
import { OverloadedError } from './errors';

export class InflightBytes {
  readonly #limit: number;
  readonly #retryAfterSeconds: number;
  #held = 0;

  /**
   * @param limit - bytes that may be held at once
   * @param retryAfterSeconds - the `Retry-After` of a refusal (default 1)
   * @example
   * const inflight = new InflightBytes(256 * 1024 * 1024);
   * inflight.take(contentLength); // throws OverloadedError past the bound
   * // ... read the body, answer ...
   * inflight.release(contentLength);
   */
  constructor(limit: number, retryAfterSeconds = 1) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`'limit' must be a positive integer`);
    this.#limit = limit;
    this.#retryAfterSeconds = retryAfterSeconds;
  }

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  get limit(): number {
    return this.#limit;
  }

  /** Holds `bytes` more, or throws {@link OverloadedError} (holding nothing) when that would pass the bound. */
  take(bytes: number): void {
    if (this.#held + bytes > this.#limit) {
      throw new OverloadedError(
        `the server holds ${mib(this.#held)} of request bodies, and ${mib(bytes)} more would pass its limit of ${mib(this.#limit)}; retry later`,
        this.#retryAfterSeconds,
      );
    }
    this.#held += bytes;
  }

  /** Gives back bytes taken before. */
  release(bytes: number): void {
    this.#held = Math.max(0, this.#held - bytes);
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
