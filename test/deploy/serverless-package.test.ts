import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import aslValidator from 'asl-validator';
import {
  type CfResource,
  type CfTemplate,
  type PackagedService,
  packagedService,
  ROOT,
  resourcesOfType,
  STAGE,
} from './packaged-service';
import { listZip, readEntry, type ZipEntry } from './zip-reader';

const SERVICE = 'onnx-serverless';
const DEFINITION_FILE = join(ROOT, 'functions', 'batch', 'state-machine.asl.json');
/** Lambda's limit on a function's code and layers, unzipped. */
const LAMBDA_UNZIPPED_LIMIT = 262_144_000;
/** What this project allows itself: a regression (an untrimmed layer, a bundled binary) fails long before. */
const LAYER_UNZIPPED_BUDGET = 60 * 1024 * 1024;
const BUNDLE_UNZIPPED_BUDGET = 10 * 1024 * 1024;

const MODEL_ROUTES = [
  'GET /v2/models/{m}',
  'GET /v2/models/{m}/ready',
  'POST /v2/models/{m}/infer',
  'POST /v2/models/{m}/predict',
  'GET /v2/models/{m}/versions/{version}',
  'GET /v2/models/{m}/versions/{version}/ready',
  'POST /v2/models/{m}/versions/{version}/infer',
  'POST /v2/models/{m}/versions/{version}/predict',
];
const SERVER_ROUTES = ['GET /v2', 'GET /v2/health/live', 'GET /v2/health/ready'];

interface Statement {
  readonly Effect: string;
  readonly Action?: string | string[];
  readonly NotAction?: unknown;
  readonly Resource?: unknown;
  readonly NotResource?: unknown;
  readonly Condition?: unknown;
}

interface ModelsFile {
  readonly models: readonly { readonly name: string; readonly variant?: string }[];
  readonly defaultModel?: string;
  readonly multiModel?: { readonly enabled?: boolean };
  readonly batch?: { readonly enabled?: boolean };
}

let pkg: PackagedService;
let template: CfTemplate;
let models: ModelsFile;
let bucket: string;

beforeAll(async () => {
  pkg = await packagedService();
  template = pkg.template;
  models = pkg.service.custom.deploy.models as unknown as ModelsFile;
  bucket = String(pkg.service.custom.deploy.bucket);
}, 240_000);

function functionResource(name: string): CfResource {
  const found = resourcesOfType(template, 'AWS::Lambda::Function').find(
    ([, resource]) => resource.Properties?.FunctionName === `${SERVICE}-${STAGE}-${name}`,
  );
  if (found === undefined) throw new Error(`no function ${name} in the template`);
  return found[1];
}

function roleOf(fn: CfResource): { id: string; statements: Statement[] } {
  const ref = fn.Properties?.Role as { 'Fn::GetAtt'?: [string, string] } | undefined;
  const id = ref?.['Fn::GetAtt']?.[0];
  if (id === undefined) throw new Error(`function role is not a role of this stack: ${JSON.stringify(ref)}`);
  const role = template.Resources[id];
  expect(role?.Type).toBe('AWS::IAM::Role');
  return { id, statements: inlineStatements(role as CfResource) };
}

function inlineStatements(resource: CfResource): Statement[] {
  const props = resource.Properties ?? {};
  const documents: { Statement: Statement[] }[] = [];
  if (resource.Type === 'AWS::IAM::Role') {
    for (const policy of (props.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[]) {
      documents.push(policy.PolicyDocument);
    }
  } else if (props.PolicyDocument !== undefined) {
    documents.push(props.PolicyDocument as { Statement: Statement[] });
  }
  return documents.flatMap((document) => document.Statement);
}

const arn = (text: string) => ({ 'Fn::Sub': text });
const s3 = (key?: string) =>
  arn(`arn:\${AWS::Partition}:s3:::${bucket}${key === undefined ? '' : `/${key}`}`);
const logs = (fn: string) => ({
  Effect: 'Allow',
  Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
  Resource: arn(
    `arn:\${AWS::Partition}:logs:\${AWS::Region}:\${AWS::AccountId}:log-group:/aws/lambda/${SERVICE}-${STAGE}-${fn}:*`,
  ),
});
const stateMachineArn = arn(
  `arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:stateMachine:${SERVICE}-${STAGE}-batch`,
);
const executions = (suffix: string) =>
  arn(
    `arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:execution:${SERVICE}-${STAGE}-batch${suffix}`,
  );
const readPrefix = (prefix: string) => [
  { Effect: 'Allow', Action: ['s3:GetObject'], Resource: s3(`${prefix}/*`) },
  {
    Effect: 'Allow',
    Action: ['s3:ListBucket'],
    Resource: s3(),
    Condition: { StringLike: { 's3:prefix': [`${prefix}/*`] } },
  },
];

function routeTargets(): Map<string, { fn: string; authorization: unknown }> {
  const integrations = new Map<string, string>();
  for (const [id, integration] of resourcesOfType(template, 'AWS::ApiGatewayV2::Integration')) {
    const uri = JSON.stringify(integration.Properties?.IntegrationUri);
    const fn = /"Fn::GetAtt":\["(\w+)","Arn"\]/.exec(uri)?.[1];
    if (fn !== undefined) integrations.set(id, fn);
  }
  const routes = new Map<string, { fn: string; authorization: unknown }>();
  for (const [, route] of resourcesOfType(template, 'AWS::ApiGatewayV2::Route')) {
    const target = JSON.stringify(route.Properties?.Target);
    const integration = /"Ref":"(\w+)"/.exec(target)?.[1] ?? '';
    const fnId = integrations.get(integration) ?? '';
    const name = String(template.Resources[fnId]?.Properties?.FunctionName ?? '');
    routes.set(String(route.Properties?.RouteKey), {
      fn: name.replace(`${SERVICE}-${STAGE}-`, ''),
      authorization: route.Properties?.AuthorizationType,
    });
  }
  return routes;
}

async function entries(zipFile: string): Promise<ZipEntry[]> {
  return listZip(await readFile(zipFile));
}

const unzippedBytes = (list: readonly ZipEntry[]) => list.reduce((sum, entry) => sum + entry.size, 0);

describe('serverless package', () => {
  describe('functions', () => {
    it('has one infer function per listed model, pinned to it, on Node 22 with the layer', () => {
      expect(models.models.length).toBeGreaterThan(0);
      expect(models.models.some((m) => m.variant !== undefined)).toBe(true);
      for (const { name, variant } of models.models) {
        const props = functionResource(`infer-${name}`).Properties ?? {};
        expect(props.Runtime).toBe('nodejs22.x');
        expect(props.Architectures).toEqual(['x86_64']);
        expect(props.Handler).toBe('functions/infer/handler.handler');
        expect(props.Layers).toEqual([{ Ref: 'OnnxruntimeLambdaLayer' }]);
        const env = (props.Environment as { Variables: Record<string, string> }).Variables;
        expect(env.ONNX_SERVE_MODEL).toBe(name);
        // A model's `variant:` in deploy/models.yml is the precision variant its function serves.
        expect(env.ONNX_SERVE_VARIANT).toBe(variant);
        expect(env.ONNX_SERVE_MODEL_REPOSITORY).toBe(`s3://${bucket}/models`);
        // Source maps stay off the infer functions' cold path (serverless.yml).
        expect(env.NODE_OPTIONS).toBeUndefined();
        const tmp = (props.EphemeralStorage as { Size: number }).Size;
        expect(Number(env.ONNX_SERVE_DISK_CACHE_MB)).toBeLessThan(tmp);
      }
    });

    it('has the multi-model function exactly when deploy/models.yml enables it', () => {
      const present = resourcesOfType(template, 'AWS::Lambda::Function').some(
        ([, fn]) => fn.Properties?.FunctionName === `${SERVICE}-${STAGE}-infer`,
      );
      expect(present).toBe(models.multiModel?.enabled === true);
    });

    it('has the batch function, triggered by its input prefix, retried twice, failures to a queue', () => {
      expect(models.batch?.enabled).toBe(true);
      const props = functionResource('batch').Properties ?? {};
      expect(props.Handler).toBe('functions/batch/handler.handler');
      expect(props.Timeout).toBe(900);
      expect(props.RecursiveLoop).toBe('Allow');
      const bucketResource = resourcesOfType(template, 'AWS::S3::Bucket').find(
        ([, b]) => b.Properties?.BucketName === bucket,
      );
      const notifications = JSON.stringify(bucketResource?.[1].Properties?.NotificationConfiguration);
      expect(notifications).toContain('"Event":"s3:ObjectCreated:*"');
      expect(notifications).toContain('{"Name":"prefix","Value":"batch/in/"}');
      const [[, invokeConfig] = []] = resourcesOfType(template, 'AWS::Lambda::EventInvokeConfig');
      expect(invokeConfig?.Properties).toMatchObject({
        MaximumRetryAttempts: 2,
        DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': ['BatchFailureQueue', 'Arn'] } } },
      });
    });

    it('has the batch state machine, from its definition, on the batch function, started by it', async () => {
      const machine = template.Resources.BatchStateMachine;
      expect(machine?.Type).toBe('AWS::StepFunctions::StateMachine');
      expect(machine?.Properties).toMatchObject({
        StateMachineName: `${SERVICE}-${STAGE}-batch`,
        StateMachineType: 'STANDARD',
        DefinitionSubstitutions: { BatchFunctionArn: { 'Fn::GetAtt': ['BatchLambdaFunction', 'Arn'] } },
      });
      const source = JSON.parse(await readFile(DEFINITION_FILE, 'utf8'));
      const text = String(machine?.Properties?.DefinitionString);
      // Every value kept, nulls included (ResultPath: null discards the map's results).
      expect(JSON.parse(text)).toEqual(source);
      // What CloudFormation hands Step Functions: the substitution applied, then a maintained validator.
      const deployed = JSON.parse(
        text.replaceAll(
          ['$', '{BatchFunctionArn}'].join(''),
          `arn:aws:lambda:us-east-1:123456789012:function:${SERVICE}-${STAGE}-batch`,
        ),
      );
      const { isValid, errorsText } = aslValidator(deployed);
      expect(errorsText('\n')).toBe('');
      expect(isValid).toBe(true);
      // The function starts it by the ARN its name gives (a reference would be a circular dependency).
      const environment = functionResource('batch').Properties?.Environment as
        | { Variables?: Record<string, unknown> }
        | undefined;
      const env = environment?.Variables ?? {};
      expect(env.ONNX_SERVE_BATCH_STATE_MACHINE_ARN).toEqual(stateMachineArn);
      expect(template.Outputs?.BatchStateMachineArn?.Value).toEqual({ Ref: 'BatchStateMachine' });
    });

    it('gives every function a role of its own', () => {
      const roles = resourcesOfType(template, 'AWS::Lambda::Function').map(([, fn]) => roleOf(fn).id);
      expect(new Set(roles).size).toBe(roles.length);
      // The framework's shared role would give every function the union of the permissions.
      expect(template.Resources.IamRoleLambdaExecution).toBeUndefined();
    });
  });

  describe('IAM', () => {
    it('grants nothing on a wildcard action or resource, and no Not* escapes', () => {
      const offenders: string[] = [];
      for (const [id, resource] of Object.entries(template.Resources)) {
        for (const statement of inlineStatements(resource)) {
          if (statement.Effect !== 'Allow') continue;
          const actions = [statement.Action ?? []].flat();
          const resources = [statement.Resource ?? []].flat();
          if (statement.NotAction !== undefined || statement.NotResource !== undefined)
            offenders.push(`${id}: Not*`);
          for (const action of actions) {
            if (action === '*' || action.endsWith(':*')) offenders.push(`${id}: action ${action}`);
          }
          for (const target of resources) {
            const text =
              typeof target === 'string' ? target : JSON.stringify(Object.values(target as object)[0]);
            if (text === '*' || text === '"*"') offenders.push(`${id}: resource *`);
          }
        }
      }
      expect(offenders).toEqual([]);
    });

    it('lets each per-model function read its own model prefix, and nothing else', () => {
      for (const { name } of models.models) {
        const { statements } = roleOf(functionResource(`infer-${name}`));
        expect(statements).toEqual([logs(`infer-${name}`), ...readPrefix(`models/${name}`)]);
      }
    });

    it('lets the multi-model function read the model prefix, and nothing else', () => {
      expect(models.multiModel?.enabled).toBe(true);
      const { statements } = roleOf(functionResource('infer'));
      expect(statements).toEqual([logs('infer'), ...readPrefix('models')]);
    });

    it('lets the batch function read its input, write its output, read models and invoke only itself', () => {
      const { statements } = roleOf(functionResource('batch'));
      expect(statements).toEqual([
        logs('batch'),
        { Effect: 'Allow', Action: ['s3:GetObject', 's3:GetObjectVersion'], Resource: s3('batch/in/*') },
        {
          Effect: 'Allow',
          Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
          Resource: s3('batch/out/*'),
        },
        { Effect: 'Allow', Action: ['s3:GetObject'], Resource: s3('models/*') },
        {
          Effect: 'Allow',
          Action: ['s3:ListBucket'],
          Resource: s3(),
          Condition: { StringLike: { 's3:prefix': ['batch/in/*', 'batch/out/*', 'models/*'] } },
        },
        {
          Effect: 'Allow',
          Action: ['sqs:SendMessage'],
          Resource: { 'Fn::GetAtt': ['BatchFailureQueue', 'Arn'] },
        },
        {
          Effect: 'Allow',
          Action: ['lambda:InvokeFunction'],
          Resource: arn(
            `arn:\${AWS::Partition}:lambda:\${AWS::Region}:\${AWS::AccountId}:function:${SERVICE}-${STAGE}-batch`,
          ),
        },
        { Effect: 'Allow', Action: ['states:StartExecution'], Resource: stateMachineArn },
        { Effect: 'Allow', Action: ['states:DescribeExecution'], Resource: executions(':*') },
      ]);
    });

    it('lets the state machine invoke the batch function, read shard lists and run its own map', () => {
      const role = template.Resources.BatchStateMachineRole as CfResource;
      expect(template.Resources.BatchStateMachine?.Properties?.RoleArn).toEqual({
        'Fn::GetAtt': ['BatchStateMachineRole', 'Arn'],
      });
      expect(inlineStatements(role)).toEqual([
        {
          Effect: 'Allow',
          Action: ['lambda:InvokeFunction'],
          Resource: { 'Fn::GetAtt': ['BatchLambdaFunction', 'Arn'] },
        },
        { Effect: 'Allow', Action: ['s3:GetObject'], Resource: s3('batch/out/*.parts/*/shards.json') },
        { Effect: 'Allow', Action: ['states:StartExecution'], Resource: stateMachineArn },
        {
          Effect: 'Allow',
          Action: ['states:DescribeExecution', 'states:StopExecution'],
          Resource: executions('/*'),
        },
      ]);
      expect(role.Properties?.AssumeRolePolicyDocument).toEqual({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Principal: { Service: 'states.amazonaws.com' },
            Action: 'sts:AssumeRole',
            Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
          },
        ],
      });
      expect(role.Properties?.ManagedPolicyArns).toBeUndefined();
    });

    it('lets Lambda alone assume the functions’ roles', () => {
      for (const [, fn] of resourcesOfType(template, 'AWS::Lambda::Function')) {
        const role = template.Resources[roleOf(fn).id];
        expect(role?.Properties?.AssumeRolePolicyDocument).toEqual({
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
          ],
        });
        expect(role?.Properties?.ManagedPolicyArns).toBeUndefined();
      }
      // The functions' roles and the state machine's: no other role in the stack.
      expect(resourcesOfType(template, 'AWS::IAM::Role')).toHaveLength(
        resourcesOfType(template, 'AWS::Lambda::Function').length + 1,
      );
    });

    it('keeps the model bucket private, encrypted and retained with the stack removed', () => {
      const found = resourcesOfType(template, 'AWS::S3::Bucket').find(
        ([, b]) => b.Properties?.BucketName === bucket,
      );
      expect(found).toBeDefined();
      const [, resource] = found as [string, CfResource];
      expect(resource.DeletionPolicy).toBe('Retain');
      expect(resource.Properties?.PublicAccessBlockConfiguration).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(JSON.stringify(resource.Properties?.BucketEncryption)).toContain('AES256');
      expect(JSON.stringify(resource.Properties?.LifecycleConfiguration)).toContain(
        '"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}',
      );
    });
  });

  describe('HTTP API', () => {
    it('routes every Open Inference Protocol path of each model to its function, IAM-authorised', () => {
      const routes = routeTargets();
      for (const { name } of models.models) {
        for (const route of MODEL_ROUTES) {
          expect([route, routes.get(route.replace('{m}', name))]).toEqual([
            route,
            { fn: `infer-${name}`, authorization: 'AWS_IAM' },
          ]);
        }
      }
    });

    it('routes the server-wide paths, the {model} paths and /predict', () => {
      const routes = routeTargets();
      const serverFn = models.multiModel?.enabled === true ? 'infer' : `infer-${models.models[0]?.name}`;
      for (const route of SERVER_ROUTES) {
        expect([route, routes.get(route)]).toEqual([route, { fn: serverFn, authorization: 'AWS_IAM' }]);
      }
      if (models.multiModel?.enabled === true) {
        for (const route of MODEL_ROUTES) {
          expect(routes.get(route.replace('{m}', '{model}'))).toEqual({
            fn: 'infer',
            authorization: 'AWS_IAM',
          });
        }
      }
      const predictFn = `infer-${models.defaultModel ?? models.models[0]?.name}`;
      expect(routes.get('POST /predict')).toEqual({ fn: predictFn, authorization: 'AWS_IAM' });
    });

    it('has no route without authorisation', () => {
      for (const [key, target] of routeTargets()) {
        expect([key, target.authorization]).toEqual([key, 'AWS_IAM']);
      }
    });
  });

  describe('artefacts', () => {
    it('bundles each function as CommonJS with a source map and without onnxruntime-node', async () => {
      for (const [, fn] of resourcesOfType(template, 'AWS::Lambda::Function')) {
        const zipFile = pkg.artefactOf(fn);
        const zip = await readFile(zipFile);
        const list = listZip(zip);
        const handler = String(fn.Properties?.Handler).replace(/\.[^.]+$/, '.js');
        expect(list.map((e) => e.name).sort()).toEqual([handler, `${handler}.map`]);
        const code = readEntry(zip, list.find((e) => e.name === handler) as ZipEntry).toString('utf8');
        expect(code).toContain('require("onnxruntime-node")');
        expect(code).not.toMatch(/^import\s/m);
        expect(code).toContain(`//# sourceMappingURL=${handler.split('/').pop()}.map`);
        expect(code).not.toContain('onnxruntime_binding.node');
        expect(unzippedBytes(list)).toBeLessThan(BUNDLE_UNZIPPED_BUDGET);
      }
    });

    it('ships a layer with onnxruntime-node for linux x64 only, at nodejs/node_modules', async () => {
      const layer = template.Resources.OnnxruntimeLambdaLayer as CfResource;
      expect(layer.Properties?.CompatibleArchitectures).toEqual(['x86_64']);
      expect(layer.Properties?.CompatibleRuntimes).toEqual(['nodejs22.x']);
      const list = await entries(pkg.artefactOf(layer));
      const names = list.map((e) => e.name).filter((n) => !n.endsWith('/'));
      const packages = new Set(names.map((n) => n.split('/').slice(0, 3).join('/')));
      expect([...packages].sort()).toEqual([
        'nodejs/node_modules/onnxruntime-common',
        'nodejs/node_modules/onnxruntime-node',
      ]);
      const binaries = names.filter((n) => n.includes('/bin/'));
      expect(binaries.sort()).toEqual([
        'nodejs/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1',
        'nodejs/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node',
      ]);
      expect(names.filter((n) => n.endsWith('.d.ts') || n.endsWith('.ts'))).toEqual([]);
    });

    it('keeps the layer and the largest bundle well under Lambda’s 250 MB unzipped', async () => {
      const layer = template.Resources.OnnxruntimeLambdaLayer as CfResource;
      const layerBytes = unzippedBytes(await entries(pkg.artefactOf(layer)));
      let bundleBytes = 0;
      for (const [, fn] of resourcesOfType(template, 'AWS::Lambda::Function')) {
        bundleBytes = Math.max(bundleBytes, unzippedBytes(await entries(pkg.artefactOf(fn))));
      }
      expect(layerBytes).toBeLessThan(LAYER_UNZIPPED_BUDGET);
      expect(layerBytes + bundleBytes).toBeLessThan(LAMBDA_UNZIPPED_LIMIT / 4);
    });
  });
});
