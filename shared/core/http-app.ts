/**
 * The HTTP surface shared by every door: Open Inference Protocol (KServe v2) REST routes plus the plain
 * `/predict`, over a protocol-neutral request and response. The Lambda door and the node:http server
 * only translate their event shapes to {@link HttpRequest} and back.
 */
import type { Deadline } from './deadline';
import {
  InvalidInputError,
  MethodNotAllowedError,
  ModelNotFoundError,
  PayloadTooLargeError,
  RouteNotFoundError,
  ServingError,
} from './errors';
import type { InferenceService } from './inference-service';
import type { Clock, Telemetry } from './ports';
import { NO_TELEMETRY } from './ports';
import {
  decodeInferRequest,
  decodeRawBinaryRequest,
  encodeInferResponse,
  isRawBinaryRequest,
} from './protocol/oip-codec';
import { decodePredictRequest, encodePredictResponse } from './protocol/predict';

export interface HttpRequest {
  readonly method: string;
  /** The path without query string or API Gateway stage, e.g. `/v2/models/linear/infer`. */
  readonly path: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body: Uint8Array;
  /** Aborts when the client is gone (the node:http door); queued work for it is then dropped. */
  readonly signal?: AbortSignal | undefined;
  /** When the answer must be ready (the Lambda door); a run that cannot end before it is refused (504). */
  readonly deadline?: Deadline | undefined;
  /**
   * Called with the answer (a route's or an error's) before it is reported; throws a {@link ServingError}
   * when the door cannot deliver it (a Lambda response over the payload limit) or has answered already (the
   * Lambda door's 504 at the deadline). The app then answers that error instead, and the request telemetry
   * records the status actually returned, once.
   */
  readonly deliver?: ((response: HttpResponse) => void) | undefined;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Uint8Array | string;
}

export interface ServerInfo {
  readonly name: string;
  readonly version: string;
}

export interface HttpAppOptions {
  readonly service: InferenceService;
  readonly server: ServerInfo;
  readonly maxBodyBytes: number;
  /** A function pinned to one model serves only it, and `/predict` means that model. */
  readonly pinnedModel?: string | undefined;
  /** Server readiness (`/v2/health/ready`): e.g. preloaded models are warm. */
  readonly isReady?: () => boolean;
  /** Called with every error that becomes a 500, to be logged whole. */
  readonly onUnexpectedError?: (error: unknown, request: HttpRequest) => void;
  /** Receives a `request` event per inference request (model, outcome, status, latency). */
  readonly telemetry?: Telemetry;
  readonly clock?: Clock;
}

export type HttpApp = (request: HttpRequest) => Promise<HttpResponse>;

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
export const EXTENSIONS = ['binary_tensor_data', 'predict'] as const;

type Handler = (request: HttpRequest, params: RouteParams) => Promise<HttpResponse>;
interface RouteParams {
  readonly model?: string;
  readonly version?: string;
}
interface Route {
  readonly method: 'GET' | 'POST';
  readonly pattern: RegExp;
  readonly handler: Handler;
  /** Reported as a `request` event: the inference routes. */
  readonly inference?: true;
}

const MODEL = '(?<model>[^/]+)(?:/versions/(?<version>[^/]+))?';
const INFER_PATH = new RegExp(`^/v2/models/${MODEL}/infer$`);
const PREDICT_PATH = new RegExp(`^(?:/v2/models/${MODEL})?/predict$`);

/** The model, and the version when the path names one, that an inference request is for. */
export interface InferenceTarget {
  readonly model: string;
  readonly version: string | undefined;
}

/**
 * The model an inference request (`POST` to an infer or predict route) is for, from its method and path
 * alone: what a door knows before it reads the body. `undefined` for any other request, and for a path
 * that names no model (a `/predict` of an unpinned function) or one that does not decode.
 */
export function inferenceTarget(
  request: Pick<HttpRequest, 'method' | 'path'>,
  pinnedModel: string | undefined,
): InferenceTarget | undefined {
  if (request.method.toUpperCase() !== 'POST') return undefined;
  const groups = (INFER_PATH.exec(request.path) ?? PREDICT_PATH.exec(request.path))?.groups;
  if (groups === undefined) return undefined;
  try {
    const model = groups.model === undefined ? pinnedModel : decodeURIComponent(groups.model);
    const version = groups.version === undefined ? undefined : decodeURIComponent(groups.version);
    return model === undefined ? undefined : { model, version };
  } catch {
    return undefined;
  }
}

export function createHttpApp(options: HttpAppOptions): HttpApp {
  const { service, server, pinnedModel } = options;

  const modelOf = (params: RouteParams): string => {
    const model = params.model ?? pinnedModel;
    if (model === undefined) throw new RouteNotFoundError('/predict needs a function pinned to one model');
    if (pinnedModel !== undefined && model !== pinnedModel) {
      throw new ModelNotFoundError(
        `model '${model}' is not served by this function (it serves '${pinnedModel}')`,
      );
    }
    return model;
  };

  const routes: Route[] = [
    { method: 'GET', pattern: /^\/v2\/health\/live$/, handler: async () => json(200, { live: true }) },
    {
      method: 'GET',
      pattern: /^\/v2\/health\/ready$/,
      handler: async () => {
        const ready = options.isReady?.() ?? true;
        return json(ready ? 200 : 503, { ready });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v2\/?$/,
      handler: async () => json(200, { name: server.name, version: server.version, extensions: EXTENSIONS }),
    },
    {
      method: 'GET',
      pattern: new RegExp(`^/v2/models/${MODEL}/ready$`),
      handler: async (_req, p) => {
        const ready = await service.ready(modelOf(p), p.version);
        return json(ready ? 200 : 503, { name: modelOf(p), ready });
      },
    },
    {
      method: 'GET',
      pattern: new RegExp(`^/v2/models/${MODEL}$`),
      handler: async (_req, p) => json(200, await service.metadata(modelOf(p), p.version)),
    },
    {
      method: 'POST',
      pattern: INFER_PATH,
      inference: true,
      handler: async (req, p) => {
        const headerLength = req.headers['inference-header-content-length'];
        if (isRawBinaryRequest(headerLength)) {
          const model = modelOf(p);
          const result = await service.inferWith(
            model,
            p.version,
            (signature, config) =>
              decodeRawBinaryRequest(req.body, signature, config.maxBatchSize, service.limits),
            req.signal,
            req.deadline,
          );
          // As Triton answers a raw request: every output binary.
          const response = { modelName: model, modelVersion: result.version, outputs: result.outputs };
          const encoded = encodeInferResponse(response, () => true);
          return { status: 200, headers: encoded.headers, body: encoded.body };
        }
        const decoded = decodeInferRequest(req.body, headerLength, service.limits);
        const response = await service.infer(modelOf(p), p.version, decoded, req.signal, req.deadline);
        const encoded = encodeInferResponse(response, decoded);
        return { status: 200, headers: encoded.headers, body: encoded.body };
      },
    },
    {
      method: 'POST',
      pattern: PREDICT_PATH,
      inference: true,
      handler: async (req, p) => {
        const result = await service.inferWith(
          modelOf(p),
          p.version,
          (signature) => decodePredictRequest(req.body, signature, service.limits),
          req.signal,
          req.deadline,
        );
        return { status: 200, headers: { ...JSON_HEADERS }, body: encodePredictResponse(result.outputs) };
      },
    },
  ];

  const telemetry = options.telemetry ?? NO_TELEMETRY;
  const clock = options.clock ?? (() => performance.now());
  const report = (matched: Matched | undefined, started: number, outcome: string, status: number) => {
    const model = matched?.route.inference ? (matched.params.model ?? pinnedModel) : undefined;
    if (model === undefined) return;
    telemetry.emit({ type: 'request', model, outcome, status, ms: clock() - started });
  };

  return async (request) => {
    const started = clock();
    let matched: Matched | undefined;
    try {
      if (request.body.byteLength > options.maxBodyBytes) {
        throw new PayloadTooLargeError(
          `request body of ${request.body.byteLength} bytes is over the limit of ${options.maxBodyBytes}`,
        );
      }
      matched = match(routes, request);
      const response = await matched.route.handler(request, matched.params);
      request.deliver?.(response);
      report(matched, started, 'success', response.status);
      return response;
    } catch (thrown) {
      let error = thrown;
      let response = errorResponse(error, request, options.onUnexpectedError);
      try {
        request.deliver?.(response);
      } catch (refused) {
        // The door answered otherwise (e.g. its own 504 at the deadline): that answer is the one reported.
        error = refused;
        response = errorResponse(error, request, options.onUnexpectedError);
      }
      report(
        matched,
        started,
        error instanceof ServingError ? error.code : 'internal_error',
        response.status,
      );
      return response;
    }
  };
}

interface Matched {
  readonly route: Route;
  readonly params: RouteParams;
}

function match(routes: readonly Route[], request: HttpRequest): Matched {
  const method = request.method.toUpperCase();
  let pathMatched = false;
  for (const route of routes) {
    const found = route.pattern.exec(request.path);
    if (found === null) continue;
    pathMatched = true;
    if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) continue;
    const groups = found.groups ?? {};
    const params: { model?: string; version?: string } = {};
    if (groups.model !== undefined) params.model = decodeSegment(groups.model);
    if (groups.version !== undefined) params.version = decodeSegment(groups.version);
    return { route, params };
  }
  if (pathMatched) throw new MethodNotAllowedError(`${method} is not allowed on ${request.path}`);
  throw new RouteNotFoundError(`no route for ${method} ${truncate(request.path)}`);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new InvalidInputError(`path segment '${truncate(segment)}' is not valid percent-encoding`);
  }
}

/** The one place errors become responses: exposed errors keep their message, others become a bare 500. */
export function errorResponse(
  error: unknown,
  request: HttpRequest,
  onUnexpected: ((error: unknown, request: HttpRequest) => void) | undefined,
): HttpResponse {
  if (error instanceof ServingError && error.expose) {
    return {
      ...json(error.status, { error: error.message }),
      headers: { ...JSON_HEADERS, ...error.headers },
    };
  }
  onUnexpected?.(error, request);
  const status = error instanceof ServingError ? error.status : 500;
  return json(status, { error: 'internal server error' });
}

export function json(status: number, body: unknown): HttpResponse {
  return { status, headers: { ...JSON_HEADERS }, body: JSON.stringify(body) };
}

function truncate(text: string): string {
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}
