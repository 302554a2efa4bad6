/**
 * API Gateway REST (payload v1), HTTP API (payload v2) and Lambda Function URL events to the core's
 * HttpRequest, and the core's HttpResponse back to the result shape they expect.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2, APIGatewayProxyResult } from 'aws-lambda';
import type { HttpRequest, HttpResponse } from '../../shared/core/http-app';

export type InferEvent = APIGatewayProxyEvent | APIGatewayProxyEventV2;

export function isV2(event: InferEvent): event is APIGatewayProxyEventV2 {
  return (event as APIGatewayProxyEventV2).version === '2.0' || 'rawPath' in event;
}

export function toHttpRequest(event: InferEvent): HttpRequest {
  // Header names come from clients: a null prototype keeps `__proto__` and friends plain entries.
  const headers: Record<string, string> = Object.create(null);
  for (const [name, value] of Object.entries(event.headers ?? {})) {
    if (value !== undefined) headers[name.toLowerCase()] = value;
  }
  const raw = event.body ?? '';
  const body = event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
  if (isV2(event)) {
    return { method: event.requestContext.http.method, path: stripStage(event), headers, body };
  }
  // REST API: `path` is the resource path the client asked for, without the stage.
  return { method: event.httpMethod, path: event.path, headers, body };
}

/** HTTP APIs put a named stage in `rawPath` (`/prod/v2/...`); `$default` and Function URLs do not. */
function stripStage(event: APIGatewayProxyEventV2): string {
  const stage = event.requestContext.stage;
  const path = event.rawPath;
  if (stage && stage !== '$default' && (path === `/${stage}` || path.startsWith(`/${stage}/`))) {
    return path.slice(stage.length + 1) || '/';
  }
  return path;
}

/**
 * Text (JSON) bodies go back as strings; binary bodies (the OIP binary tensor extension) travel
 * base64-encoded, as API Gateway and Function URLs require.
 */
export function toResult(response: HttpResponse): APIGatewayProxyResult {
  const { status: statusCode, headers, body } = response;
  if (typeof body === 'string') return { statusCode, headers, body, isBase64Encoded: false };
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (isText(headers['content-type']))
    return { statusCode, headers, body: bytes.toString('utf8'), isBase64Encoded: false };
  return { statusCode, headers, body: bytes.toString('base64'), isBase64Encoded: true };
}

function isText(contentType: string | undefined): boolean {
  return contentType !== undefined && /^(application\/json|text\/)/.test(contentType);
}
