/**
 * What the node:http door decides before it reads a request's body, and how it reports the requests it
 * answers without the app: an inference request whose model's queue is full is refused at once (reading
 * and decoding a body only to refuse it would cost the very CPU and memory the bound protects), and such
 * refusals, like clients gone mid-upload, are counted as the app counts its answers.
 */
import { ServingError } from './errors';
import { type HttpRequest, inferenceTarget } from './http-app';
import type { Clock, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';

export interface RequestGate {
  /** Throws a {@link ServingError} (e.g. `OverloadedError`) to refuse `request` before its body is read. */
  admit(request: HttpRequest): void;
  /** Reports an inference request the door answered itself with `error`, `started` at a clock reading. */
  answered(request: HttpRequest, error: unknown, started: number): void;
  readonly clock: Clock;
}

export interface RequestGateOptions {
  /** A function pinned to one model: `/predict` means that model. */
  readonly pinnedModel?: string | undefined;
  /** The refusal a request for `model` (and `version`) would meet now, e.g. the batcher's `refusal`. */
  readonly refusal?: (model: string, version: string | undefined) => ServingError | undefined;
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
}

/**
 * @example
 * const gate = createRequestGate({ pinnedModel, telemetry, refusal: (m, v) => batcher.refusal(m, v) });
 * gate.admit(request); // throws OverloadedError when the model's queue is full
 */
export function createRequestGate(options: RequestGateOptions): RequestGate {
  const telemetry = options.telemetry ?? NO_TELEMETRY;
  const clock = options.clock ?? (() => performance.now());
  return {
    clock,
    admit(request) {
      const target = inferenceTarget(request, options.pinnedModel);
      if (target === undefined) return;
      const refusal = options.refusal?.(target.model, target.version);
      if (refusal !== undefined) throw refusal;
    },
    answered(request, error, started) {
      const target = inferenceTarget(request, options.pinnedModel);
      if (target === undefined) return;
      const known = error instanceof ServingError;
      telemetry.emit({
        type: 'request',
        model: target.model,
        outcome: known ? error.code : 'internal_error',
        status: known ? error.status : 500,
        ms: clock() - started,
      });
    },
  };
}
