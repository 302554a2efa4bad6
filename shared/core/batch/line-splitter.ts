/**
 * Splits a byte stream into lines, keeping each line's byte offsets and its 1-based number in the whole
 * input, so a part or a shard can start anywhere and still name lines as the file does. `\n` never occurs
 * inside a multi-byte UTF-8 sequence, so splitting bytes is safe before any decoding.
 */

/** One line of the input. */
export interface Line {
  /** Offset of the line's first byte in the (decoded) input. */
  readonly start: number;
  /** Offset just after the line's `\n`, or the end of the input for a last line without one. */
  readonly end: number;
  /** 1-based line number in the whole input. */
  readonly number: number;
  /**
   * The bytes without the line break (`\n` or `\r\n`) and, on the input's first line, without a UTF-8 BOM.
   * `undefined` when the line is longer than the cap: its bytes were never held.
   */
  readonly bytes: Uint8Array | undefined;
}

/** Where the stream handed to {@link splitLines} begins. */
export type SplitStart =
  /** At the start of line `line`, at byte `offset` (the input's start, or a checkpoint). */
  | { readonly kind: 'line-start'; readonly offset: number; readonly line: number }
  /**
   * One byte before a shard's range starts, at `offset` = start − 1, somewhere in a line: bytes up to and
   * including the first `\n` belong to the line that started earlier (and to the shard that holds it).
   * `newlinesBefore` counts the `\n` bytes in [0, start).
   */
  | { readonly kind: 'align'; readonly offset: number; readonly newlinesBefore: number };

const NEWLINE = 10;
const CARRIAGE_RETURN = 13;

/**
 * The lines of `source`. Memory holds one line at most (a line over `maxLineBytes` is yielded with
 * `bytes: undefined` and skipped without buffering); stopping early (`break`) ends the source's iteration,
 * which destroys a network stream.
 *
 * @example
 * for await (const line of splitLines(body, { kind: 'line-start', offset: 0, line: 1 }, 16 << 20)) {
 *   console.log(line.number, line.bytes && new TextDecoder().decode(line.bytes));
 * }
 */
export async function* splitLines(
  source: AsyncIterable<Uint8Array>,
  start: SplitStart,
  maxLineBytes: number,
): AsyncGenerator<Line> {
  let base = start.offset;
  let aligning = start.kind === 'align';
  let firstByte = true;
  let lineStart = start.offset;
  let lineNumber = start.kind === 'line-start' ? start.line : 0;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let tooLong = false;

  const take = (piece: Uint8Array): void => {
    if (tooLong || piece.byteLength === 0) return;
    if (pendingBytes + piece.byteLength > maxLineBytes) {
      tooLong = true;
      pending = [];
      pendingBytes = 0;
      return;
    }
    pending.push(piece);
    pendingBytes += piece.byteLength;
  };
  const finish = (end: number): Line => {
    const line: Line = {
      start: lineStart,
      end,
      number: lineNumber,
      bytes: tooLong ? undefined : trim(join(pending, pendingBytes), lineStart === 0),
    };
    pending = [];
    pendingBytes = 0;
    tooLong = false;
    lineStart = end;
    lineNumber += 1;
    return line;
  };

  for await (const chunk of source) {
    let pos = 0;
    if (aligning && chunk.byteLength > 0 && start.kind === 'align') {
      if (firstByte && chunk[0] === NEWLINE) {
        // The range starts exactly at a line start: that line is the shard's first.
        lineNumber = start.newlinesBefore + 1;
        pos = 1;
      } else {
        const newline = chunk.indexOf(NEWLINE);
        if (newline === -1) {
          firstByte = false;
          base += chunk.byteLength;
          continue;
        }
        // The newline found is the first one at or after the range start.
        lineNumber = start.newlinesBefore + 2;
        pos = newline + 1;
      }
      aligning = false;
      lineStart = base + pos;
    }
    firstByte = false;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, pos);
      if (newline === -1) {
        take(chunk.subarray(pos));
        break;
      }
      take(chunk.subarray(pos, newline));
      yield finish(base + newline + 1);
      pos = newline + 1;
    }
    base += chunk.byteLength;
  }
  if (!aligning && (pendingBytes > 0 || tooLong || base > lineStart)) yield finish(base);
}

function join(pieces: readonly Uint8Array[], total: number): Uint8Array {
  if (pieces.length === 1) return pieces[0] as Uint8Array;
  const out = new Uint8Array(total);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.byteLength;
  }
  return out;
}

function trim(bytes: Uint8Array, first: boolean): Uint8Array {
  let begin = 0;
  let end = bytes.byteLength;
  if (first && end >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) begin = 3;
  if (end > begin && bytes[end - 1] === CARRIAGE_RETURN) end -= 1;
  return begin === 0 && end === bytes.byteLength ? bytes : bytes.subarray(begin, end);
}
