/**
 * Composition root of the batch door: the serving runtime (registry, cache, engine, service) plus the
 * batch ports: S3 object I/O, the continuation (an asynchronous invocation of this same function) and,
 * when a state machine is configured, the Step Functions starter for large uploads.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { createLambdaClient, LambdaContinuation } from '../adapters/lambda-continuation';
import { hyparquetCodec } from '../adapters/parquet-codec';
import { createS3Client } from '../adapters/s3-client';
import { S3ObjectIo } from '../adapters/s3-object-io';
import { createStepFunctionsClient, StepFunctionsStarter } from '../adapters/step-functions-starter';
import { BatchJobRunner } from '../core/batch/batch-job';
import { BatchTrigger, type ExecutionStarter } from '../core/batch/distributed-trigger';
import type { BatchLog, BatchObjectStore, Continuation } from '../core/batch/ports';
import type { ServingConfig } from '../core/config';
import { createRuntime, type Runtime, type RuntimeParts } from './runtime';

/** The singletons of a batch instance: the serving runtime, the runner and its object I/O. */
export interface BatchRuntime {
  readonly runtime: Runtime;
  readonly runner: BatchJobRunner;
  /** The door's entry: large uploads to the state machine, everything else to {@link runner}. */
  readonly trigger: BatchTrigger;
  readonly objects: BatchObjectStore;
}

/** Replaceable parts: tests and benchmarks pass a client to a local S3 and an in-process continuation. */
export interface BatchRuntimeParts extends RuntimeParts {
  /** The client for input and output objects; default one built from the repository settings. */
  readonly s3Client?: S3Client;
  readonly objects?: BatchObjectStore;
  readonly continuation?: Continuation;
  /** The client that starts the state machine (`BATCH_STATE_MACHINE_ARN`); default one for the region. */
  readonly stepFunctionsClient?: SFNClient;
  /** Epoch milliseconds, for tests that drive time. */
  readonly now?: () => number;
}

/**
 * Builds the batch door's runtime.
 *
 * @example
 * const batch = createBatchRuntime(configFromEnv(), { withMetrics: true });
 * await batch.runner.handle(readBatchEvent(event), { remainingMs: () => context.getRemainingTimeInMillis() });
 */
export function createBatchRuntime(config: ServingConfig, parts: BatchRuntimeParts = {}): BatchRuntime {
  const runtime = createRuntime(config, parts);
  const objects = parts.objects ?? new S3ObjectIo({ client: parts.s3Client ?? batchS3Client(config) });
  const continuation = parts.continuation ?? selfInvocation();
  const logger = runtime.logger;
  const log: BatchLog = {
    info: (message, fields) => logger.info(message, fields ?? {}),
    warn: (message, fields) => logger.warn(message, fields ?? {}),
  };
  const runner = new BatchJobRunner({
    store: objects,
    registry: runtime.registry,
    service: runtime.service,
    continuation,
    parquet: hyparquetCodec(objects, {
      compression: config.batch.parquetCompression,
      rowGroupRows: config.batch.parquetRowGroupRows,
    }),
    config: config.batch,
    limits: { maxTensorElements: config.limits.maxTensorElements, maxLineBytes: config.limits.maxBodyBytes },
    log,
    ...(parts.now === undefined ? {} : { now: parts.now }),
  });
  const stateMachineArn = config.batch.stateMachineArn;
  let starter: ExecutionStarter | undefined;
  if (stateMachineArn !== undefined) {
    const client = parts.stepFunctionsClient ?? createStepFunctionsClient(regionOf(stateMachineArn));
    starter = new StepFunctionsStarter({ client, stateMachineArn });
  }
  const trigger = new BatchTrigger({
    runner,
    config: config.batch,
    log,
    ...(starter === undefined ? {} : { starter }),
  });
  return { runtime, runner, trigger, objects };
}

/** The state machine's own region (its ARN's fourth field), whatever region the function runs in. */
function regionOf(arn: string): { region?: string } {
  const region = arn.split(':')[3];
  return region === undefined || region === '' ? {} : { region };
}

/** The batch data's S3 client: the model repository's endpoint and region when it is on S3. */
function batchS3Client(config: ServingConfig): S3Client {
  const repo = config.repository;
  return repo.kind === 's3'
    ? createS3Client({ region: repo.region, endpoint: repo.endpoint })
    : createS3Client();
}

/** Invokes this function again (`AWS_LAMBDA_FUNCTION_NAME`, set by Lambda); outside Lambda it cannot. */
function selfInvocation(): Continuation {
  const functionName = process.env.AWS_LAMBDA_FUNCTION_NAME;
  if (functionName === undefined || functionName === '') {
    return {
      schedule: async () => {
        throw new Error(
          'a batch job can only continue in a fresh invocation on Lambda (AWS_LAMBDA_FUNCTION_NAME)',
        );
      },
    };
  }
  return new LambdaContinuation({ client: createLambdaClient(process.env.AWS_REGION), functionName });
}
