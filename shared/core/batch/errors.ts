/**
 * Errors of the batch door, named by meaning. Record-level problems reuse the serving errors
 * ({@link InvalidInputError} and friends): a record is a request that arrived in a file.
 */
import { ModelNotFoundError, ServingError } from '../errors';

/** An invocation payload that is neither an S3 event, a continuation nor a Step Functions input. */
export class InvalidBatchEventError extends ServingError {
  override readonly code = 'invalid_batch_event';
  override readonly status = 400;
}

/**
 * The input object was replaced (new ETag) while a job for an earlier version of it ran. The job stops
 * without a manifest: the new version has an event of its own.
 */
export class InputChangedError extends ServingError {
  override readonly code = 'input_changed';
  override readonly status = 409;
}

/** An input the job cannot score at all (e.g. CSV for a model with two inputs): the manifest says why. */
export class UnsupportedInputError extends ServingError {
  override readonly code = 'unsupported_input';
  override readonly status = 422;
}

/**
 * The S3 event, HEAD and GET disagree about the input (its size, ETag or version): one of them is wrong,
 * so nothing may be scored from it. Retryable: the invocation fails and runs again.
 */
export class InputMismatchError extends ServingError {
  override readonly code = 'input_mismatch';
  override readonly status = 503;
}

/**
 * The input's bytes could not all be read: its body kept breaking or ending before the object's size, more
 * times than a read resumes. Retryable: the invocation fails and runs again from its checkpoint.
 */
export class InputReadError extends ServingError {
  override readonly code = 'input_read_failed';
  override readonly status = 503;
}

/** Saved job state (a checkpoint, a plan, a shard) is missing, malformed or from another job. */
export class BatchStateError extends ServingError {
  override readonly code: string = 'batch_state_invalid';
  override readonly status = 500;
}

/**
 * Saved job state that does not parse: not JSON, not our format, or incomplete. Terminal: the same object
 * parses no better on a retry, so retrying would only end in the failure queue. `key` names the object
 * (when known), deleted with the failed manifest so that running the job again starts afresh.
 */
export class UnreadableBatchStateError extends BatchStateError {
  override readonly code = 'batch_state_unreadable';
  readonly key: string | undefined;
  constructor(message: string, options?: ErrorOptions & { readonly key?: string }) {
    super(message, options);
    this.key = options?.key;
  }
}

/** A job that needed more continuations than allowed: a guard against a chain that never ends. */
export class TooManyContinuationsError extends ServingError {
  override readonly code = 'too_many_continuations';
  override readonly status = 500;
}

/**
 * A Step Functions execution of the batch state machine already has the name derived from an object
 * version, with another input: the name no longer says which object it scores.
 */
export class ExecutionConflictError extends ServingError {
  override readonly code = 'execution_conflict';
  override readonly status = 409;
}

/**
 * Whether `error` ends a job for good, with a `failed` manifest: a model that does not exist (decided after
 * the runner's re-reads), an input it cannot score (bad format, inputs it cannot build), a runaway
 * continuation chain, saved state (a checkpoint, a plan) that does not parse. Every other error is retryable: the invocation fails, writes no manifest, and Lambda's
 * asynchronous retry or the state machine's `Retry` runs it again.
 */
export function isTerminalJobError(error: unknown): error is ServingError {
  return (
    error instanceof ModelNotFoundError ||
    error instanceof UnsupportedInputError ||
    error instanceof TooManyContinuationsError ||
    error instanceof UnreadableBatchStateError
  );
}
