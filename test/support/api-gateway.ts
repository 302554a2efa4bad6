/**
 * Real-shaped API Gateway events (REST payload v1, HTTP API payload v2, Function URL) and a Lambda
 * context, as the infer door receives them on AWS.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2, Context } from 'aws-lambda';

export type EventKind = 'rest-v1' | 'http-v2' | 'function-url';

export interface EventOptions {
  readonly body?: string | Uint8Array | undefined;
  readonly headers?: Record<string, string>;
  /** HTTP API stage; a named stage appears in rawPath as on AWS. */
  readonly stage?: string;
}

export function apiEvent(kind: EventKind, method: string, path: string, options: EventOptions = {}) {
  const binary = options.body instanceof Uint8Array;
  const body =
    options.body === undefined
      ? undefined
      : binary
        ? Buffer.from(options.body as Uint8Array).toString('base64')
        : (options.body as string);
  const headers = { 'content-type': 'application/json', ...options.headers };
  return kind === 'rest-v1'
    ? restEvent(method, path, headers, body, binary)
    : httpEvent(kind, method, path, headers, body, binary, options.stage);
}

function restEvent(
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
  isBase64Encoded: boolean,
): APIGatewayProxyEvent {
  // REST APIs keep the client's header case; the door must not rely on lower case.
  const cased = Object.fromEntries(
    Object.entries(headers).map(([k, v]) => [k.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase()), v]),
  );
  return {
    resource: '/{proxy+}',
    path,
    httpMethod: method,
    headers: cased,
    multiValueHeaders: Object.fromEntries(Object.entries(cased).map(([k, v]) => [k, [v]])),
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: { proxy: path.slice(1) },
    stageVariables: null,
    requestContext: {
      accountId: '123456789012',
      apiId: 'abc123',
      authorizer: null,
      protocol: 'HTTP/1.1',
      httpMethod: method,
      identity: {} as APIGatewayProxyEvent['requestContext']['identity'],
      path: `/prod${path}`,
      stage: 'prod',
      requestId: 'req-1',
      requestTimeEpoch: Date.now(),
      resourceId: 'res',
      resourcePath: '/{proxy+}',
    },
    body: body ?? null,
    isBase64Encoded,
  };
}

function httpEvent(
  kind: EventKind,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
  isBase64Encoded: boolean,
  stage = '$default',
): APIGatewayProxyEventV2 {
  const rawPath = stage === '$default' ? path : `/${stage}${path}`;
  return {
    version: '2.0',
    routeKey: kind === 'function-url' ? '$default' : `${method} /{proxy+}`,
    rawPath,
    rawQueryString: '',
    headers,
    requestContext: {
      accountId: kind === 'function-url' ? 'anonymous' : '123456789012',
      apiId: 'abc123',
      domainName: 'abc123.execute-api.eu-west-1.amazonaws.com',
      domainPrefix: 'abc123',
      http: { method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'jest' },
      requestId: 'req-2',
      routeKey: kind === 'function-url' ? '$default' : `${method} /{proxy+}`,
      stage,
      time: new Date().toISOString(),
      timeEpoch: Date.now(),
    },
    ...(body === undefined ? {} : { body }),
    isBase64Encoded,
  };
}

/** A Lambda context whose deadline is `remainingMs` from its creation. */
export function lambdaContext(remainingMs = 30_000): Context {
  const deadline = Date.now() + remainingMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'infer',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:infer',
    memoryLimitInMB: '1024',
    awsRequestId: `req-${Math.random().toString(16).slice(2)}`,
    logGroupName: '/aws/lambda/infer',
    logStreamName: 'stream',
    getRemainingTimeInMillis: () => deadline - Date.now(),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}
