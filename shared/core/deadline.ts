import { InferenceTimeoutError } from './errors';

/**
 * Settles with `work`, or rejects with {@link InferenceTimeoutError} after `ms`. The work itself cannot
 * be cancelled (onnxruntime runs to the end); the caller just stops waiting and answers in time.
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
