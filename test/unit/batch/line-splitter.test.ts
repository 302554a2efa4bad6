import { type Line, type SplitStart, splitLines } from '../../../shared/core/batch/line-splitter';

const utf8 = new TextEncoder();
const text = (line: Line) => (line.bytes === undefined ? undefined : new TextDecoder().decode(line.bytes));

async function* chunked(bytes: Uint8Array, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  let i = 0;
  while (at < bytes.byteLength) {
    const size = sizes[i++ % sizes.length] as number;
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

async function collect(
  input: string | Uint8Array,
  start: SplitStart = { kind: 'line-start', offset: 0, line: 1 },
  sizes: readonly number[] = [3],
  max = 1024,
): Promise<Line[]> {
  const bytes = typeof input === 'string' ? utf8.encode(input) : input;
  const from = start.offset;
  const lines: Line[] = [];
  for await (const line of splitLines(chunked(bytes.subarray(from), sizes), start, max)) lines.push(line);
  return lines;
}

/** Lines that start in [start, end): the shard rule, computed the obvious way. */
function linesStartingIn(bytes: Uint8Array, start: number, end: number): { start: number; number: number }[] {
  const out: { start: number; number: number }[] = [];
  let lineStart = 0;
  let number = 1;
  for (let i = 0; i <= bytes.byteLength; i++) {
    if (i === bytes.byteLength || bytes[i] === 10) {
      if (lineStart < bytes.byteLength && lineStart >= start && lineStart < end)
        out.push({ start: lineStart, number });
      lineStart = i + 1;
      number += 1;
    }
  }
  return out;
}

describe('splitLines', () => {
  it('yields every line with its offsets and number, across chunk boundaries', async () => {
    const lines = await collect('ab\ncdef\n\nghi', undefined, [2]);
    expect(lines.map((l) => [l.start, l.end, l.number, text(l)])).toEqual([
      [0, 3, 1, 'ab'],
      [3, 8, 2, 'cdef'],
      [8, 9, 3, ''],
      [9, 12, 4, 'ghi'],
    ]);
  });

  it('drops CRLF line ends and a UTF-8 byte-order mark on the first line only', async () => {
    const lines = await collect('\ufeffid,x\r\n1,\ufeff2\r\n', undefined, [1]);
    expect(lines.map(text)).toEqual(['id,x', '1,\ufeff2']);
    // The mark's three bytes still count in the offsets.
    expect(lines[1]?.start).toBe(9);
  });

  it('starts mid-input at a checkpoint with the numbers the file gives', async () => {
    const input = 'a\nbb\nccc\n';
    const lines = await collect(input, { kind: 'line-start', offset: 5, line: 3 });
    expect(lines).toEqual([{ start: 5, end: 9, number: 3, bytes: utf8.encode('ccc') }]);
  });

  it('skips a line over the cap without holding it, and goes on', async () => {
    const long = 'y'.repeat(50);
    const lines = await collect(`ok\n${long}\nnext`, undefined, [7], 10);
    expect(lines.map((l) => [l.number, text(l)])).toEqual([
      [1, 'ok'],
      [2, undefined],
      [3, 'next'],
    ]);
    expect(lines[1]).toMatchObject({ start: 3, end: 54 });
  });

  it('reads a multi-byte character split across chunks as one line', async () => {
    const lines = await collect('é€😀\nz', undefined, [1]);
    expect(lines.map(text)).toEqual(['é€😀', 'z']);
  });

  describe('align (a shard that starts at any byte)', () => {
    const input = 'l1\nline2\nl3\n';
    const bytes = utf8.encode(input);

    it('takes the line that starts exactly at the range start', async () => {
      // Byte 2 is the newline of line 1: the range [3, ...) starts at line 2.
      const lines = await collect(bytes, { kind: 'align', offset: 2, newlinesBefore: 1 });
      expect(lines.map((l) => [l.number, l.start, text(l)])).toEqual([
        [2, 3, 'line2'],
        [3, 9, 'l3'],
      ]);
    });

    it('leaves a line that started before the range to the shard before', async () => {
      const lines = await collect(bytes, { kind: 'align', offset: 3, newlinesBefore: 1 });
      expect(lines.map((l) => [l.number, l.start])).toEqual([[3, 9]]);
    });

    it('assigns every line to exactly one shard, for any boundaries and chunking', async () => {
      let seed = 7;
      const random = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      for (let round = 0; round < 40; round++) {
        const parts: string[] = [];
        const count = 1 + Math.floor(random() * 30);
        for (let i = 0; i < count; i++) parts.push('x'.repeat(Math.floor(random() * 6)));
        const body = utf8.encode(parts.join('\n') + (random() < 0.5 ? '\n' : ''));
        const cuts = [...new Set(Array.from({ length: 4 }, () => Math.floor(random() * body.byteLength)))]
          .filter((c) => c > 0)
          .sort((a, b) => a - b);
        const bounds = [0, ...cuts, Number.POSITIVE_INFINITY];
        const seen: { start: number; number: number }[] = [];
        for (let s = 0; s + 1 < bounds.length; s++) {
          const start = bounds[s] as number;
          const end = bounds[s + 1] as number;
          const newlines = body.subarray(0, start).filter((b) => b === 10).length;
          const from: SplitStart =
            start === 0
              ? { kind: 'line-start', offset: 0, line: 1 }
              : { kind: 'align', offset: start - 1, newlinesBefore: newlines };
          const sizes = [1 + Math.floor(random() * 5)];
          for (const line of await collect(body, from, sizes)) {
            if (line.start >= end) break;
            seen.push({ start: line.start, number: line.number });
          }
        }
        expect(seen).toEqual(linesStartingIn(body, 0, Number.POSITIVE_INFINITY));
      }
    });
  });
});
