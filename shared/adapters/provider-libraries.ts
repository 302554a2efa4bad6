/**
 * Whether a shared-library execution provider (CUDA, TensorRT) can be installed at all, asked of the file
 * system before onnxruntime is. onnxruntime loads these providers from libraries beside its own
 * (`libonnxruntime_providers_shared.so` and `libonnxruntime_providers_<name>.so`, written by
 * `ONNXRUNTIME_NODE_INSTALL=cuda12`); on a CPU-only install they are absent, and asking onnxruntime prints
 * a red error line about the missing library on stderr from its process-wide logger. That logger's level
 * is fixed by the process's first session (`env.logLevel`, read once) and a session's `logSeverityLevel`
 * does not reach it, so the probe cannot be silenced for itself alone: it is not made when the answer is
 * already known.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The libraries each shared-library provider needs on Linux, beside `libonnxruntime.so`. */
const LINUX_PROVIDER_LIBRARIES: Readonly<Record<string, readonly string[]>> = {
  cuda: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'],
  tensorrt: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'],
};

/**
 * The folder of onnxruntime-node's native binding and `libonnxruntime` for this platform, or `undefined`
 * when the package cannot be resolved from here.
 */
export function ortBinaryFolder(): string | undefined {
  try {
    // `dist/index.js`; the binaries sit in `bin/napi-v6/<platform>/<arch>` (the layer keeps that layout).
    const main = require.resolve('onnxruntime-node');
    return join(dirname(main), '..', 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/**
 * The first library `provider` needs that is not in `folder`, or `undefined` when none is missing or the
 * provider is not one loaded from a shared library here (only onnxruntime can tell then).
 *
 * @example
 * missingProviderLibrary('cuda', ortBinaryFolder()); // 'libonnxruntime_providers_shared.so' on a CPU install
 */
export function missingProviderLibrary(
  provider: string,
  folder: string | undefined,
  platform: NodeJS.Platform = process.platform,
): string | undefined {
  if (folder === undefined || platform !== 'linux') return undefined;
  const libraries = Object.hasOwn(LINUX_PROVIDER_LIBRARIES, provider)
    ? LINUX_PROVIDER_LIBRARIES[provider]
    : undefined;
  return libraries?.find((library) => !existsSync(join(folder, library)));
}
