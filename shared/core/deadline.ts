import { InferenceTimeoutError } from './errors';
import type { RunEstimate } from './run-time-estimator';

/**
 * Settles with `work`, or rejects with {@link InferenceTimeoutError} after `ms`. The work itself cannot
 * be cancelled (onnxruntime runs to the end); the caller just stops waiting and answers in time. A timer
 * cannot fire while a synchronous onnxruntime run holds the thread: runs are guarded by {@link admitRun}.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new InferenceTimeoutError(`${what} did not finish within ${Math.max(0, Math.round(ms))} ms`)),
      Math.max(0, ms),
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** When a request's answer must be ready (the Lambda door: the invocation's deadline less the margin). */
export interface Deadline {
  /** The time by which the answer must be ready, on the clock of the service that runs the request. */
  readonly at: number;
  /** The whole time the request had when it arrived, before any model load (ms). */
  readonly budgetMs: number;
}

/**
 * Decides, just before a run, whether it may start: throws {@link InferenceTimeoutError} (504) when no time
 * is left, or when the run is expected to take longer than the time left. onnxruntime-node runs on the
 * calling thread, so a run that starts cannot be interrupted and no timer fires until it ends: the only
 * way to answer before the deadline is not to start it.
 *
 * A 'scaled' estimate (extrapolated from smaller shapes, so it may overstate the time many times over)
 * refuses only when it fits in the request's whole budget, i.e. when time went to something else first
 * (a model load): refusing one that exceeds the whole budget would refuse that shape on every invocation,
 * on a guess. It runs instead, and its time becomes known. No estimate (no run of the version yet, warm-up
 * off) admits the run.
 * `run` names the run in the message, e.g. `model 'resnet' version 1 on x[1,3,224,224]`; it is called
 * only to refuse.
 *
 * @example
 * admitRun(runTimes.estimate(model, version, feeds), deadline, clock(), () => `model '${model}'`);
 */
export function admitRun(
  estimate: RunEstimate | undefined,
  deadline: Deadline,
  now: number,
  run: () => string,
): void {
  const left = deadline.at - now;
  if (left <= 0) {
    const why =
      deadline.budgetMs <= 0
        ? 'the request arrived with no time left'
        : `the ${Math.round(deadline.budgetMs)} ms the request had went to reading it and loading the model`;
    throw new InferenceTimeoutError(
      `no time is left before the deadline for a run of ${run()} (${why}); nothing was run`,
    );
  }
  if (estimate === undefined || estimate.ms <= left) return;
  if (estimate.basis === 'scaled' && estimate.ms > deadline.budgetMs) return;
  throw new InferenceTimeoutError(
    `a run of ${run()} is expected to take about ${Math.ceil(estimate.ms)} ms (${BASIS_TEXT[estimate.basis]} ` +
      `${estimate.from}), more than the ${Math.floor(left)} ms left before the deadline; nothing was run ` +
      `(retry with more time left, a smaller batch, or a longer function timeout)`,
  );
}

const BASIS_TEXT: Readonly<Record<RunEstimate['basis'], string>> = {
  observed: 'the longest of its recent runs on',
  larger: 'the longest recent run on the larger',
  scaled: 'scaled by element count from recent runs on',
};
