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
  /**
   * Throws a {@link ServingError} (e.g. `OverloadedError`) to refuse `request` before its body is read.
   * Otherwise returns the function to call once its body has been read (or the reading failed): until
   * then it counts against its model's queue bound, so a burst of arrivals is refused on its headers
   * rather than read in full and refused after.
   */
  admit(request: HttpRequest): () => void;
  /** Reports an inference request the door answered itself with `error`, `started` at a clock reading. */
  answered(request: HttpRequest, error: unknown, started: number): void;
  readonly clock: Clock;
}

export interface RequestGateOptions {
  /** A function pinned to one model: `/predict` means that model. */
  readonly pinnedModel?: string | undefined;
  /**
   * The refusal a request for `model` (and `version`) would meet now, with `arriving` requests for the
   * model admitted and still being read: e.g. the batcher's `refusal`.
   */
  readonly refusal?: (
    model: string,
    version: string | undefined,
    arriving: number,
  ) => ServingError | undefined;
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
}

/**
 * @example
 * const gate = createRequestGate({ pinnedModel, telemetry, refusal: (m, v, n) => batcher.refusal(m, v, n) });
 * const bodyRead = gate.admit(request); // throws OverloadedError when the model's queue is full
 * try { body = await readBody(); } finally { bodyRead(); }
 */
export function createRequestGate(options: RequestGateOptions): RequestGate {
  const telemetry = options.telemetry ?? NO_TELEMETRY;
  const clock = options.clock ?? (() => performance.now());
  const arriving = new Map<string, number>();
  const NOTHING = () => {};
  return {
    clock,
    admit(request) {
      const target = inferenceTarget(request, options.pinnedModel);
      if (target === undefined) return NOTHING;
      const { model } = target;
      const refusal = options.refusal?.(model, target.version, arriving.get(model) ?? 0);
      if (refusal !== undefined) throw refusal;
      arriving.set(model, (arriving.get(model) ?? 0) + 1);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        const left = (arriving.get(model) ?? 1) - 1;
        if (left > 0) arriving.set(model, left);
        else arriving.delete(model);
      };
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
