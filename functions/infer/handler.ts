/**
 * infer door: API Gateway (REST v1, HTTP API v2) and Function URL events to the serving core. Pinned to
 * one model with ONNX_SERVE_MODEL (a per-model function), or serving the whole repository.
 */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import { withDeadline } from '../../shared/core/deadline';
import {
  InferenceTimeoutError,
  type ResponseTooLargeError,
  type ServingError,
} from '../../shared/core/errors';
import { errorResponse, type HttpResponse } from '../../shared/core/http-app';
import { configFromEnv, createRuntime, lambdaInit, type Runtime } from '../../shared/runtime/runtime';
import { type InferEvent, oversizeResponse, toHttpRequest, toResult } from './api-gateway-event';

/** Builds the handler around a runtime; tests pass one built from a config object. */
export function createInferHandler(runtime: Runtime) {
  // middy's own early timeout is off: the handler answers its 504 itself, `timeoutMarginMs` before the
  // deadline (withDeadline below), where middy's would fail the invocation with a bare TimeoutError.
  const chain = middy<InferEvent, APIGatewayProxyResult, Error, Context>({
    timeoutEarlyInMillis: 0,
  }).handler(async (event, context) => {
    const budget = context.getRemainingTimeInMillis() - runtime.config.timeoutMarginMs;
    // The timer answers while the request waits on I/O (a download); a run holds the thread, so runs are
    // admitted against the deadline instead (shared/core/deadline.ts).
    const deadline = { at: runtime.clock() + budget, budgetMs: budget };
    const base = toHttpRequest(event);
    // The answer converted while the app checked it: the conversion (base64 of a binary body) is done once.
    let checked: { readonly response: HttpResponse; readonly result: APIGatewayProxyResult } | undefined;
    const refuse = (tooLarge: ResponseTooLargeError) =>
      runtime.logger.warn('response over the Lambda payload limit', {
        path: base.path,
        reason: tooLarge.message,
      });
    // Over Lambda's response limit the runtime would fail the invocation and the client would get a
    // bodiless gateway error: the app answers 413 with the reason instead, and counts the 413 it answered.
    // Set when the door answers 504 at the deadline: the app, still working, must report that answer
    // when it ends, not the one the client never got (and the door reports nothing itself).
    let answered: ServingError | undefined;
    const deliver = (response: HttpResponse) => {
      if (answered !== undefined) throw answered;
      const result = toResult(response);
      const tooLarge = oversizeResponse(result);
      if (tooLarge !== undefined) {
        refuse(tooLarge);
        throw tooLarge;
      }
      checked = { response, result };
    };
    const request = { ...base, deadline, deliver };
    const onUnexpected = (e: unknown) => runtime.logger.error('request failed', { error: e as Error });
    let result: APIGatewayProxyResult;
    try {
      const response = await withDeadline(runtime.app(request), budget, 'the inference request');
      result = checked?.response === response ? checked.result : toResult(response);
    } catch (error) {
      if (error instanceof InferenceTimeoutError) answered = error;
      result = toResult(errorResponse(error, request, onUnexpected));
    }
    // A route's answer was checked by `deliver`; this catches any other answer (an error's, say).
    const tooLarge = result === checked?.result ? undefined : oversizeResponse(result);
    if (tooLarge === undefined) return result;
    refuse(tooLarge);
    return toResult(errorResponse(tooLarge, request, onUnexpected));
  });
  chain.use(injectLambdaContext(runtime.logger));
  if (runtime.metrics !== undefined) chain.use(logMetrics(runtime.metrics, { captureColdStartMetric: true }));
  return chain;
}

// On Lambda the runtime is built at import, in the init phase, and a function pinned to one model starts
// loading it there (lambdaInit); elsewhere (tests import this module without an environment), and when
// the configuration is bad, on the first invocation, which then fails with every bad key in the error and
// lets the next invocation try again.
const init = lambdaInit({ withMetrics: true });
let inner: ReturnType<typeof createInferHandler> | undefined =
  init === undefined ? undefined : createInferHandler(init.runtime);

/** Settles when the init-phase load of the pinned model has (`undefined` when none was started). */
export const prefetched: Promise<void> | undefined = init?.prefetched;

export const handler = async (event: InferEvent, context: Context): Promise<APIGatewayProxyResult> => {
  inner ??= createInferHandler(createRuntime(configFromEnv(), { withMetrics: true }));
  return inner(event, context);
};
