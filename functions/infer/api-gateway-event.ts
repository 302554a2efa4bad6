/**
 * API Gateway REST (payload v1), HTTP API (payload v2) and Lambda Function URL events to the core's
 * HttpRequest, and the core's HttpResponse back to the result shape they expect.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2, APIGatewayProxyResult } from 'aws-lambda';
import { ResponseTooLargeError } from '../../shared/core/errors';
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

/**
 * Lambda's limit on the response of a synchronous invocation (API Gateway, Function URLs): the bytes of the
 * JSON the runtime posts, 6 MiB + 100 bytes. A larger result fails at the runtime and the client gets a
 * bodiless gateway error.
 */
export const LAMBDA_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024 + 100;

/**
 * The bytes of `result` as the Lambda runtime posts it: `JSON.stringify`, UTF-8. Counted without
 * serialising the body again (a 5 MB body would take tens of milliseconds): the envelope with an empty
 * body, plus the body's characters as JSON escapes and encodes them.
 */
export function responsePayloadBytes(result: APIGatewayProxyResult): number {
  const envelope = Buffer.byteLength(JSON.stringify({ ...result, body: '' }), 'utf8');
  return envelope + escapedUtf8Bytes(result.body);
}

/** UTF-8 bytes of `text` inside a JSON string, as `JSON.stringify` writes it (without the quotes). */
function escapedUtf8Bytes(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) {
      // '"' and '\\' gain a backslash; \b \t \n \f \r are two characters, other controls \u00XX.
      if (c === 0x22 || c === 0x5c) bytes += 2;
      else if (c >= 0x20) bytes += 1;
      else bytes += c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6;
    } else if (c < 0x800) {
      bytes += 2;
    } else if (c >= 0xd800 && c <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else {
        bytes += 6; // a lone surrogate is written as \uXXXX
      }
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      bytes += 6;
    } else {
      bytes += 3;
    }
  }
  return bytes;
}

/**
 * {@link ResponseTooLargeError} (413) when `result` is over Lambda's response limit, else `undefined`. The
 * message names the size, the limit and what to ask for instead. Results far below the limit are not
 * serialised to find out.
 */
export function oversizeResponse(result: APIGatewayProxyResult): ResponseTooLargeError | undefined {
  // Cheap bound first: every UTF-16 unit of the body and headers serialises to at most 6 bytes.
  const headerChars = result.headers === undefined ? 0 : JSON.stringify(result.headers).length;
  if ((result.body.length + headerChars) * 6 + 128 <= LAMBDA_RESPONSE_LIMIT_BYTES) return undefined;
  const bytes = responsePayloadBytes(result);
  if (bytes <= LAMBDA_RESPONSE_LIMIT_BYTES) return undefined;
  const fixes = result.isBase64Encoded
    ? 'ask for fewer outputs (the request\'s "outputs") or send a smaller batch'
    : 'ask for fewer outputs (the request\'s "outputs"), for binary outputs ("binary_data_output": true, ' +
      'about 5.3 bytes a float32 once base64-encoded instead of up to 20 as JSON text), or send a smaller batch';
  return new ResponseTooLargeError(
    `the response is ${bytes} bytes as Lambda delivers it (JSON, binary bodies base64-encoded), over ` +
      `Lambda's limit of ${LAMBDA_RESPONSE_LIMIT_BYTES} bytes for a synchronous response: ${fixes}`,
  );
}
