import { ModelNotFoundError } from './errors';

/**
 * Model names and versions become object keys and file paths, so they are held to a conservative set:
 * letters, digits, `_`, `-` and `.` (never `..`, never a leading dot, no `/`), at most 128 characters.
 * Versions are positive integers, as in Triton's repository, so "highest" is well defined.
 */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VERSION = /^[1-9][0-9]{0,17}$/;

export function isValidModelName(name: string): boolean {
  return MODEL_NAME.test(name) && !name.includes('..');
}

export function isValidVersion(version: string): boolean {
  return VERSION.test(version);
}

/** Throws a 404 naming the model when the name could never exist in a repository. */
export function assertModelName(name: string): void {
  if (!isValidModelName(name)) {
    throw new ModelNotFoundError(
      `model '${printable(name)}' is not a valid model name (letters, digits, '_', '-', '.'; at most 128)`,
    );
  }
}

export function assertVersion(model: string, version: string): void {
  if (!isValidVersion(version)) {
    throw new ModelNotFoundError(
      `model '${model}' has no version '${printable(version)}' (versions are positive integers)`,
    );
  }
}

/** Keeps hostile names short and on one line when they are echoed in a message. */
export function printable(value: string): string {
  const cleaned = value.replace(/[^\x20-\x7e]/g, '?');
  return cleaned.length > 64 ? `${cleaned.slice(0, 61)}...` : cleaned;
}

/** Numeric order of versions ("10" after "9"). */
export function compareVersions(a: string, b: string): number {
  return a.length === b.length ? (a < b ? -1 : a > b ? 1 : 0) : a.length - b.length;
}
