/**
 * Converts an ONNX model to the ORT format, which onnxruntime can load straight from a buffer without
 * copying its weights (see `useModelBytesDirectly`). Build tooling: it runs onnxruntime-node.
 */
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';

export interface OrtFormatOptions {
  /**
   * Optimisations baked into the file. `extended` (the default) stays portable across CPUs; `all` adds
   * layout transforms tuned to this machine's instruction set.
   */
  readonly graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
}

/**
 * Writes the ORT-format copy of `onnxBytes` to `outFile` (which must end in `.ort`) and returns its bytes.
 *
 * @example
 * const ortBytes = await convertToOrtFormat(buildLinearModel(), '/tmp/linear.ort');
 */
export async function convertToOrtFormat(
  onnxBytes: Uint8Array,
  outFile: string,
  options: OrtFormatOptions = {},
): Promise<Uint8Array> {
  if (!outFile.endsWith('.ort')) throw new Error(`'outFile' must end in .ort: ${outFile}`);
  const session = await ort.InferenceSession.create(onnxBytes, {
    graphOptimizationLevel: options.graphOptimizationLevel ?? 'extended',
    // The file is written while the session is created; onnxruntime picks the format from this entry.
    optimizedModelFilePath: outFile,
    extra: { session: { save_model_format: 'ORT' } },
    logSeverityLevel: 3,
  });
  await session.release();
  const bytes = await readFile(outFile);
  // Flatbuffer files carry their identifier at offset 4: 'ORTM' for an ORT model.
  if (bytes.subarray(4, 8).toString('latin1') !== 'ORTM') {
    throw new Error(`onnxruntime did not write an ORT-format model to ${outFile}`);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
