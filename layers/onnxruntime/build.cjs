'use strict';
/**
 * Builds the onnxruntime-node Lambda layer for one architecture: the folder that becomes `/opt` on Lambda,
 * `nodejs/node_modules/{onnxruntime-node,onnxruntime-common}`, with only that platform's native binaries.
 * The framework zips the folder (serverless.yml `layers.onnxruntime.path`).
 *
 * `node layers/onnxruntime/build.cjs [--arch x86_64|arm64] [--out .build/layers/onnxruntime]`
 * writes `<out>/<arch>/nodejs/node_modules/...` and prints its size.
 *
 * CommonJS on purpose: the serverless plugin in deploy/ and the tests load it as it is.
 */
const { cp, mkdir, readdir, readFile, rm, stat } = require('node:fs/promises');
const { dirname, join, relative, resolve } = require('node:path');

/** Lambda's architecture names and the `process.arch` that onnxruntime-node's binaries are filed under. */
const NODE_ARCH = Object.freeze({ x86_64: 'x64', arm64: 'arm64' });

const DEFAULT_OUT = '.build/layers/onnxruntime';

/**
 * What goes into the layer, per package, relative to the package folder. Everything else (sources,
 * typings, source maps of the library, install scripts, the other platforms' binaries, the ESM build of
 * onnxruntime-common, which a CommonJS bundle never loads) is left out: untrimmed, the package is 291 MB,
 * over Lambda's 250 MB limit.
 */
function selection(nodeArch) {
  const runtimeJs = (file) => file.endsWith('.js') || file.endsWith('package.json');
  return [
    {
      name: 'onnxruntime-node',
      keep: (file) =>
        file === 'package.json' ||
        file === 'README.md' ||
        (file.startsWith('dist/') && runtimeJs(file)) ||
        file.startsWith(`bin/napi-v6/linux/${nodeArch}/`),
    },
    {
      name: 'onnxruntime-common',
      keep: (file) =>
        file === 'package.json' || file === 'README.md' || (file.startsWith('dist/cjs/') && runtimeJs(file)),
    },
  ];
}

async function listFiles(root, dir = root) {
  const files = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(root, path)));
    else if (entry.isFile()) files.push(relative(root, path).split('\\').join('/'));
  }
  return files.sort();
}

/**
 * Builds the layer folder for `arch` and returns where it is and what it holds.
 *
 * @param {{ arch?: string, outDir?: string, nodeModules?: string }} [options]
 * @example
 * const layer = await buildLayer({ arch: 'arm64' });
 * console.log(layer.dir, layer.bytes);
 */
async function buildLayer(options = {}) {
  const arch = options.arch ?? 'x86_64';
  const nodeArch = NODE_ARCH[arch];
  if (nodeArch === undefined) {
    throw new Error(`unknown architecture '${arch}'; Lambda has ${Object.keys(NODE_ARCH).join(', ')}`);
  }
  const nodeModules = resolve(options.nodeModules ?? join(__dirname, '..', '..', 'node_modules'));
  const dir = resolve(options.outDir ?? DEFAULT_OUT, arch);
  const target = join(dir, 'nodejs', 'node_modules');
  await rm(dir, { recursive: true, force: true });

  const files = [];
  let bytes = 0;
  let version;
  for (const { name, keep } of selection(nodeArch)) {
    const source = join(nodeModules, name);
    const manifest = JSON.parse(await readFile(join(source, 'package.json'), 'utf8'));
    if (name === 'onnxruntime-node') version = manifest.version;
    const kept = (await listFiles(source)).filter(keep);
    for (const file of kept) {
      const to = join(target, name, file);
      await mkdir(dirname(to), { recursive: true });
      await cp(join(source, file), to);
      bytes += (await stat(to)).size;
      files.push(`nodejs/node_modules/${name}/${file}`);
    }
  }
  const binding = `nodejs/node_modules/onnxruntime-node/bin/napi-v6/linux/${nodeArch}/onnxruntime_binding.node`;
  if (!files.includes(binding)) {
    throw new Error(`onnxruntime-node ${version} ships no Linux ${nodeArch} binding (${binding} is missing)`);
  }
  return { arch, nodeArch, dir, files, bytes, onnxruntimeVersion: version };
}

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = inline ?? argv[++i];
    if (flag === '--arch') options.arch = value;
    else if (flag === '--out') options.outDir = value;
    else throw new Error(`unknown option '${argv[i]}'; usage: build.cjs [--arch x86_64|arm64] [--out dir]`);
  }
  return options;
}

module.exports = { buildLayer, NODE_ARCH, DEFAULT_OUT };

if (require.main === module) {
  buildLayer(parseArgs(process.argv.slice(2))).then(
    (layer) => {
      const mb = (layer.bytes / 1024 / 1024).toFixed(1);
      console.log(
        `onnxruntime-node ${layer.onnxruntimeVersion} layer (${layer.arch}): ${layer.files.length} files, ${mb} MB in ${relative(process.cwd(), layer.dir)}`,
      );
    },
    (error) => {
      console.error(error instanceof Error ? error.message : error);
      process.exitCode = 1;
    },
  );
}
