'use strict';
/**
 * Generates the parts of serverless.yml that depend on the deploy-time model list (deploy/models.yml):
 * one infer function per model with its HTTP API routes, the optional multi-model infer function, the
 * optional batch function with its S3 trigger and the Step Functions state machine that scores large
 * inputs on it, one least-privilege IAM role per function and one for the state machine, the bucket,
 * and the JWT authoriser when one is chosen.
 *
 * serverless.yml reads it as `${file(./deploy/stack.cjs):functions}` (and `:resources`,
 * `:httpApiAuthorizers`): the framework calls the exported function, which reads `custom.deploy` and
 * hands it to the pure {@link buildStack}. The tests call {@link buildStack} with plain objects.
 */
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');

const ROOT = join(__dirname, '..');
const INFER_HANDLER = 'functions/infer/handler.handler';
const BATCH_HANDLER = 'functions/batch/handler.handler';
const BATCH_SOURCE = 'functions/batch/handler.ts';
const STATE_MACHINE_SOURCE = 'functions/batch/state-machine.asl.json';
const STATE_MACHINE = 'BatchStateMachine';
const STATE_MACHINE_ROLE = 'BatchStateMachineRole';
// The framework's logical id of the function `batch` (its naming.getLambdaLogicalId).
const BATCH_FUNCTION = 'BatchLambdaFunction';
const LAYER_REF = { Ref: 'OnnxruntimeLambdaLayer' };
const BATCH_FAILURE_QUEUE = 'BatchFailureQueue';
const BATCH_NODE_OPTIONS = '--enable-source-maps --max-semi-space-size=2';
const AUTH_MODES = ['iam', 'jwt', 'none'];
const JWT_AUTHORIZER = 'jwt';

// The serving code's rule (shared/core/names.ts), repeated here because the framework loads plain JS.
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

/** HTTP API integrations give up after 30 s, so a longer Lambda timeout would only burn money. */
const HTTP_TIMEOUT_MAX = 29;

const FUNCTION_DEFAULTS = Object.freeze({
  memorySize: 2048,
  timeout: HTTP_TIMEOUT_MAX,
  ephemeralStorageSize: 1024,
});

const BATCH_DEFAULTS = Object.freeze({
  memorySize: 3008,
  timeout: 900,
  ephemeralStorageSize: 2048,
});

/** Open Inference Protocol routes of one model, relative to `/v2/models/<model>`. */
const MODEL_ROUTES = Object.freeze([
  ['GET', ''],
  ['GET', '/ready'],
  ['POST', '/infer'],
  ['POST', '/predict'],
  ['GET', '/versions/{version}'],
  ['GET', '/versions/{version}/ready'],
  ['POST', '/versions/{version}/infer'],
  ['POST', '/versions/{version}/predict'],
]);

/** Server-wide routes, answered by the multi-model function or else by the default model's function. */
const SERVER_ROUTES = Object.freeze([
  ['GET', '/v2'],
  ['GET', '/v2/health/live'],
  ['GET', '/v2/health/ready'],
]);

const MODEL_ROUTE_BASE = (model) => `/v2/models/${model}`;

function fail(message) {
  throw new Error(`deploy/models.yml or its parameters: ${message}`);
}

function pascal(text) {
  return text
    .split(/[^A-Za-z0-9]+/)
    .filter((part) => part !== '')
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('');
}

/** The logical id the framework gives the bucket of an `s3` event (its naming.getBucketLogicalId). */
function bucketLogicalId(bucket) {
  const alnum = bucket.replace(/[^0-9A-Za-z]/g, '');
  return `S3Bucket${alnum[0].toUpperCase()}${alnum.slice(1)}`;
}

function sub(text) {
  return { 'Fn::Sub': text };
}

function s3Arn(bucket, key) {
  return sub(`arn:\${AWS::Partition}:s3:::${bucket}${key === undefined ? '' : `/${key}`}`);
}

function logStatement(functionName) {
  return {
    Effect: 'Allow',
    Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
    Resource: sub(
      `arn:\${AWS::Partition}:logs:\${AWS::Region}:\${AWS::AccountId}:log-group:/aws/lambda/${functionName}:*`,
    ),
  };
}

/**
 * Read access to the objects under `prefix`, and listing limited to it. The listing right is there for
 * S3's answer to a missing key: without s3:ListBucket it is 403, which the store cannot tell from a
 * real denial, so a missing model version would be a 503 instead of a 404.
 */
function readPrefixStatements(bucket, prefix) {
  return [
    { Effect: 'Allow', Action: ['s3:GetObject'], Resource: s3Arn(bucket, `${prefix}/*`) },
    listStatement(bucket, [prefix]),
  ];
}

function listStatement(bucket, prefixes) {
  return {
    Effect: 'Allow',
    Action: ['s3:ListBucket'],
    Resource: s3Arn(bucket),
    Condition: { StringLike: { 's3:prefix': prefixes.map((prefix) => `${prefix}/*`) } },
  };
}

/** The batch state machine's ARN, named like the batch function (`<service>-<stage>-batch`). */
function stateMachineArn(name) {
  return sub(`arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:stateMachine:${name}`);
}

/** Executions of the batch state machine: `:*` its own, `/*` the Distributed Map's child executions. */
function executionArn(name, suffix) {
  return sub(`arn:\${AWS::Partition}:states:\${AWS::Region}:\${AWS::AccountId}:execution:${name}${suffix}`);
}

/** The Amazon States Language definition, `${BatchFunctionArn}` left to `DefinitionSubstitutions`. */
function readDefinition() {
  return JSON.stringify(JSON.parse(readFileSync(join(ROOT, STATE_MACHINE_SOURCE), 'utf8')));
}

/**
 * The state machine's own role: invoke the batch function (plan, shards, commit) and nothing else, read
 * the shard list the plan wrote (the Distributed Map's ItemReader), and run its Distributed Map (start
 * child executions of itself, describe and stop them). The function, not the state machine, reads the
 * input and writes the outputs.
 */
function stateMachineRole(name, bucket, output) {
  return {
    Type: 'AWS::IAM::Role',
    Properties: {
      AssumeRolePolicyDocument: {
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Principal: { Service: 'states.amazonaws.com' },
            Action: 'sts:AssumeRole',
            // The confused-deputy guard: only Step Functions acting for this account assumes it.
            Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
          },
        ],
      },
      Policies: [
        {
          PolicyName: `${name}-state-machine-least-privilege`,
          PolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Action: ['lambda:InvokeFunction'],
                Resource: { 'Fn::GetAtt': [BATCH_FUNCTION, 'Arn'] },
              },
              // <output>/<model>/<name>.parts/<etag>/shards.json (shared/core/batch/job-state.ts, planKeys).
              {
                Effect: 'Allow',
                Action: ['s3:GetObject'],
                Resource: s3Arn(bucket, `${output}/*.parts/*/shards.json`),
              },
              { Effect: 'Allow', Action: ['states:StartExecution'], Resource: stateMachineArn(name) },
              {
                Effect: 'Allow',
                Action: ['states:DescribeExecution', 'states:StopExecution'],
                Resource: executionArn(name, '/*'),
              },
            ],
          },
        },
      ],
    },
  };
}

function role(functionName, statements) {
  return {
    Type: 'AWS::IAM::Role',
    Properties: {
      AssumeRolePolicyDocument: {
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
        ],
      },
      Policies: [
        {
          PolicyName: `${functionName}-least-privilege`,
          PolicyDocument: { Version: '2012-10-17', Statement: [logStatement(functionName), ...statements] },
        },
      ],
    },
  };
}

function pick(source, keys) {
  const out = {};
  for (const key of keys) {
    if (source[key] !== undefined && source[key] !== null) out[key] = source[key];
  }
  return out;
}

/** As shared/core/model-config.ts VARIANT_NAME: what ONNX_SERVE_VARIANT accepts. */
const VARIANT_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

const SIZING_KEYS = [
  'memorySize',
  'timeout',
  'ephemeralStorageSize',
  'reservedConcurrency',
  'provisionedConcurrency',
  'imageUri',
  'description',
];

/** Defaults, then the entry, then the entry's override for this stage; `environment` maps are merged. */
function sizing(defaults, entry, stage) {
  const override = entry.stages?.[stage] ?? {};
  const environment = { ...defaults.environment, ...entry.environment, ...override.environment };
  for (const [key, value] of Object.entries(environment)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) || typeof value !== 'string') {
      fail(`environment ${key}: names are identifiers and values strings (quote numbers in YAML)`);
    }
  }
  return { ...defaults, ...pick(entry, SIZING_KEYS), ...pick(override, SIZING_KEYS), environment };
}

function checkInt(what, value, min, max) {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    fail(`${what} must be an integer from ${min} to ${max}, not ${JSON.stringify(value)}`);
  }
}

function checkSizing(what, size, maxTimeout) {
  checkInt(`${what}.memorySize`, size.memorySize, 128, 10240);
  checkInt(`${what}.timeout`, size.timeout, 1, maxTimeout);
  checkInt(`${what}.ephemeralStorageSize`, size.ephemeralStorageSize, 512, 10240);
  checkInt(`${what}.reservedConcurrency`, size.reservedConcurrency, 0, 100000);
  checkInt(`${what}.provisionedConcurrency`, size.provisionedConcurrency, 0, 100000);
}

/** The /tmp model cache gets three quarters of /tmp; the rest is for whatever else writes there. */
function diskCacheMb(ephemeralStorageSize) {
  return String(Math.floor((ephemeralStorageSize * 3) / 4));
}

function functionBody(size, functionName, roleId, environment) {
  const body = {
    name: functionName,
    memorySize: size.memorySize,
    timeout: size.timeout,
    ephemeralStorageSize: size.ephemeralStorageSize,
    role: roleId,
    environment: {
      ONNX_SERVE_DISK_CACHE_MB: diskCacheMb(size.ephemeralStorageSize),
      ...size.environment,
      ...environment,
    },
  };
  if (size.description !== undefined) body.description = size.description;
  if (size.reservedConcurrency !== undefined) body.reservedConcurrency = size.reservedConcurrency;
  if (size.provisionedConcurrency !== undefined && size.provisionedConcurrency > 0) {
    body.provisionedConcurrency = size.provisionedConcurrency;
  }
  if (size.imageUri === undefined) {
    body.handler = INFER_HANDLER;
    body.layers = [LAYER_REF];
  } else {
    // A container image brings its own onnxruntime (containers/lambda/Dockerfile): no handler, no layer.
    body.image = { uri: size.imageUri };
  }
  return body;
}

function httpEvents(routes, authorizer) {
  return routes.map(([method, path]) => ({
    httpApi: { method, path, ...(authorizer === undefined ? {} : { authorizer }) },
  }));
}

function normalisePrefix(what, value) {
  const prefix = String(value ?? '').replace(/^\/+|\/+$/g, '');
  if (!PREFIX.test(prefix) || prefix.split('/').some((segment) => segment === '.' || segment === '..')) {
    fail(`${what} '${value}' must be a non-empty key prefix such as 'models' or 'batch/in'`);
  }
  return prefix;
}

function overlaps(a, b) {
  return a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

function isTrue(value) {
  return value === true || value === 'true';
}

/**
 * Builds the functions, resources and authorisers of the stack from the `custom.deploy` settings.
 * Throws an Error naming the setting at fault.
 *
 * @example
 * const stack = buildStack({ service: 'onnx-serverless', stage: 'dev', bucket: 'my-models', ... });
 * stack.functions['infer-linear'].environment.ONNX_SERVE_MODEL; // 'linear'
 */
function buildStack(settings, options = {}) {
  const batchSourceExists = options.batchSourceExists ?? existsSync(join(ROOT, BATCH_SOURCE));
  const { service, stage } = settings;
  const catalogue = settings.models ?? {};
  const bucket = String(settings.bucket ?? '');
  if (!BUCKET_NAME.test(bucket) || bucket.includes('..'))
    fail(`bucket '${bucket}' is not a valid S3 bucket name`);
  const createBucket = settings.createBucket === undefined ? true : isTrue(settings.createBucket);
  const modelPrefix = normalisePrefix('modelPrefix', settings.modelPrefix);
  const auth = String(settings.auth ?? 'iam');
  if (!AUTH_MODES.includes(auth)) fail(`auth '${auth}' must be one of ${AUTH_MODES.join(', ')}`);

  const httpApiAuthorizers = {};
  let authorizer;
  if (auth === 'iam') authorizer = { type: 'aws_iam' };
  if (auth === 'jwt') {
    const issuerUrl = String(settings.jwt?.issuerUrl ?? '');
    const audience = String(settings.jwt?.audience ?? '')
      .split(',')
      .map((a) => a.trim())
      .filter((a) => a !== '');
    if (!/^https:\/\/\S+$/.test(issuerUrl))
      fail(`auth 'jwt' needs jwtIssuerUrl, an https URL (got '${issuerUrl}')`);
    if (audience.length === 0) fail(`auth 'jwt' needs jwtAudience, one or more comma-separated audiences`);
    httpApiAuthorizers[JWT_AUTHORIZER] = {
      type: 'jwt',
      identitySource: '$request.header.Authorization',
      issuerUrl,
      audience,
    };
    authorizer = { name: JWT_AUTHORIZER };
  }

  const functions = {};
  const resources = {};
  const roleIds = new Set();
  const prefixOf = (fnKey) => `${service}-${stage}-${fnKey}`;

  const addFunction = (fnKey, body, statements) => {
    if (functions[fnKey] !== undefined) fail(`two functions would be named '${fnKey}'`);
    const functionName = prefixOf(fnKey);
    if (functionName.length > 64) {
      fail(
        `the Lambda function name '${functionName}' is over 64 characters: shorten the service, stage or model name`,
      );
    }
    const roleId = `${pascal(fnKey)}Role`;
    if (roleIds.has(roleId)) fail(`two functions would share the IAM role '${roleId}'`);
    roleIds.add(roleId);
    functions[fnKey] = body(functionName, roleId);
    resources[roleId] = role(functionName, statements(functionName));
  };

  const models = catalogue.models ?? [];
  if (!Array.isArray(models)) fail('models must be a list');
  const defaults = {
    ...FUNCTION_DEFAULTS,
    ...pick(catalogue.defaults ?? {}, SIZING_KEYS),
    environment: catalogue.defaults?.environment,
  };
  const modelNames = new Set();
  for (const entry of models) {
    const model = entry?.name;
    if (typeof model !== 'string' || !MODEL_NAME.test(model) || model.includes('..')) {
      fail(`'${model}' is not a valid model name (letters, digits, '_', '-', '.'; at most 128)`);
    }
    if (modelNames.has(model)) fail(`model '${model}' is listed twice`);
    modelNames.add(model);
    const size = sizing(defaults, entry, stage);
    checkSizing(`models.${model}`, size, HTTP_TIMEOUT_MAX);
    const variant = entry.stages?.[stage]?.variant ?? entry.variant ?? undefined;
    if (variant !== undefined && (typeof variant !== 'string' || !VARIANT_NAME.test(variant))) {
      fail(
        `models.${model}.variant: '${variant}' is not a variant name (lowercase letters, digits, '-', '_')`,
      );
    }
    const fnKey = `infer-${model.replace(/[^A-Za-z0-9-_]/g, '-')}`;
    const routes = MODEL_ROUTES.map(([method, path]) => [method, `${MODEL_ROUTE_BASE(model)}${path}`]);
    addFunction(
      fnKey,
      (functionName, roleId) => ({
        description: `ONNX inference, model ${model}`,
        ...functionBody(size, functionName, roleId, {
          ONNX_SERVE_MODEL: model,
          // The precision variant this function serves (docs/models.md "Smaller models").
          ...(variant === undefined ? {} : { ONNX_SERVE_VARIANT: variant }),
        }),
        events: httpEvents(routes, authorizer),
      }),
      () => readPrefixStatements(bucket, `${modelPrefix}/${model}`),
    );
  }

  const defaultModel = catalogue.defaultModel ?? undefined;
  if (defaultModel !== undefined && !modelNames.has(defaultModel)) {
    fail(`defaultModel '${defaultModel}' is not in the models list`);
  }
  const multi = catalogue.multiModel ?? {};
  const multiEnabled = isTrue(multi.enabled);
  if (!multiEnabled && models.length === 0)
    fail('nothing to deploy: no models and multiModel.enabled is false');

  if (multiEnabled) {
    const size = sizing(defaults, multi, stage);
    checkSizing('multiModel', size, HTTP_TIMEOUT_MAX);
    const routes = [
      ...SERVER_ROUTES,
      ...MODEL_ROUTES.map(([method, path]) => [method, `${MODEL_ROUTE_BASE('{model}')}${path}`]),
    ];
    addFunction(
      'infer',
      (functionName, roleId) => ({
        description: 'ONNX inference, every model of the repository',
        ...functionBody(size, functionName, roleId, {}),
        events: httpEvents(routes, authorizer),
      }),
      () => readPrefixStatements(bucket, modelPrefix),
    );
  }
  // /predict needs a function pinned to one model; the server-wide routes go to it when no multi-model
  // function takes them.
  const anchor = defaultModel ?? (multiEnabled ? undefined : models[0]?.name);
  if (anchor !== undefined) {
    const fn = functions[`infer-${anchor.replace(/[^A-Za-z0-9-_]/g, '-')}`];
    fn.events.push(...httpEvents([['POST', '/predict'], ...(multiEnabled ? [] : SERVER_ROUTES)], authorizer));
  }

  const batch = catalogue.batch ?? {};
  const batchEnabled = isTrue(batch.enabled);
  let batchInput = '';
  if (batchEnabled) {
    const input = normalisePrefix('batchInputPrefix', settings.batchInputPrefix);
    const output = normalisePrefix('batchOutputPrefix', settings.batchOutputPrefix);
    for (const [a, b] of [
      [input, output],
      [input, modelPrefix],
      [output, modelPrefix],
    ]) {
      // An output under the input prefix would trigger the function on its own results, forever.
      if (overlaps(a, b))
        fail(`the prefixes '${a}' and '${b}' overlap; model, input and output must be apart`);
    }
    if (!batchSourceExists) fail(`batch.enabled is true but ${BATCH_SOURCE} does not exist`);
    batchInput = input;
    const size = sizing(BATCH_DEFAULTS, batch, stage);
    checkSizing('batch', size, 900);
    const rules = [{ prefix: `${input}/` }];
    if (typeof batch.suffix === 'string' && batch.suffix !== '') rules.push({ suffix: batch.suffix });
    addFunction(
      'batch',
      (functionName, roleId) => {
        const body = functionBody(size, functionName, roleId, {
          ONNX_SERVE_BATCH_INPUT_PREFIX: `s3://${bucket}/${input}`,
          ONNX_SERVE_BATCH_OUTPUT_PREFIX: `s3://${bucket}/${output}`,
          // Built from the name, not a reference: the state machine refers to this function already.
          ONNX_SERVE_BATCH_STATE_MACHINE_ARN: stateMachineArn(functionName),
        });
        delete body.image;
        return {
          description: 'ONNX batch inference over S3 objects',
          ...body,
          // A small young generation keeps the peak memory of long streams down at the same speed
          // (docs/batch.md); an entry's own NODE_OPTIONS wins.
          environment: { NODE_OPTIONS: BATCH_NODE_OPTIONS, ...body.environment },
          handler: BATCH_HANDLER,
          layers: [LAYER_REF],
          // It continues long inputs by invoking itself: Lambda's recursive-loop detection would stop the
          // chain after 16 links, so it is allowed here; reserved concurrency and the function's own
          // continuation bound are the guard rails.
          recursiveLoop: 'Allow',
          // S3 events and continuations are asynchronous invocations: Lambda retries a failure twice, then
          // the event goes to the failure queue, where a job that failed for good can be seen.
          maximumRetryAttempts: 2,
          maximumEventAge: 21600,
          destinations: { onFailure: { type: 'sqs', arn: { 'Fn::GetAtt': [BATCH_FAILURE_QUEUE, 'Arn'] } } },
          events: [{ s3: { bucket, event: 's3:ObjectCreated:*', rules, existing: !createBucket } }],
        };
      },
      (functionName) => [
        // Inputs are read by ETag and, in a versioned bucket, by the version the event names.
        {
          Effect: 'Allow',
          Action: ['s3:GetObject', 's3:GetObjectVersion'],
          Resource: s3Arn(bucket, `${input}/*`),
        },
        // Results, and the job's parts and checkpoints beside them: read back, concatenated, deleted.
        {
          Effect: 'Allow',
          Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
          Resource: s3Arn(bucket, `${output}/*`),
        },
        { Effect: 'Allow', Action: ['s3:GetObject'], Resource: s3Arn(bucket, `${modelPrefix}/*`) },
        // A missing checkpoint or manifest is routine for this function: S3 says 404 only to a lister.
        listStatement(bucket, [input, output, modelPrefix]),
        {
          // With a custom role the framework grants nothing for the destination: it is granted here.
          Effect: 'Allow',
          Action: ['sqs:SendMessage'],
          Resource: { 'Fn::GetAtt': [BATCH_FAILURE_QUEUE, 'Arn'] },
        },
        {
          // Long inputs continue in a fresh invocation of this same function, and nothing else.
          Effect: 'Allow',
          Action: ['lambda:InvokeFunction'],
          Resource: sub(
            `arn:\${AWS::Partition}:lambda:\${AWS::Region}:\${AWS::AccountId}:function:${functionName}`,
          ),
        },
        // Large uploads start the state machine, under a name derived from the object version; a
        // re-delivered event reads the execution of that name back (docs/batch.md).
        { Effect: 'Allow', Action: ['states:StartExecution'], Resource: stateMachineArn(functionName) },
        {
          Effect: 'Allow',
          Action: ['states:DescribeExecution'],
          Resource: executionArn(functionName, ':*'),
        },
      ],
    );
    const functionName = prefixOf('batch');
    resources[STATE_MACHINE_ROLE] = stateMachineRole(functionName, bucket, output);
    resources[STATE_MACHINE] = {
      Type: 'AWS::StepFunctions::StateMachine',
      Properties: {
        StateMachineName: functionName,
        StateMachineType: 'STANDARD',
        RoleArn: { 'Fn::GetAtt': [STATE_MACHINE_ROLE, 'Arn'] },
        // A string, not an object: the framework drops null values from resources, and `"ResultPath":
        // null` (discard the map's results) would become "replace the state with them".
        DefinitionString: readDefinition(),
        DefinitionSubstitutions: { BatchFunctionArn: { 'Fn::GetAtt': [BATCH_FUNCTION, 'Arn'] } },
      },
    };
  }

  const outputs = {};
  if (batchEnabled) {
    resources[BATCH_FAILURE_QUEUE] = {
      Type: 'AWS::SQS::Queue',
      Properties: { SqsManagedSseEnabled: true, MessageRetentionPeriod: 1209600 },
    };
    outputs.BatchFailureQueueUrl = {
      Description: 'Batch events that failed three times',
      Value: { Ref: BATCH_FAILURE_QUEUE },
    };
    outputs.BatchInput = {
      Description: 'Upload batch inputs here',
      Value: `s3://${bucket}/${batchInput}/<model>/`,
    };
    outputs.BatchStateMachineArn = {
      Description: 'Scores uploads of ONNX_SERVE_BATCH_DISTRIBUTED_MIN_MB and more (Distributed Map)',
      Value: { Ref: STATE_MACHINE },
    };
  }

  if (createBucket) {
    resources[bucketLogicalId(bucket)] = {
      Type: 'AWS::S3::Bucket',
      // Models outlive the stack: removing the stack must not delete them.
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        BucketName: bucket,
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
        // A batch commit killed half way leaves a multipart upload behind, billed until aborted.
        LifecycleConfiguration: {
          Rules: [
            {
              Id: 'abort-incomplete-multipart-uploads',
              Status: 'Enabled',
              AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
            },
          ],
        },
      },
    };
  }

  return {
    functions,
    resources: { Resources: resources, Outputs: outputs },
    httpApiAuthorizers,
  };
}

/** The framework's entry: `${file(./deploy/stack.cjs):functions}` calls this and takes one property. */
async function resolveStack({ resolveConfigurationProperty }) {
  const settings = await resolveConfigurationProperty(['custom', 'deploy']);
  if (settings === null || typeof settings !== 'object')
    throw new Error('serverless.yml: custom.deploy is missing');
  return buildStack(settings);
}

module.exports = resolveStack;
module.exports.buildStack = buildStack;
module.exports.bucketLogicalId = bucketLogicalId;
module.exports.MODEL_ROUTES = MODEL_ROUTES;
module.exports.SERVER_ROUTES = SERVER_ROUTES;
