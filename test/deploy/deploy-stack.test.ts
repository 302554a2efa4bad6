import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildStack,
  type FunctionDefinition,
  type HttpApiEvent,
  type ModelsFile,
  type S3Event,
  type StackSettings,
} from '../../deploy/stack.cjs';
import { buildLayer } from '../../layers/onnxruntime/build.cjs';
import { planKeys } from '../../shared/core/batch/job-state';
import { outputNames } from '../../shared/core/batch/object-names';

const LAMBDA_UNZIPPED_LIMIT = 262_144_000;
const DEFINITION_FILE = join(__dirname, '..', '..', 'functions', 'batch', 'state-machine.asl.json');
const STATE_MACHINE_ARN = {
  'Fn::Sub': `arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:stateMachine:onnx-serverless-prod-batch`,
};

function settings(models: ModelsFile, overrides: Partial<StackSettings> = {}): StackSettings {
  return {
    service: 'onnx-serverless',
    stage: 'dev',
    auth: 'iam',
    bucket: 'my-models',
    modelPrefix: 'models',
    batchInputPrefix: 'batch/in',
    batchOutputPrefix: 'batch/out',
    models,
    ...overrides,
  };
}

const ONE_MODEL: ModelsFile = { models: [{ name: 'linear' }] };

function routes(fn: FunctionDefinition | undefined): string[] {
  return (fn?.events ?? [])
    .filter((e): e is HttpApiEvent => 'httpApi' in e)
    .map((e) => `${e.httpApi.method} ${e.httpApi.path}`);
}

function statements(stack: ReturnType<typeof buildStack>, fnKey: string): unknown[] {
  const roleId = stack.functions[fnKey]?.role ?? '';
  const policies = stack.resources.Resources[roleId]?.Properties.Policies as {
    PolicyDocument: { Statement: unknown[] };
  }[];
  return policies.flatMap((p) => p.PolicyDocument.Statement);
}

describe('buildStack', () => {
  it('sizes a model from the defaults, the entry and the stage override, in that order', () => {
    const models: ModelsFile = {
      defaults: { memorySize: 1024, ephemeralStorageSize: 2048 },
      models: [
        {
          name: 'linear',
          memorySize: 1536,
          stages: { prod: { memorySize: 4096, provisionedConcurrency: 2 } },
        },
      ],
    };
    const dev = buildStack(settings(models)).functions['infer-linear'];
    const prod = buildStack(settings(models, { stage: 'prod' })).functions['infer-linear'];
    expect([dev?.memorySize, dev?.ephemeralStorageSize, dev?.provisionedConcurrency]).toEqual([
      1536,
      2048,
      undefined,
    ]);
    expect([prod?.memorySize, prod?.provisionedConcurrency, prod?.name]).toEqual([
      4096,
      2,
      'onnx-serverless-prod-infer-linear',
    ]);
    expect(dev?.environment).toEqual({ ONNX_SERVE_MODEL: 'linear', ONNX_SERVE_DISK_CACHE_MB: '1536' });
  });

  it("gives a model's function the precision variant it serves, per stage", () => {
    const models = {
      models: [{ name: 'mlp', variant: 'int8', stages: { prod: { variant: 'int4' } } }, { name: 'plain' }],
    };
    const dev = buildStack(settings(models)).functions;
    const prod = buildStack(settings(models, { stage: 'prod' })).functions;
    expect(dev['infer-mlp']?.environment).toMatchObject({
      ONNX_SERVE_MODEL: 'mlp',
      ONNX_SERVE_VARIANT: 'int8',
    });
    expect(prod['infer-mlp']?.environment).toMatchObject({ ONNX_SERVE_VARIANT: 'int4' });
    expect(dev['infer-plain']?.environment).not.toHaveProperty('ONNX_SERVE_VARIANT');
  });

  it('sends /predict and the server-wide routes to the first model when there is no multi-model function', () => {
    const stack = buildStack(settings({ models: [{ name: 'a' }, { name: 'b' }] }));
    expect(routes(stack.functions['infer-a'])).toEqual(
      expect.arrayContaining(['POST /predict', 'GET /v2', 'GET /v2/health/live', 'GET /v2/health/ready']),
    );
    expect(routes(stack.functions['infer-b'])).not.toContain('POST /predict');
    expect(stack.functions.infer).toBeUndefined();
  });

  it('gives a container-image model its image, its environment and neither handler nor layer', () => {
    const uri = `123456789012.dkr.ecr.us-east-1.amazonaws.com/onnx-serverless@sha256:${'a'.repeat(64)}`;
    const models: ModelsFile = {
      defaults: { environment: { ONNX_SERVE_LOG_LEVEL: 'WARN' } },
      models: [
        {
          name: 'big',
          imageUri: uri,
          environment: { ONNX_SERVE_MODEL_REPOSITORY: '/opt/models', ONNX_SERVE_MODEL: 'other' },
        },
      ],
    };
    const fn = buildStack(settings(models)).functions['infer-big'];
    expect(fn?.image).toEqual({ uri });
    expect(fn?.handler).toBeUndefined();
    expect(fn?.layers).toBeUndefined();
    expect(fn?.environment).toEqual({
      ONNX_SERVE_DISK_CACHE_MB: '768',
      ONNX_SERVE_LOG_LEVEL: 'WARN',
      ONNX_SERVE_MODEL_REPOSITORY: '/opt/models',
      ONNX_SERVE_MODEL: 'big',
    });
  });

  it('declares the JWT authoriser and uses it on every route when auth is jwt', () => {
    const stack = buildStack(
      settings(ONE_MODEL, {
        auth: 'jwt',
        jwt: { issuerUrl: 'https://issuer.example.com/', audience: 'a, b' },
      }),
    );
    expect(stack.httpApiAuthorizers).toEqual({
      jwt: {
        type: 'jwt',
        identitySource: '$request.header.Authorization',
        issuerUrl: 'https://issuer.example.com/',
        audience: ['a', 'b'],
      },
    });
    for (const event of stack.functions['infer-linear']?.events ?? []) {
      expect((event as HttpApiEvent).httpApi.authorizer).toEqual({ name: 'jwt' });
    }
  });

  it('builds the batch function with its trigger, its environment and exactly its permissions', () => {
    const stack = buildStack(
      settings({ ...ONE_MODEL, batch: { enabled: true, suffix: '.jsonl' } }, { stage: 'prod' }),
      { batchSourceExists: true },
    );
    const batch = stack.functions.batch;
    expect(batch?.handler).toBe('functions/batch/handler.handler');
    expect(batch?.timeout).toBe(900);
    expect(batch?.recursiveLoop).toBe('Allow');
    expect([batch?.maximumRetryAttempts, batch?.maximumEventAge]).toEqual([2, 21600]);
    expect(batch?.destinations).toEqual({
      onFailure: { type: 'sqs', arn: { 'Fn::GetAtt': ['BatchFailureQueue', 'Arn'] } },
    });
    expect(stack.resources.Resources.BatchFailureQueue?.Type).toBe('AWS::SQS::Queue');
    expect(batch?.environment).toMatchObject({
      NODE_OPTIONS: '--enable-source-maps --max-semi-space-size=2',
      ONNX_SERVE_BATCH_INPUT_PREFIX: 's3://my-models/batch/in',
      ONNX_SERVE_BATCH_OUTPUT_PREFIX: 's3://my-models/batch/out',
    });
    expect(batch?.events).toEqual([
      {
        s3: {
          bucket: 'my-models',
          event: 's3:ObjectCreated:*',
          rules: [{ prefix: 'batch/in/' }, { suffix: '.jsonl' }],
          existing: false,
        },
      },
    ]);
    const sub = (text: string) => ({ 'Fn::Sub': text });
    expect(statements(stack, 'batch')).toEqual([
      {
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: sub(
          `arn:\${AWS::Partition}:logs:\${AWS::Region}:\${AWS::AccountId}:log-group:/aws/lambda/onnx-serverless-prod-batch:*`,
        ),
      },
      {
        Effect: 'Allow',
        Action: ['s3:GetObject', 's3:GetObjectVersion'],
        Resource: sub(`arn:\${AWS::Partition}:s3:::my-models/batch/in/*`),
      },
      {
        Effect: 'Allow',
        Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
        Resource: sub(`arn:\${AWS::Partition}:s3:::my-models/batch/out/*`),
      },
      {
        Effect: 'Allow',
        Action: ['s3:GetObject'],
        Resource: sub(`arn:\${AWS::Partition}:s3:::my-models/models/*`),
      },
      {
        Effect: 'Allow',
        Action: ['s3:ListBucket'],
        Resource: sub(`arn:\${AWS::Partition}:s3:::my-models`),
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
        Resource: sub(
          `arn:\${AWS::Partition}:lambda:\${AWS::Region}:\${AWS::AccountId}:function:onnx-serverless-prod-batch`,
        ),
      },
      { Effect: 'Allow', Action: ['states:StartExecution'], Resource: STATE_MACHINE_ARN },
      {
        Effect: 'Allow',
        Action: ['states:DescribeExecution'],
        Resource: sub(
          `arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:execution:onnx-serverless-prod-batch:*`,
        ),
      },
    ]);
  });

  it('creates the batch state machine on the batch function, with a role of its own, started by the function', () => {
    const stack = buildStack(settings({ ...ONE_MODEL, batch: { enabled: true } }, { stage: 'prod' }), {
      batchSourceExists: true,
    });
    const resources = stack.resources.Resources;
    expect(resources.BatchStateMachine?.Type).toBe('AWS::StepFunctions::StateMachine');
    expect(resources.BatchStateMachine?.Properties).toMatchObject({
      StateMachineName: 'onnx-serverless-prod-batch',
      StateMachineType: 'STANDARD',
      RoleArn: { 'Fn::GetAtt': ['BatchStateMachineRole', 'Arn'] },
      DefinitionSubstitutions: { BatchFunctionArn: { 'Fn::GetAtt': ['BatchLambdaFunction', 'Arn'] } },
    });
    expect(JSON.parse(String(resources.BatchStateMachine?.Properties.DefinitionString))).toEqual(
      JSON.parse(readFileSync(DEFINITION_FILE, 'utf8')),
    );
    expect(stack.functions.batch?.environment.ONNX_SERVE_BATCH_STATE_MACHINE_ARN).toEqual(STATE_MACHINE_ARN);
    const policies = resources.BatchStateMachineRole?.Properties.Policies as {
      PolicyDocument: { Statement: { Action: string[]; Resource: unknown }[] };
    }[];
    const statements = policies.flatMap((p) => p.PolicyDocument.Statement);
    expect(statements.map((s) => s.Action)).toEqual([
      ['lambda:InvokeFunction'],
      ['s3:GetObject'],
      ['states:StartExecution'],
      ['states:DescribeExecution', 'states:StopExecution'],
    ]);
    expect(statements[0]?.Resource).toEqual({ 'Fn::GetAtt': ['BatchLambdaFunction', 'Arn'] });
    expect(statements[2]?.Resource).toEqual(STATE_MACHINE_ARN);
    // The one object the state machine reads is the shard list the plan writes: the grant must cover the
    // key the batch job names it with, and nothing of the input.
    const resource = statements[1]?.Resource as { 'Fn::Sub': string } | undefined;
    const glob = (resource?.['Fn::Sub'] ?? '').replace(`arn:\${AWS::Partition}:s3:::my-models/`, '');
    const names = outputNames('batch/out', 'linear', 'a/day 1', '9b2cf535f27731c974343645a3985328', false);
    const matches = (key: string) =>
      new RegExp(
        `^${glob
          .split('*')
          .map((part) => part.replace(/[.?+^$()[\]{}|\\]/g, '\\$&'))
          .join('.*')}$`,
      ).test(key);
    expect(matches(planKeys(names.work).items)).toBe(true);
    expect(matches(planKeys(names.work).plan)).toBe(false);
    expect(matches('batch/in/linear/a/shards.json')).toBe(false);
  });

  it('attaches the batch trigger to an existing bucket, and creates none, when createBucket is false', () => {
    const stack = buildStack(
      settings({ ...ONE_MODEL, batch: { enabled: true } }, { createBucket: 'false' }),
      {
        batchSourceExists: true,
      },
    );
    expect((stack.functions.batch?.events[0] as S3Event | undefined)?.s3.existing).toBe(true);
    expect(Object.values(stack.resources.Resources).map((r) => r.Type)).not.toContain('AWS::S3::Bucket');
  });

  it.each([
    [
      'an output prefix inside the input prefix',
      settings({ ...ONE_MODEL, batch: { enabled: true } }, { batchOutputPrefix: 'batch/in/out' }),
      /overlap/,
    ],
    [
      'a batch function whose source is missing',
      settings({ ...ONE_MODEL, batch: { enabled: true } }),
      /does not exist/,
    ],
    ['jwt without an issuer', settings(ONE_MODEL, { auth: 'jwt' }), /jwtIssuerUrl/],
    ['an unknown auth mode', settings(ONE_MODEL, { auth: 'open' }), /auth 'open'/],
    ['a model listed twice', settings({ models: [{ name: 'a' }, { name: 'a' }] }), /listed twice/],
    ['an invalid model name', settings({ models: [{ name: '../x' }] }), /not a valid model name/],
    ['a timeout over the HTTP API limit', settings({ models: [{ name: 'a', timeout: 60 }] }), /timeout/],
    ['a default model that is not listed', settings({ ...ONE_MODEL, defaultModel: 'b' }), /defaultModel/],
    ['a name over 64 characters', settings({ models: [{ name: 'm'.repeat(60) }] }), /64 characters/],
    ['an invalid bucket', settings(ONE_MODEL, { bucket: 'My_Bucket' }), /bucket/],
    ['nothing to deploy', settings({ models: [] }), /nothing to deploy/],
    ['a variant that is not a name', settings({ models: [{ name: 'a', variant: 'Int 8' }] }), /variant/],
    [
      'a number as an environment value',
      settings({ models: [{ name: 'a', environment: { X: 1 as unknown as string } }] }),
      /environment X/,
    ],
  ])('refuses %s', (_what, input, message) => {
    expect(() => buildStack(input, { batchSourceExists: false })).toThrow(message);
  });
});

describe('buildLayer', () => {
  let out: string;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'ort-layer-'));
  });

  afterAll(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it.each([
    ['x86_64', 'x64'],
    ['arm64', 'arm64'],
  ] as const)('keeps only the Linux %s binaries, well under Lambda’s limit', async (arch, nodeArch) => {
    const layer = await buildLayer({ arch, outDir: out });
    expect(layer.dir).toBe(join(out, arch));
    const binaries = layer.files.filter((file) => file.includes('/bin/'));
    expect(binaries.sort()).toEqual([
      `nodejs/node_modules/onnxruntime-node/bin/napi-v6/linux/${nodeArch}/libonnxruntime.so.1`,
      `nodejs/node_modules/onnxruntime-node/bin/napi-v6/linux/${nodeArch}/onnxruntime_binding.node`,
    ]);
    expect(layer.files).toContain('nodejs/node_modules/onnxruntime-common/dist/cjs/package.json');
    expect(layer.files.every((file) => file.startsWith('nodejs/node_modules/'))).toBe(true);
    expect(layer.bytes).toBeLessThan(LAMBDA_UNZIPPED_LIMIT / 4);
  });

  it('refuses an architecture Lambda does not have', async () => {
    await expect(buildLayer({ arch: 'riscv64' as 'arm64', outDir: out })).rejects.toThrow(
      /unknown architecture/,
    );
  });
});
