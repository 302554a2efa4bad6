/** Publishes test models to a loopback S3 repository in the serving layout, with matching config.json. */
import { createHash } from 'node:crypto';

export interface VersionFiles {
  readonly onnx: Uint8Array;
  readonly ort?: Uint8Array;
}

type Put = (bucket: string, key: string, bytes: Uint8Array) => Promise<unknown>;

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Writes `<prefix>/<model>/<version>/model.onnx` (and `.ort`) and a config.json recording their hashes. */
export async function publishModel(
  put: Put,
  bucket: string,
  prefix: string,
  model: string,
  versions: Readonly<Record<string, VersionFiles>>,
  config: Record<string, unknown> = {},
): Promise<void> {
  const base = prefix === '' ? model : `${prefix}/${model}`;
  const recorded: Record<string, unknown> = {};
  for (const [version, files] of Object.entries(versions)) {
    await put(bucket, `${base}/${version}/model.onnx`, files.onnx);
    const entry: Record<string, unknown> = { sha256: sha256(files.onnx), size: files.onnx.byteLength };
    if (files.ort !== undefined) {
      await put(bucket, `${base}/${version}/model.ort`, files.ort);
      entry.ort = { sha256: sha256(files.ort), size: files.ort.byteLength };
    }
    recorded[version] = entry;
  }
  const text = JSON.stringify({ name: model, versions: recorded, ...config }, null, 2);
  await put(bucket, `${base}/config.json`, Buffer.from(text));
}
