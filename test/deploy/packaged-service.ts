/**
 * Runs `serverless package` the way `npm run package` does (no credentials, no network) and hands the tests
 * its CloudFormation template and artefacts. Packaging takes seconds, so it runs once for all the deploy
 * test files: the first caller packages under a lock, the others wait and reuse the output, and later runs
 * reuse it while the inputs (sources, serverless.yml, deploy/, layers/, the lockfile) hash the same.
 * A failed packaging throws, so every test that needs it fails.
 *
 * It packages a copy of the service (node_modules linked, not copied): the framework deletes the service's
 * `.serverless/` on every packaging, whatever `--package` says, and serverless-esbuild works in `.esbuild/`,
 * so packaging in place would destroy a developer's `npm run package` output.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ROOT = resolve(__dirname, '..', '..');
export const STAGE = 'test';
const WORK = join(ROOT, '.build', 'deploy-test');
const OUT = join(WORK, 'package');
const SERVICE_COPY = join(WORK, 'service');
const LOCK = join(WORK, 'lock');
const STAMP = '.inputs-sha256';
const INPUTS = [
  'serverless.yml',
  'deploy',
  'layers',
  'functions',
  'shared',
  'package.json',
  'package-lock.json',
  'tsconfig.json',
];
const LOCK_WAIT_MS = 240_000;

/** A CloudFormation resource as the framework writes it. */
export interface CfResource {
  readonly Type: string;
  readonly Properties?: Record<string, unknown>;
  readonly DependsOn?: string | string[];
  readonly DeletionPolicy?: string;
  readonly UpdateReplacePolicy?: string;
}

export interface CfTemplate {
  readonly Resources: Record<string, CfResource>;
  readonly Outputs?: Record<string, { Value: unknown }>;
}

export interface PackagedService {
  /** The folder `serverless package --package` wrote. */
  readonly dir: string;
  readonly template: CfTemplate;
  /** The framework's resolved configuration (`serverless-state.json` -> `service`). */
  readonly service: {
    readonly custom: {
      readonly deploy: Record<string, unknown> & { readonly models: Record<string, unknown> };
    };
    readonly provider: Record<string, unknown>;
  };
  /** The zip in `dir` of a function (`Code.S3Key`) or a layer (`Content.S3Key`). */
  artefactOf(resource: CfResource | undefined): string;
}

async function listInputFiles(path: string): Promise<string[]> {
  const entries = await readdir(path, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOTDIR') return undefined;
    if (error.code === 'ENOENT') return [];
    throw error;
  });
  if (entries === undefined) return [path];
  const files: string[] = [];
  for (const entry of entries) files.push(...(await listInputFiles(join(path, entry.name))));
  return files;
}

async function inputsHash(args: readonly string[]): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify(args));
  const files = (await Promise.all(INPUTS.map((input) => listInputFiles(join(ROOT, input))))).flat().sort();
  for (const file of files) {
    hash
      .update(relative(ROOT, file))
      .update('\0')
      .update(await readFile(file))
      .update('\0');
  }
  return hash.digest('hex');
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function withLock<T>(work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  await mkdir(WORK, { recursive: true });
  for (;;) {
    try {
      await mkdir(LOCK);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(await readFile(join(LOCK, 'pid'), 'utf8').catch(() => '0'));
      // A holder that died (a killed test run) leaves its lock behind.
      if (holder > 0 && !isAlive(holder)) {
        await rm(LOCK, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`waited ${LOCK_WAIT_MS} ms for the packaging lock ${LOCK}`);
      await new Promise((done) => setTimeout(done, 250));
    }
  }
  await writeFile(join(LOCK, 'pid'), String(process.pid));
  try {
    return await work();
  } finally {
    await rm(LOCK, { recursive: true, force: true });
  }
}

/**
 * The environment of an offline packaging: no AWS credentials or profile at all (a developer's must not
 * leak in, and packaging must not need them), no instance metadata lookups, no telemetry.
 */
export function offlineEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('AWS_') || key.startsWith('SLS_') || key.startsWith('SERVERLESS_')) delete env[key];
  }
  return {
    ...env,
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    AWS_EC2_METADATA_DISABLED: 'true',
    SLS_TELEMETRY_DISABLED: '1',
    SLS_NOTIFICATIONS_MODE: 'off',
    ONNXRUNTIME_NODE_INSTALL: 'skip',
  };
}

/** A fresh copy of the service's inputs in `dir`, with this repository's node_modules linked in. */
async function copyService(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  for (const input of INPUTS) {
    await cp(join(ROOT, input), join(dir, input), { recursive: true }).catch(
      (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      },
    );
  }
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
}

/**
 * `serverless package` with the arguments `npm run package` uses, run in `serviceDir`, into `dir`.
 * Throws with its output.
 */
export async function runPackage(
  serviceDir: string,
  dir: string,
  extraArgs: readonly string[] = [],
): Promise<void> {
  const cli = join(ROOT, 'node_modules', 'serverless', 'bin', 'serverless.js');
  const args = [cli, 'package', '--param=compareDeployedLayer=false', '--package', dir, ...extraArgs];
  try {
    await run(process.execPath, args, { cwd: serviceDir, env: offlineEnv(), maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`serverless package failed:\n${stdout ?? ''}\n${stderr ?? ''}`, { cause: error });
  }
}

let packaged: Promise<PackagedService> | undefined;

/** The packaged service for stage {@link STAGE}, packaged at most once per set of inputs. */
export function packagedService(): Promise<PackagedService> {
  packaged ??= packageOnce().catch((error: unknown) => {
    packaged = undefined;
    throw error;
  });
  return packaged;
}

async function packageOnce(): Promise<PackagedService> {
  const args = ['--stage', STAGE];
  await withLock(async () => {
    const hash = await inputsHash(args);
    const current = await readFile(join(OUT, STAMP), 'utf8').catch(() => '');
    if (current === hash) return;
    const fresh = `${OUT}.${process.pid}`;
    await rm(fresh, { recursive: true, force: true });
    await copyService(SERVICE_COPY);
    await runPackage(SERVICE_COPY, fresh, args);
    await writeFile(join(fresh, STAMP), hash);
    await rm(OUT, { recursive: true, force: true });
    await rename(fresh, OUT);
  });
  const template = JSON.parse(
    await readFile(join(OUT, 'cloudformation-template-update-stack.json'), 'utf8'),
  ) as CfTemplate;
  const state = JSON.parse(await readFile(join(OUT, 'serverless-state.json'), 'utf8')) as {
    service: PackagedService['service'];
  };
  return {
    dir: OUT,
    template,
    service: state.service,
    artefactOf: (resource) => {
      const code = (resource?.Properties?.Code ?? resource?.Properties?.Content) as
        | { S3Key?: unknown }
        | undefined;
      const key = code?.S3Key;
      if (typeof key !== 'string') throw new Error(`no S3Key in ${JSON.stringify(resource)}`);
      return join(OUT, key.slice(key.lastIndexOf('/') + 1));
    },
  };
}

/** Resources of one type, by logical id. */
export function resourcesOfType(template: CfTemplate, type: string): [string, CfResource][] {
  return Object.entries(template.Resources).filter(([, resource]) => resource.Type === type);
}
