/**
 * The same routes as the infer Lambda on node:http, for containers (Cloud Run, ECS) and local use.
 * Concurrent requests share the warm cache; a shutdown stops accepting, lets in-flight requests finish
 * within a grace period, then releases the sessions.
 *
 * Before a body is read, the request gate may refuse it (its model's queue is full) and the bytes it
 * declares are taken from the in-flight budget (bodies without a Content-Length, chunk by chunk): either
 * refusal is a 503 with Retry-After, and the unread body is discarded as it arrives, never held.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withDeadline } from '../../shared/core/deadline';
import {
  MethodNotAllowedError,
  PayloadTooLargeError,
  RequestAbortedError,
  ServingError,
} from '../../shared/core/errors';
import { errorResponse, type HttpApp, type HttpRequest, type HttpResponse } from '../../shared/core/http-app';
import { InflightBytes } from '../../shared/core/inflight-bytes';
import type { RequestGate } from '../../shared/core/request-gate';

export interface HttpServerOptions {
  readonly app: HttpApp;
  readonly host: string;
  readonly port: number;
  readonly maxBodyBytes: number;
  /**
   * Bytes of request bodies held at once (being read or served); past it, 503 before reading. Unbounded
   * when absent; `startServer` always sets it (`ONNX_SERVE_MAX_INFLIGHT_MB`).
   */
  readonly maxInflightBytes?: number;
  readonly requestTimeoutMs: number;
  readonly shutdownGraceMs: number;
  /** Decides before a body is read whether to take the request, and counts what the door answers itself. */
  readonly gate?: RequestGate;
  readonly onUnexpectedError?: (error: unknown) => void;
  /** A client went away before its request body had arrived (a fact to log, not a server error). */
  readonly onClientGone?: (details: ClientGone) => void;
  /** Serves `GET /metrics` with this text (Prometheus exposition format) when given. */
  readonly metrics?: { readonly contentType: string; render(): string };
}

/** A request whose client disconnected mid-upload. */
export interface ClientGone {
  readonly method: string;
  readonly path: string;
  /** Body bytes received before the client went away. */
  readonly receivedBytes: number;
  /** Its Content-Length, when it declared one. */
  readonly declaredBytes: number | undefined;
}

export interface RunningServer {
  readonly server: Server;
  readonly url: string;
  /** In-flight requests right now. */
  readonly inFlight: () => number;
  /** Bytes of request bodies held right now (taken before reading, given back once answered). */
  readonly inflightBytes: () => number;
  /** Stops accepting, waits for in-flight requests (at most the grace period), closes connections. */
  close(): Promise<void>;
}

export async function startHttpServer(options: HttpServerOptions): Promise<RunningServer> {
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let closing: Promise<void> | undefined;
  const bytes = new InflightBytes(options.maxInflightBytes ?? Number.MAX_SAFE_INTEGER);

  const server = createServer((req, res) => {
    inFlight += 1;
    // While draining, answers tell keep-alive clients to take their next request elsewhere.
    if (closing !== undefined) res.setHeader('connection', 'close');
    void serve(options, bytes, req, res).finally(() => {
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

  return {
    server,
    url: `http://${host}:${address.port}`,
    inFlight: () => inFlight,
    inflightBytes: () => bytes.held,
    close,
  };
}

async function serve(
  options: HttpServerOptions,
  bytes: InflightBytes,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  // Aborted when the client goes away before its answer is written, or at the deadline: work still
  // queued for it is dropped rather than run for nobody.
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
  const started = options.gate?.clock() ?? 0;
  const body = new BodyReader(req, options.maxBodyBytes, bytes);
  let response: HttpResponse;
  try {
    if (request.path === '/metrics' && options.metrics !== undefined) {
      response = metricsResponse(request, options.metrics);
    } else {
      let read: Uint8Array;
      try {
        const bodyRead = options.gate?.admit(request);
        try {
          read = await body.read();
        } finally {
          bodyRead?.();
        }
      } catch (error) {
        // Answered here, before the app saw it: refused, too large, or its client gone mid-upload.
        options.gate?.answered(request, error, started);
        throw error;
      }
      response = await withDeadline(
        options.app({ ...request, body: read }),
        options.requestTimeoutMs,
        'the request',
      );
    }
  } catch (error) {
    abort.abort();
    // An unread body is discarded as it arrives, so a refused request holds no memory.
    if (!req.complete) req.resume();
    if (error instanceof RequestAbortedError && body.clientGone) {
      options.onClientGone?.({
        method: request.method,
        path: request.path,
        receivedBytes: body.received,
        declaredBytes: body.declared,
      });
    }
    response = errorResponse(error, request, options.onUnexpectedError);
  }
  try {
    if (res.destroyed) return;
    const out = typeof response.body === 'string' ? Buffer.from(response.body) : response.body;
    res.writeHead(response.status, { ...response.headers, 'content-length': String(out.byteLength) });
    res.end(out);
  } finally {
    // The body is dropped with this call: its bytes no longer count.
    body.release();
  }
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

/**
 * Reads one request body against the body cap and the in-flight budget: the declared Content-Length is
 * checked and taken before a byte is read; a body without one is taken chunk by chunk as it streams.
 */
class BodyReader {
  readonly declared: number | undefined;
  received = 0;
  /** The client disconnected before the body had arrived. */
  clientGone = false;
  #held = 0;

  constructor(
    private readonly req: IncomingMessage,
    private readonly maxBytes: number,
    private readonly budget: InflightBytes,
  ) {
    const declared = Number(req.headers['content-length'] ?? Number.NaN);
    this.declared = Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined;
  }

  async read(): Promise<Uint8Array> {
    const { declared, maxBytes } = this;
    if (declared !== undefined && declared > maxBytes) {
      throw new PayloadTooLargeError(`request body of ${declared} bytes is over the limit of ${maxBytes}`);
    }
    if (declared !== undefined) this.#take(declared);
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of this.req as AsyncIterable<Buffer>) {
        this.received += chunk.byteLength;
        if (this.received > maxBytes) {
          throw new PayloadTooLargeError(`request body is over the limit of ${maxBytes} bytes`);
        }
        if (declared === undefined) this.#take(chunk.byteLength);
        chunks.push(chunk);
      }
    } catch (error) {
      if (error instanceof ServingError) throw error;
      // node:http ends the body with an 'aborted' error (ECONNRESET) when the client goes away.
      this.clientGone = true;
      const of = declared === undefined ? '' : ` of ${declared}`;
      throw new RequestAbortedError(
        `the client disconnected after ${this.received}${of} bytes of its request body`,
        { cause: error },
      );
    }
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.received);
  }

  /** Gives back every byte taken for this body. */
  release(): void {
    this.budget.release(this.#held);
    this.#held = 0;
  }

  #take(bytes: number): void {
    this.budget.take(bytes);
    this.#held += bytes;
  }
}
