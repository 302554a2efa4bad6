import { constants as bufferConstants } from 'node:buffer';
import { ModelLoadError } from '../core/errors';
import { assertModelName, assertVersion } from '../core/names';
import { type ArtifactFormat, artifactFile } from '../core/ports';

/**
 * The checks every model store makes before reading a version file: the names again (defence in depth:
 * they become paths and keys) and a size that one buffer can hold. Returns the file's name.
 */
export function checkArtifactRequest(
  model: string,
  version: string,
  format: ArtifactFormat,
  size: number,
  variant: string | undefined,
): string {
  assertModelName(model);
  assertVersion(model, version);
  const file = artifactFile(format, variant);
  if (!Number.isSafeInteger(size) || size <= 0 || size > bufferConstants.MAX_LENGTH) {
    throw new ModelLoadError(
      `model '${model}' version '${version}': ${file} size ${size} cannot be read into memory`,
    );
  }
  return file;
}
