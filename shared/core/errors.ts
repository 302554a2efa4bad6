/**
 * Errors named by meaning. Every error the core raises on purpose is a {@link ServingError}: it carries a
 * machine-readable `code`, the HTTP `status` a door answers with, and `expose`, which says whether its
 * message may reach a client. Anything else that escapes becomes a generic 500 and is logged whole.
 */
export class ServingError extends Error {
  readonly code: string = 'internal_error';
  readonly status: number = 500;
  /** Headers a door adds to the response (e.g. `Retry-After`). */
  readonly headers: Readonly<Record<string, string>> = {};

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }

  /** Client errors are safe to show; server errors are replaced by a generic message. */
  get expose(): boolean {
    return this.status < 500;
  }
}

/** A model or version that the repository does not hold, or a name the repository refuses. */
export class ModelNotFoundError extends ServingError {
  override readonly code = 'model_not_found';
  override readonly status = 404;
}

/** A request that does not match the protocol or the model's inputs. The message names the field. */
export class InvalidInputError extends ServingError {
  override readonly code = 'invalid_input';
  override readonly status = 400;
}

/**
 * The engine refused a request's tensors at run time, after our validation passed (e.g. an index out of
 * an embedding's range). The message is the adapter's, free of native detail; the vendor's text is the
 * `cause`, for logs only. Its code stays `invalid_input`: to the client it is a bad input like any other.
 */
export class InputRejectedError extends InvalidInputError {}

/** A body, tensor or batch larger than the configured caps. */
export class PayloadTooLargeError extends ServingError {
  override readonly code = 'payload_too_large';
  override readonly status = 413;
}

/**
 * An answer larger than its door can deliver (a Lambda response over the synchronous payload limit). The
 * message says the size, the limit and how to ask for less.
 */
export class ResponseTooLargeError extends ServingError {
  override readonly code = 'response_too_large';
  override readonly status = 413;
}

/** A route that does not exist. */
export class RouteNotFoundError extends ServingError {
  override readonly code = 'route_not_found';
  override readonly status = 404;
}

/** A known route called with a method it does not answer. */
export class MethodNotAllowedError extends ServingError {
  override readonly code = 'method_not_allowed';
  override readonly status = 405;
}

/** A body in a content type the route does not take. */
export class UnsupportedMediaTypeError extends ServingError {
  override readonly code = 'unsupported_media_type';
  override readonly status = 415;
}

/** The model could not be fetched or turned into a session; the next request tries again. */
export class ModelLoadError extends ServingError {
  override readonly code: string = 'model_load_failed';
  override readonly status = 503;
  override get expose(): boolean {
    // The model name and the reason help the caller; the message never holds credentials or paths.
    return true;
  }
}

/** The fetched bytes do not hash to the sha256 recorded in config.json. Nothing of them is cached. */
export class IntegrityError extends ModelLoadError {
  override readonly code = 'integrity_check_failed';
}

/**
 * A load of this model version and artifact failed a moment ago and is not tried again until its backoff
 * ends: the answer is the last failure's reason, with `Retry-After`. `code` is the last failure's.
 */
export class ModelLoadBackoffError extends ModelLoadError {
  override readonly code: string;
  override readonly headers: Readonly<Record<string, string>>;
  /** Milliseconds until the next load may be tried. */
  readonly retryInMs: number;
  constructor(last: Error, retryInMs: number) {
    const seconds = Math.max(1, Math.ceil(retryInMs / 1000));
    super(`${last.message} (not tried again for ${seconds} s)`, { cause: last });
    this.code = last instanceof ServingError ? last.code : 'model_load_failed';
    this.retryInMs = retryInMs;
    this.headers = { 'retry-after': String(seconds) };
  }
}

/** The model's repository entry (config.json) is malformed. */
export class ModelConfigError extends ModelLoadError {
  override readonly code = 'model_config_invalid';
}

/** The answer would come after the deadline of the invocation or request. */
export class InferenceTimeoutError extends ServingError {
  override readonly code = 'timeout';
  override readonly status = 504;
  override get expose(): boolean {
    return true;
  }
}

/** Too much work queued: say no early, with a hint when to come back. */
export class OverloadedError extends ServingError {
  override readonly code = 'overloaded';
  override readonly status = 503;
  override readonly headers: Readonly<Record<string, string>>;
  constructor(message: string, retryAfterSeconds: number) {
    super(message);
    this.headers = { 'retry-after': String(retryAfterSeconds) };
  }
  override get expose(): boolean {
    return true;
  }
}

/**
 * The client went away before its answer: mid-upload, or while its request waited in a queue (or its
 * deadline passed there); nothing of it ran.
 */
export class RequestAbortedError extends ServingError {
  override readonly code = 'request_aborted';
  // nginx's "client closed request": no client reads it, but logs and metrics tell it apart.
  override readonly status = 499;
}

/** Bad settings found at start-up: every bad key is reported at once. */
export class ConfigError extends ServingError {
  override readonly code = 'config_invalid';
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}
