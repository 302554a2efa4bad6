/**
 * batch door: S3 `ObjectCreated` events, continuations of this function and the states of the Step
 * Functions Distributed Map (functions/batch/state-machine.asl.json) to the batch trigger, which starts
 * the state machine for large uploads and hands everything else to the runner. docs/batch.md describes
 * the payloads, the outputs and what the deployment needs.
 */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import type { TriggerResult } from '../../shared/core/batch/distributed-trigger';
import { readBatchEvent } from '../../shared/core/batch/events';
import { type BatchRuntime, createBatchRuntime } from '../../shared/runtime/batch-runtime';
import { configFromEnv } from '../../shared/runtime/runtime';

/** Builds the handler around a batch runtime; tests pass one built from a config object. */
export function createBatchHandler(batch: BatchRuntime) {
  const chain = middy<unknown, TriggerResult, Error, Context>().handler(async (event, context) =>
    batch.trigger.handle(readBatchEvent(event), { remainingMs: () => context.getRemainingTimeInMillis() }),
  );
  chain.use(injectLambdaContext(batch.runtime.logger));
  const metrics = batch.runtime.metrics;
  if (metrics !== undefined) chain.use(logMetrics(metrics, { captureColdStartMetric: true }));
  return chain;
}

// Built on the first invocation, as the infer door does: importing needs no environment, and a bad
// configuration fails the invocation with every bad key (Lambda retries asynchronous events).
let inner: ReturnType<typeof createBatchHandler> | undefined;

/** The Lambda entry point (`functions/batch/handler.handler`). */
export const handler = async (event: unknown, context: Context): Promise<TriggerResult> => {
  inner ??= createBatchHandler(createBatchRuntime(configFromEnv(), { withMetrics: true }));
  return inner(event, context);
};
