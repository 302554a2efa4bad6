/**
 * Unknown names in config.json: a misspelt key (`warmUp` for `warmup`) or an input the model does not
 * have would otherwise be ignored without a word, and the setting it meant would silently not apply.
 * Each is reported with the nearest known name, so the fix is in the message.
 */
import { printable } from './names';

/**
 * The known name nearest to `name` (case-insensitive edit distance), when it is near enough to be the
 * likely meaning: at most a third of the longer name's length, and at least 1 edit (or a case change).
 *
 * @example
 * nearestName('warmUp', ['warmup', 'preferOrtFormat']); // 'warmup'
 * nearestName('colour', ['warmup']); // undefined
 */
export function nearestName(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  const lower = name.toLowerCase();
  for (const candidate of known) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  if (best === undefined) return undefined;
  const allowed = Math.max(1, Math.floor(Math.max(name.length, best.length) / 3));
  return bestDistance <= allowed ? best : undefined;
}

/** `did you mean 'x'?` when a known name is near, else the list of known names. */
export function suggestion(name: string, known: readonly string[]): string {
  const near = nearestName(name, known);
  return near === undefined ? `known: ${known.join(', ')}` : `did you mean '${near}'?`;
}

/**
 * Pushes one problem onto `problems` per key of `raw` that is not in `known`, e.g.
 * `'session' has an unknown key 'warmUp' (did you mean 'warmup'?)`.
 */
export function reportUnknownKeys(
  raw: Readonly<Record<string, unknown>>,
  known: readonly string[],
  where: string,
  problems: string[],
): void {
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) {
      problems.push(`'${where}' has an unknown key '${printable(key)}' (${suggestion(key, known)})`);
    }
  }
}

/** Levenshtein distance (insertions, deletions, substitutions), two rows. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(
        (previous[j] as number) + 1,
        (current[j - 1] as number) + 1,
        (previous[j - 1] as number) + cost,
      );
    }
    previous = current;
  }
  return previous[b.length] as number;
}
