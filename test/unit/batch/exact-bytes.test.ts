import { InputMismatchError, InputReadError } from '../../../shared/core/batch/errors';
import { exactBytes } from '../../../shared/core/batch/exact-bytes';

async function* chunks(...sizes: number[]): AsyncGenerator<Uint8Array> {
  for (const size of sizes) yield new Uint8Array(size);
}

async function total(source: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const chunk of source) bytes += chunk.byteLength;
  return bytes;
}

describe('exactBytes', () => {
  it('passes a source that runs from its start to exactly its end', async () => {
    expect(await total(exactBytes(chunks(3, 4, 5), 10, 22, 'the input'))).toBe(12);
    expect(await total(exactBytes(chunks(), 0, 0, 'the input'))).toBe(0);
  });

  it('throws where a short source ends, before its consumer sees the end', async () => {
    const seen: number[] = [];
    const read = async () => {
      for await (const chunk of exactBytes(chunks(3, 4), 0, 10, "the input 'a'")) seen.push(chunk.byteLength);
      seen.push(-1);
    };
    await expect(read()).rejects.toThrow(
      new InputReadError("the input 'a' ended at byte 7 of 10: nothing is scored from a partial read"),
    );
    expect(seen).toEqual([3, 4]);
  });

  it('throws before handing over bytes past the end', async () => {
    const seen: number[] = [];
    const read = async () => {
      for await (const chunk of exactBytes(chunks(3, 4), 0, 5, "the input 'a'")) seen.push(chunk.byteLength);
    };
    await expect(read()).rejects.toBeInstanceOf(InputMismatchError);
    expect(seen).toEqual([3]);
  });
});
