/**
 * Part 5, size: what a deployment uploads, against Lambda's limits. The function bundles as built
 * (`dist/<function>/`: the code and its source map, as serverless-esbuild packs them) and the onnxruntime
 * layer as layers/onnxruntime/build.cjs writes it, per architecture; zipped sizes are computed with
 * deflate, as a zip holds them.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { BuiltLayer, LambdaArchitecture } from '../../layers/onnxruntime/build.cjs';
import { type PartOptions, type PartResult, type Target, target, verdict } from '../lib/part';
import type { Table } from '../lib/table';

/** Lambda: a function's code and all its layers, unzipped (the figure the deploy tests use too). */
export const LAMBDA_UNZIPPED_LIMIT = 262_144_000;
/** Lambda: a zip uploaded directly with the function (larger ones must come from S3). */
export const LAMBDA_ZIPPED_DIRECT_LIMIT = 52_428_800;

/** The doors that deploy as Lambda zips (the server door ships as a container image). */
const LAMBDA_FUNCTIONS = ['infer', 'batch'] as const;

/** Sizes of one uploadable folder. */
export interface SizeRow {
  readonly item: string;
  readonly files: number;
  readonly unzippedBytes: number;
  readonly zippedBytes: number;
}

export async function runSize(options: PartOptions): Promise<PartResult> {
  const { root, workDir, log } = options;
  const rows: SizeRow[] = [];
  const missing: string[] = [];
  for (const name of LAMBDA_FUNCTIONS) {
    const dir = join(root, 'dist', name);
    if (!existsSync(join(dir, 'index.js'))) {
      missing.push(`${name} (dist/${name}/index.js not built)`);
      continue;
    }
    rows.push(await measureFolder(`function ${name}`, dir));
  }
  const layerBuilder = join(root, 'layers/onnxruntime/build.cjs');
  const { buildLayer } = require(layerBuilder) as {
    buildLayer(options: {
      arch: LambdaArchitecture;
      outDir: string;
      nodeModules: string;
    }): Promise<BuiltLayer>;
  };
  const architectures: LambdaArchitecture[] = options.quick ? ['x86_64'] : ['x86_64', 'arm64'];
  const layers: SizeRow[] = [];
  for (const arch of architectures) {
    const layer = await buildLayer({
      arch,
      outDir: join(workDir, 'layers'),
      nodeModules: join(root, 'node_modules'),
    });
    const row = await measureFolder(`layer onnxruntime (${arch})`, layer.dir);
    layers.push(row);
    log(`size: layer ${arch} ${(row.unzippedBytes / 1e6).toFixed(1)} MB`);
  }
  rows.push(...layers);

  const targets: Target[] = [];
  const functions = rows.filter((r) => r.item.startsWith('function '));
  const largestLayer = Math.max(...layers.map((l) => l.unzippedBytes));
  for (const fn of functions) {
    targets.push(
      target(
        `${fn.item} zipped <= direct-upload limit`,
        fn.zippedBytes,
        '<=',
        LAMBDA_ZIPPED_DIRECT_LIMIT,
        'zip',
      ),
      target(
        `${fn.item} + largest layer unzipped <= 250 MB limit`,
        fn.unzippedBytes + largestLayer,
        '<=',
        LAMBDA_UNZIPPED_LIMIT,
        'unzipped',
      ),
    );
  }
  for (const layer of layers) {
    targets.push(
      target(
        `${layer.item} zipped <= direct-upload limit`,
        layer.zippedBytes,
        '<=',
        LAMBDA_ZIPPED_DIRECT_LIMIT,
        'zip',
      ),
    );
  }
  const mb = (bytes: number) => (bytes / 1e6).toFixed(2);
  const table: Table = {
    title: "Size: what a deployment uploads, against Lambda's limits (MB = 10^6 bytes)",
    columns: [
      'item',
      'files',
      'unzipped MB',
      'zipped MB',
      'with largest layer, unzipped MB',
      'of 262.1 MB limit',
      'target',
    ],
    rows: rows.map((row) => {
      const isFunction = row.item.startsWith('function ');
      const total = isFunction ? row.unzippedBytes + largestLayer : row.unzippedBytes;
      return [
        row.item,
        String(row.files),
        mb(row.unzippedBytes),
        mb(row.zippedBytes),
        isFunction ? mb(total) : '',
        `${((100 * total) / LAMBDA_UNZIPPED_LIMIT).toFixed(1)}%`,
        verdict(targets.filter((t) => t.name.startsWith(row.item))),
      ];
    }),
    notes: [
      `Limits: function code plus all its layers unzipped <= ${LAMBDA_UNZIPPED_LIMIT} bytes (250 MiB); a zip uploaded directly <= ${LAMBDA_ZIPPED_DIRECT_LIMIT} bytes (50 MiB; larger zips go through S3).`,
      'Functions include their source map (serverless.yml: sourcemap true); zipped = deflate (zlib level 6) of each file plus zip headers.',
      'The server door ships as a container image (limit 10 GB), not measured here: no container engine runs on this machine.',
      ...missing.map((m) => `not available: function ${m}`),
    ],
  };
  return { part: 'size', available: true, tables: [table], targets, data: { rows, missing } };
}

/** Files, bytes and the size of a zip of `dir` (local header + central directory entry per file). */
async function measureFolder(item: string, dir: string): Promise<SizeRow> {
  const files = await listFiles(dir);
  let unzippedBytes = 0;
  let zippedBytes = 22; // end of central directory
  for (const file of files) {
    const bytes = await readFile(file);
    const name = Buffer.byteLength(relative(dir, file));
    unzippedBytes += bytes.byteLength;
    const deflated = deflateRawSync(bytes).byteLength;
    // A zip stores a file as it is when deflate would not make it smaller.
    zippedBytes += Math.min(deflated, bytes.byteLength) + 30 + name + 46 + name;
  }
  return { item, files: files.length, unzippedBytes, zippedBytes };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else if (entry.isFile() && (await stat(path)).size >= 0) out.push(path);
  }
  return out.sort();
}
