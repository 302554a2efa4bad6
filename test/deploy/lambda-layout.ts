/**
 * Runs a packaged function the way Lambda would: its zip unzipped as the task root and its layer unzipped
 * as `/opt`, under the system temp dir so that module resolution can reach nothing of this repository,
 * in a fresh Node process with `NODE_PATH` naming only the layer, the function's packaged environment,
 * and its handler (`<file>.<export>` under the task root) called through lambda-local with the Lambda
 * calling convention.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type CfResource, type PackagedService, ROOT, resourcesOfType } from './packaged-service';
import { extractZip } from './zip-reader';

const run = promisify(execFile);

/** What the function's process did: one result per event, and every module file it loaded. */
export interface LayoutReport<T> {
  readonly results: T[];
  readonly modules: string[];
}

export interface LambdaLayout {
  readonly sandbox: string;
  /** `/var/task` */
  readonly taskRoot: string;
  /** `/opt` */
  readonly layerRoot: string;
  readonly fn: CfResource;
  /** Runs `events` one after the other in one process (the first cold, the rest warm). */
  invoke<T>(events: readonly unknown[], env: Readonly<Record<string, string>>): Promise<LayoutReport<T>>;
  dispose(): Promise<void>;
}

// The child: load the handler once, so that later events hit the warm instance, as on Lambda.
const RUNNER = `
const { join } = require('node:path');
const { writeFileSync, readFileSync } = require('node:fs');
const [lambdaLocalPath, handlerSpec, eventsFile, reportFile, timeoutMs] = process.argv.slice(2);
const lambdaLocal = require(lambdaLocalPath);
lambdaLocal.setLogger({ log() {}, info() {}, warn() {}, error() {}, transports: [] });
const dot = handlerSpec.lastIndexOf('.');
const mod = require(join(process.env.LAMBDA_TASK_ROOT, handlerSpec.slice(0, dot)));
const lambdaHandler = handlerSpec.slice(dot + 1);
(async () => {
  const results = [];
  for (const event of JSON.parse(readFileSync(eventsFile, 'utf8'))) {
    results.push(await lambdaLocal.execute({
      event, lambdaFunc: mod, lambdaHandler, timeoutMs: Number(timeoutMs), verboseLevel: 0,
    }));
  }
  writeFileSync(reportFile, JSON.stringify({ results, modules: Object.keys(require.cache) }));
})().catch((error) => { console.error(error); process.exitCode = 1; });
`;

/** The pseudo parameters CloudFormation would substitute, for this test account and region. */
const PSEUDO: Readonly<Record<string, string>> = {
  'AWS::Partition': 'aws',
  'AWS::Region': 'us-east-1',
  'AWS::AccountId': '123456789012',
};

/**
 * The packaged environment of a function, as Lambda would see it: `{"Fn::Sub": ...}` values (the state
 * machine's ARN) resolved with {@link PSEUDO}; any other non-string value fails.
 */
export function environmentOf(fn: CfResource): Record<string, string> {
  const environment = fn.Properties?.Environment as { Variables?: Record<string, unknown> } | undefined;
  const resolved: Record<string, string> = {};
  for (const [key, value] of Object.entries(environment?.Variables ?? {})) {
    const template = (value as { 'Fn::Sub'?: unknown } | null)?.['Fn::Sub'];
    if (typeof value === 'string') resolved[key] = value;
    else if (typeof template === 'string') {
      resolved[key] = template.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
        const known = PSEUDO[name];
        if (known === undefined) throw new Error(`${key}: no value for \${${name}}`);
        return known;
      });
    } else throw new Error(`${key}: ${JSON.stringify(value)} is not a string or an Fn::Sub`);
  }
  return resolved;
}

/** The function the framework named `<service>-<stage>-<key>`. */
export function functionNamed(pkg: PackagedService, key: string): CfResource {
  const found = resourcesOfType(pkg.template, 'AWS::Lambda::Function').find(([, fn]) =>
    String(fn.Properties?.FunctionName).endsWith(`-${key}`),
  );
  if (found === undefined) throw new Error(`no function ${key} in the template`);
  return found[1];
}

/** The function an HTTP API route sends `routeKey` to. */
export function functionForRoute(pkg: PackagedService, routeKey: string): CfResource {
  const route = resourcesOfType(pkg.template, 'AWS::ApiGatewayV2::Route').find(
    ([, r]) => r.Properties?.RouteKey === routeKey,
  );
  if (route === undefined) throw new Error(`no route ${routeKey}`);
  const integrationId = /"Ref":"(\w+)"/.exec(JSON.stringify(route[1].Properties?.Target))?.[1] ?? '';
  const uri = JSON.stringify(pkg.template.Resources[integrationId]?.Properties?.IntegrationUri);
  const fnId = /"Fn::GetAtt":\["(\w+)","Arn"\]/.exec(uri)?.[1] ?? '';
  const fn = pkg.template.Resources[fnId];
  if (fn?.Type !== 'AWS::Lambda::Function') throw new Error(`route ${routeKey} reaches no function`);
  return fn;
}

/**
 * The environment Lambda gives a `nodejs22.x` function, with the sandbox's folders for `/var/task`,
 * `/opt`, `/var/runtime` and `/tmp` (nothing is written to the real ones): `LAMBDA_TASK_ROOT`,
 * `LAMBDA_RUNTIME_DIR`, Lambda's `NODE_PATH` order (`/opt/nodejs/node22/node_modules`,
 * `/opt/nodejs/node_modules`, `/var/runtime/node_modules`, `/var/runtime`, `/var/task`), the function's
 * name, memory, version, log group and stream, `AWS_EXECUTION_ENV`, then the function's packaged environment.
 */
export function lambdaEnvironment(
  layout: Pick<LambdaLayout, 'sandbox' | 'taskRoot' | 'layerRoot' | 'fn'>,
): NodeJS.ProcessEnv {
  const { sandbox, taskRoot, layerRoot, fn } = layout;
  const props = fn.Properties ?? {};
  const runtimeDir = join(sandbox, 'var', 'runtime');
  return {
    PATH: process.env.PATH,
    LANG: 'en_US.UTF-8',
    TZ: ':UTC',
    // lambda-local reads ~/.aws/*: an empty home keeps the developer's profiles out.
    HOME: sandbox,
    TMPDIR: join(sandbox, 'tmp'),
    LAMBDA_TASK_ROOT: taskRoot,
    LAMBDA_RUNTIME_DIR: runtimeDir,
    NODE_PATH: [
      join(layerRoot, 'nodejs', 'node22', 'node_modules'),
      join(layerRoot, 'nodejs', 'node_modules'),
      join(runtimeDir, 'node_modules'),
      runtimeDir,
      taskRoot,
    ].join(':'),
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_LAMBDA_FUNCTION_NAME: String(props.FunctionName),
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(props.MemorySize),
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${String(props.FunctionName)}`,
    AWS_LAMBDA_LOG_STREAM_NAME: '2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
    ...environmentOf(fn),
  };
}

/** Unzips `fn` and its one layer into a fresh sandbox. */
export async function unpackFunction(pkg: PackagedService, fn: CfResource): Promise<LambdaLayout> {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `the packaged layer is for Linux x86_64; this host is ${process.platform} ${process.arch}`,
    );
  }
  const props = fn.Properties ?? {};
  const sandbox = await mkdtemp(join(tmpdir(), 'lambda-layout-'));
  const taskRoot = join(sandbox, 'var', 'task');
  const layerRoot = join(sandbox, 'opt');
  await extractZip(pkg.artefactOf(fn), taskRoot);
  const layers = props.Layers as { Ref: string }[] | undefined;
  if (layers?.length !== 1) throw new Error(`expected one layer, found ${JSON.stringify(layers)}`);
  await extractZip(pkg.artefactOf(pkg.template.Resources[layers[0]?.Ref ?? '']), layerRoot);
  await mkdir(join(sandbox, 'tmp'));
  await mkdir(join(sandbox, 'var', 'runtime'), { recursive: true });

  return {
    sandbox,
    taskRoot,
    layerRoot,
    fn,
    async invoke<T>(events: readonly unknown[], env: Readonly<Record<string, string>>) {
      const eventsFile = join(sandbox, 'events.json');
      const reportFile = join(sandbox, 'report.json');
      const runnerFile = join(sandbox, 'runner.cjs');
      await writeFile(eventsFile, JSON.stringify(events));
      await writeFile(runnerFile, RUNNER);
      await rm(reportFile, { force: true });
      const lambdaEnv: NodeJS.ProcessEnv = {
        ...lambdaEnvironment({ sandbox, taskRoot, layerRoot, fn }),
        // lambda-local's module search stays the layer's alone, as before.
        NODE_PATH: join(layerRoot, 'nodejs', 'node_modules'),
        ...env,
      };
      const timeoutMs = Number(props.Timeout) * 1000;
      const args = [
        runnerFile,
        join(ROOT, 'node_modules', 'lambda-local'),
        String(props.Handler),
        eventsFile,
        reportFile,
        String(timeoutMs),
      ];
      try {
        await run(process.execPath, args, {
          cwd: taskRoot,
          env: lambdaEnv,
          timeout: timeoutMs * events.length + 30_000,
          maxBuffer: 16 * 1024 * 1024,
        });
      } catch (error) {
        const { stdout, stderr } = error as { stdout?: string; stderr?: string };
        throw new Error(`the function process failed:\n${stdout ?? ''}\n${stderr ?? ''}`, { cause: error });
      }
      return JSON.parse(await readFile(reportFile, 'utf8')) as LayoutReport<T>;
    },
    dispose: () => rm(sandbox, { recursive: true, force: true }),
  };
}

/** The bucket and prefix of an `s3://bucket/prefix` value. */
export function s3Location(url: string | undefined): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(url ?? '');
  if (match === null) throw new Error(`'${url}' is not s3://bucket/prefix`);
  return { bucket: match[1] ?? '', prefix: match[2] ?? '' };
}
