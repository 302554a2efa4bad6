/**
 * onnxruntime-node, loaded on first use instead of at import. Its require (the native addon and
 * onnxruntime-common) takes about 12 ms of a cold start here, and nothing before the model's bytes have
 * arrived needs it: the loader asks for it while the download runs ({@link prepareOnnxruntime}), so the
 * two overlap instead of adding up (issue 11, "modules not needed before the first answer load after it").
 */
import type * as Ort from 'onnxruntime-node';

let loaded: typeof Ort | undefined;
let scheduled: Promise<void> | undefined;

/** The onnxruntime-node module, required now if nothing has yet. */
export function onnxruntime(): typeof Ort {
  // A plain require, kept as one by esbuild: the module is external (a native addon in a Lambda layer,
  // found through NODE_PATH, which import() would ignore).
  loaded ??= require('onnxruntime-node') as typeof Ort;
  return loaded;
}

/**
 * Requires onnxruntime-node on the next turn of the event loop, once: a caller that has just started a
 * download lets its requests go out first, and the require then runs while the bytes are on the way.
 * A failure to load is not reported here; the session creation that needs the module meets it.
 */
export function prepareOnnxruntime(): Promise<void> {
  scheduled ??= new Promise((resolve) => {
    setImmediate(() => {
      try {
        onnxruntime();
      } catch {
        // Reported by the first session creation, with the model it was for.
      }
      resolve();
    });
  });
  return scheduled;
}
