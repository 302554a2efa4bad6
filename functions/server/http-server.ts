/**
 * The same routes as the infer Lambda on node:http, for containers (Cloud Run, ECS) and local use.
 * Concurrent requests share the warm cache; a shutdown stops accepting, lets in-flight requests finish
 * within a grace period, then releases the sessions.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withDeadline } from '../../shared/core/deadline';
import { MethodNotAllowedError, PayloadTooLargeError } from '../../shared/core/errors';
import { errorResponse, type HttpApp, type HttpRequest, type HttpResponse } from '../../shared/core/http-app';

export interface HttpServerOptions {
  readonly app: HttpApp;
  readonly host: string;
  readonly port: number;
  readonly maxBodyBytes: number;
  readonly requestTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly onUnexpectedError?: (error: unknown) => void;
  /** Serves `GET /metrics` with this text (Prometheus exposition format) when given. */
  readonly metrics?: { readonly contentType: string; render(): string };
}

export interface RunningServer {
  readonly server: Server;
  readonly url: string;
  /** In-flight requests right now. */
  readonly inFlight: () => number;
  /** Stops accepting, waits for in-flight requests (at most the grace period), closes connections. */
  close(): Promise<void>;
}

export async function startHttpServer(options: HttpServerOptions): Promise<RunningServer> {
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let closing: Promise<void> | undefined;

  const server = createServer((req, res) => {
    inFlight += 1;
    // While draining, answers tell keep-alive clients to take their next request elsewhere.
    if (closing !== undefined) res.setHeader('connection', 'close');
    void serve(options, req, res).finally(() => {
      inFlight -= 1;
      if (inFlight === 0) drained?.();
    });
  });
  // Keep-alive sockets must not outlive a load balancer's idle timeout (Cloud Run and ALB use 60 s+).
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inFlight > 0) {
        const allDone = new Promise<void>((resolve) => {
          drained = resolve;
        });
        const grace = new Promise<void>((resolve) => setTimeout(resolve, options.shutdownGraceMs).unref());
        await Promise.race([allDone, grace]);
      }
      server.closeAllConnections();
      await stopped;
    })();
    return closing;
  };

  return { server, url: `http://${host}:${address.port}`, inFlight: () => inFlight, close };
}

async function serve(options: HttpServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // Aborted when the client goes away before its answer is written, or at the deadline: work still
  // queued for it (the dynamic batcher) is dropped rather than run for nobody.
  const abort = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const request: HttpRequest = {
    method: req.method ?? 'GET',
    path: (req.url ?? '/').split('?', 1)[0] ?? '/',
    headers: req.headers as Record<string, string | undefined>,
    body: new Uint8Array(0),
    signal: abort.signal,
  };
  let response: HttpResponse;
  try {
    if (request.path === '/metrics' && options.metrics !== undefined) {
      response = metricsResponse(request, options.metrics);
    } else {
      const body = await readBody(req, options.maxBodyBytes);
      response = await withDeadline(
        options.app({ ...request, body }),
        options.requestTimeoutMs,
        'the request',
      );
    }
  } catch (error) {
    abort.abort();
    response = errorResponse(error, request, options.onUnexpectedError);
  }
  if (res.destroyed) return;
  const body = typeof response.body === 'string' ? Buffer.from(response.body) : response.body;
  res.writeHead(response.status, { ...response.headers, 'content-length': String(body.byteLength) });
  res.end(body);
}

function metricsResponse(
  request: HttpRequest,
  metrics: NonNullable<HttpServerOptions['metrics']>,
): HttpResponse {
  const method = request.method.toUpperCase();
  if (method !== 'GET' && method !== 'HEAD') {
    throw new MethodNotAllowedError(`${method} is not allowed on /metrics`);
  }
  return { status: 200, headers: { 'content-type': metrics.contentType }, body: metrics.render() };
}

/** Reads the whole body, refusing early (by Content-Length or as it streams) past the cap. */
async function readBody(req: IncomingMessage, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (declared > maxBytes) {
    req.resume();
    throw new PayloadTooLargeError(`request body of ${declared} bytes is over the limit of ${maxBytes}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > maxBytes) {
      req.resume();
      throw new PayloadTooLargeError(`request body is over the limit of ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
}
