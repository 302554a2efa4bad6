/**
 * Reads the zips the framework writes (function bundles, the layer) with node:zlib alone, so the tests
 * need no `unzip` binary and no extra package. Handles what those zips hold: stored and deflated entries,
 * no ZIP64, no encryption.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { crc32, inflateRawSync } from 'node:zlib';

export interface ZipEntry {
  readonly name: string;
  readonly compressedSize: number;
  readonly size: number;
  readonly method: number;
  readonly crc32: number;
  /** Unix permission bits, when the zip recorded them. */
  readonly mode: number;
  readonly localHeaderOffset: number;
}

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

/** The central directory: every entry with its sizes, in the zip's order. */
export function listZip(zip: Buffer): ZipEntry[] {
  let eocd = -1;
  for (let at = zip.length - 22; at >= Math.max(0, zip.length - 22 - 0xffff); at -= 1) {
    if (zip.readUInt32LE(at) === EOCD) {
      eocd = at;
      break;
    }
  }
  if (eocd === -1) throw new Error('not a zip file (no end of central directory)');
  const count = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  const entries: ZipEntry[] = [];
  for (let i = 0; i < count; i += 1) {
    if (zip.readUInt32LE(at) !== CENTRAL) throw new Error(`corrupt central directory at ${at}`);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    entries.push({
      method: zip.readUInt16LE(at + 10),
      crc32: zip.readUInt32LE(at + 16),
      compressedSize: zip.readUInt32LE(at + 20),
      size: zip.readUInt32LE(at + 24),
      mode: (zip.readUInt32LE(at + 38) >>> 16) & 0o7777,
      localHeaderOffset: zip.readUInt32LE(at + 42),
      name: zip.toString('utf8', at + 46, at + 46 + nameLength),
    });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/** The bytes of one entry, checked against its recorded size and CRC-32. */
export function readEntry(zip: Buffer, entry: ZipEntry): Buffer {
  const at = entry.localHeaderOffset;
  if (zip.readUInt32LE(at) !== LOCAL) throw new Error(`${entry.name}: corrupt local header`);
  const start = at + 30 + zip.readUInt16LE(at + 26) + zip.readUInt16LE(at + 28);
  const raw = zip.subarray(start, start + entry.compressedSize);
  let data: Buffer;
  if (entry.method === 0) data = Buffer.from(raw);
  else if (entry.method === 8) data = inflateRawSync(raw);
  else throw new Error(`${entry.name}: compression method ${entry.method} is not supported`);
  if (data.length !== entry.size)
    throw new Error(`${entry.name}: ${data.length} bytes, expected ${entry.size}`);
  if (crc32(data) >>> 0 !== entry.crc32 >>> 0) throw new Error(`${entry.name}: CRC-32 mismatch`);
  return data;
}

/** Extracts `zipFile` into `dir` (which may exist), refusing entries that would land outside it. */
export async function extractZip(zipFile: string, dir: string): Promise<ZipEntry[]> {
  const zip = await readFile(zipFile);
  const root = resolve(dir);
  const entries = listZip(zip);
  for (const entry of entries) {
    const target = resolve(join(root, entry.name));
    if (target !== root && !target.startsWith(root + sep)) throw new Error(`${entry.name}: leaves ${dir}`);
    if (entry.name.endsWith('/')) {
      await mkdir(target, { recursive: true });
      continue;
    }
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, readEntry(zip, entry), { mode: entry.mode === 0 ? 0o644 : entry.mode });
  }
  return entries;
}
