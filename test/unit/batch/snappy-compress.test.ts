import { snappyUncompress } from 'hyparquet/src/snappy.js';
import { snappyCompress } from '../../../shared/adapters/snappy-compress';

/** Deterministic bytes: `kind` says how compressible. */
function bytesOf(kind: 'random' | 'zeros' | 'text' | 'floats', length: number): Uint8Array {
  const out = new Uint8Array(length);
  let seed = 12345;
  const next = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed >>> 16;
  };
  if (kind === 'random') for (let i = 0; i < length; i++) out[i] = next() & 0xff;
  if (kind === 'text') {
    const words = new TextEncoder().encode('the model scored the row and the row was scored by the model ');
    for (let i = 0; i < length; i++) out[i] = words[(i + (i >> 9)) % words.length] as number;
  }
  if (kind === 'floats') {
    const floats = new Float32Array(out.buffer, 0, length >> 2);
    for (let i = 0; i < floats.length; i++) floats[i] = Math.round(Math.sin(i * 0.37) * 1024) / 1024;
  }
  return out;
}

describe('snappyCompress', () => {
  const lengths = [0, 1, 14, 15, 16, 100, 65_535, 65_536, 65_537, 300_001];
  for (const kind of ['random', 'zeros', 'text', 'floats'] as const) {
    it(`round-trips ${kind} bytes of every length through a snappy decoder`, () => {
      for (const length of lengths) {
        const input = bytesOf(kind, length);
        const compressed = snappyCompress(input);
        const output = new Uint8Array(length);
        snappyUncompress(compressed, output);
        expect(Buffer.from(output).equals(Buffer.from(input))).toBe(true);
        if (kind === 'random') expect(compressed.length).toBeLessThanOrEqual(32 + length + length / 6);
        if ((kind === 'zeros' || kind === 'text') && length > 1000) {
          expect(compressed.length).toBeLessThan(length / 4);
        }
      }
    });
  }
});
