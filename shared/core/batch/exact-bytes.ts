/**
 * Holds a stream of the input's bytes to the size the job pinned, whatever store delivers them: a job must
 * never take a body that ended early for the whole input (issue 10: a GET cut at half with a Content-Length
 * that agreed was committed as a success with half the records).
 */
import { InputMismatchError, InputReadError } from './errors';

/**
 * The bytes of `source`, which must run from offset `from` to exactly `end`. A short source throws where it
 * ends, before a consumer such as `splitLines` sees the end: a line cut by a short read is never parsed.
 *
 * @param what - names the input in messages, e.g. `the input 'batch/in/m/a.jsonl'`
 * @throws {@link InputReadError} when the source ends before `end`
 * @throws {@link InputMismatchError} when it runs past `end`
 * @example
 * for await (const chunk of exactBytes(store.read(ref, { start: 0 }), 0, job.input.size, `the input '${key}'`)) { ... }
 */
export async function* exactBytes(
  source: AsyncIterable<Uint8Array>,
  from: number,
  end: number,
  what: string,
): AsyncGenerator<Uint8Array> {
  let at = from;
  for await (const chunk of source) {
    if (at + chunk.byteLength > end) {
      throw new InputMismatchError(`the sizes of ${what} disagree: its bytes run past the ${end} expected`);
    }
    at += chunk.byteLength;
    yield chunk;
  }
  if (at !== end) {
    throw new InputReadError(`${what} ended at byte ${at} of ${end}: nothing is scored from a partial read`);
  }
}
