/**
 * A minimal Lambda Runtime API on loopback, as AWS documents it for custom runtimes and runtime clients:
 *
 * - `GET /2018-06-01/runtime/invocation/next` answers the next queued event (held open until there is
 *   one) with the headers `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
 *   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`;
 * - `POST /2018-06-01/runtime/invocation/<id>/response` and `.../<id>/error` (with
 *   `Lambda-Runtime-Function-Error-Type`) settle that invocation, answered 202;
 * - `POST /2018-06-01/runtime/init/error` records an initialisation failure, answered 202.
 *
 * It also answers Lambda's `Invoke` API (`POST /2015-03-31/functions/<name>/invocations`) with 202 for
 * asynchronous invocations and records their payloads: a function under test that invokes itself (the
 * batch continuation) reaches it through `AWS_ENDPOINT_URL_LAMBDA`.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const BASE = '/2018-06-01/runtime';

/** How an invocation ended: the function's answer, or its error as the runtime client reported it. */
export type InvocationOutcome =
  | { readonly kind: 'response'; readonly body: unknown }
  | { readonly kind: 'error'; readonly errorType: string | undefined; readonly body: unknown };

/** What the runtime client was handed for one invocation. */
export interface QueuedInvocation {
  readonly requestId: string;
  readonly deadlineMs: number;
  readonly functionArn: string;
  readonly traceId: string;
}

export interface InvokeOptions {
  /** Milliseconds from now to the deadline (`Lambda-Runtime-Deadline-Ms`). */
  readonly timeoutMs: number;
  readonly functionArn?: string;
}

export interface RuntimeApi {
  /** `host:port`, the form of `AWS_LAMBDA_RUNTIME_API`. */
  readonly address: string;
  /** `http://host:port`, for `AWS_ENDPOINT_URL_LAMBDA`. */
  readonly endpoint: string;
  /** Queues `event`; resolves when the runtime client posts its response or error. */
  invoke(
    event: unknown,
    options: InvokeOptions,
  ): Promise<InvocationOutcome & { invocation: QueuedInvocation }>;
  /** Resolves with the error the runtime client posted to `/init/error`. */
  readonly initError: Promise<{ readonly errorType: string | undefined; readonly body: unknown }>;
  /** Payloads of asynchronous `Invoke` calls, and the function each named. */
  readonly asyncInvocations: readonly { readonly functionName: string; readonly payload: unknown }[];
  /** Every request line the server answered, in order (`GET /2018-06-01/runtime/invocation/next`...). */
  readonly requests: readonly string[];
  close(): Promise<void>;
}

interface Pending {
  readonly invocation: QueuedInvocation;
  readonly event: unknown;
  settle(outcome: InvocationOutcome): void;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Starts the Runtime API on a free loopback port. */
export async function startRuntimeApi(): Promise<RuntimeApi> {
  const queue: Pending[] = [];
  const waiting: ServerResponse[] = [];
  const inFlight = new Map<string, Pending>();
  const requests: string[] = [];
  const asyncInvocations: { functionName: string; payload: unknown }[] = [];
  let reportInitError: (error: { errorType: string | undefined; body: unknown }) => void = () => {};
  const initError = new Promise<{ errorType: string | undefined; body: unknown }>((resolve) => {
    reportInitError = resolve;
  });

  const hand = (response: ServerResponse, pending: Pending) => {
    const { invocation } = pending;
    inFlight.set(invocation.requestId, pending);
    response.writeHead(200, {
      'content-type': 'application/json',
      'lambda-runtime-aws-request-id': invocation.requestId,
      'lambda-runtime-deadline-ms': String(invocation.deadlineMs),
      'lambda-runtime-invoked-function-arn': invocation.functionArn,
      'lambda-runtime-trace-id': invocation.traceId,
    });
    response.end(JSON.stringify(pending.event));
  };

  const server: Server = createServer(async (request, response) => {
    const url = request.url ?? '';
    requests.push(`${request.method} ${url}`);
    const body = await readBody(request);
    const accepted = () => {
      response.writeHead(202, { 'content-type': 'application/json' });
      response.end('{"status":"OK"}');
    };
    if (request.method === 'GET' && url === `${BASE}/invocation/next`) {
      const next = queue.shift();
      if (next === undefined) waiting.push(response);
      else hand(response, next);
      return;
    }
    const settled = new RegExp(`^${BASE}/invocation/([^/]+)/(response|error)$`).exec(url);
    if (request.method === 'POST' && settled !== null) {
      const id = decodeURIComponent(settled[1] ?? '');
      const pending = inFlight.get(id);
      if (pending === undefined) {
        response.writeHead(400, { 'content-type': 'application/json' });
        response.end('{"errorMessage":"unknown request id","errorType":"InvalidRequestID"}');
        return;
      }
      inFlight.delete(id);
      accepted();
      const errorType = request.headers['lambda-runtime-function-error-type'];
      pending.settle(
        settled[2] === 'response'
          ? { kind: 'response', body: parse(body) }
          : {
              kind: 'error',
              errorType: errorType === undefined ? undefined : String(errorType),
              body: parse(body),
            },
      );
      return;
    }
    if (request.method === 'POST' && url === `${BASE}/init/error`) {
      accepted();
      const errorType = request.headers['lambda-runtime-function-error-type'];
      reportInitError({
        errorType: errorType === undefined ? undefined : String(errorType),
        body: parse(body),
      });
      return;
    }
    const invoke = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/.exec(url);
    if (
      request.method === 'POST' &&
      invoke !== null &&
      request.headers['x-amz-invocation-type'] === 'Event'
    ) {
      asyncInvocations.push({ functionName: decodeURIComponent(invoke[1] ?? ''), payload: parse(body) });
      response.writeHead(202, { 'x-amzn-requestid': randomUUID() });
      response.end();
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end('{"errorMessage":"not a route of this Runtime API","errorType":"NotFound"}');
  });
  // The runtime client keeps one connection open on `next`; close() must not wait for it.
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    address: `127.0.0.1:${port}`,
    endpoint: `http://127.0.0.1:${port}`,
    initError,
    asyncInvocations,
    requests,
    invoke(event, options) {
      const invocation: QueuedInvocation = {
        requestId: randomUUID(),
        deadlineMs: Date.now() + options.timeoutMs,
        functionArn: options.functionArn ?? 'arn:aws:lambda:us-east-1:123456789012:function:under-test',
        traceId: `Root=1-${Math.floor(Date.now() / 1000).toString(16)}-${randomUUID().replaceAll('-', '').slice(0, 24)};Parent=${randomUUID().replaceAll('-', '').slice(0, 16)};Sampled=0`,
      };
      return new Promise((resolve) => {
        const pending: Pending = {
          invocation,
          event,
          settle: (outcome) => resolve({ ...outcome, invocation }),
        };
        const response = waiting.shift();
        if (response === undefined) queue.push(pending);
        else hand(response, pending);
      });
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const socket of sockets) socket.destroy();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
