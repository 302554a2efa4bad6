import type { APIGatewayProxyResult } from 'aws-lambda';
import {
  LAMBDA_RESPONSE_LIMIT_BYTES,
  oversizeResponse,
  responsePayloadBytes,
  toResult,
} from '../../functions/infer/api-gateway-event';
import { ResponseTooLargeError } from '../../shared/core/errors';

const HEADERS = { 'content-type': 'application/json' };

/** A JSON result whose serialised envelope is exactly `bytes` long, the body padded with `unit`. */
function resultOf(bytes: number, unit: string, unitBytes: number): APIGatewayProxyResult {
  const empty = toResult({ status: 200, headers: HEADERS, body: '' });
  const room = bytes - responsePayloadBytes(empty);
  const body = unit.repeat(Math.floor(room / unitBytes)) + 'a'.repeat(room % unitBytes);
  const result = toResult({ status: 200, headers: HEADERS, body });
  expect(Buffer.byteLength(JSON.stringify(result), 'utf8')).toBe(bytes);
  return result;
}

describe('Lambda response limit', () => {
  it('counts the envelope as the runtime sends it: escapes and UTF-8 included', () => {
    // A quote in the body is escaped to two bytes in the envelope; 'é' takes two bytes of UTF-8.
    const plain = responsePayloadBytes(toResult({ status: 200, headers: HEADERS, body: 'a' }));
    expect(responsePayloadBytes(toResult({ status: 200, headers: HEADERS, body: '"' }))).toBe(plain + 1);
    expect(responsePayloadBytes(toResult({ status: 200, headers: HEADERS, body: 'é' }))).toBe(plain + 1);
  });

  it('counts exactly what JSON.stringify writes, whatever the characters', () => {
    const samples = [
      '',
      '{"a":[1.5,"NaN"],"b":"\\\\"}',
      'tab\tnewline\nreturn\rbell\u0007nul\u0000\u001f\b\f',
      'é ü ß € 中文 😀 𝄞',
      'lone \ud800 high, lone \udc00 low, swapped \udc00\ud800, end \ud83d',
      '\u007f\u0080\u07ff\u0800\uffff',
    ];
    // And random strings over every range of code units.
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let n = 0; n < 200; n++) {
      const units = Array.from({ length: 20 }, () => {
        const pick = random();
        if (pick < 0.3) return Math.floor(random() * 0x80);
        if (pick < 0.5) return 0xd800 + Math.floor(random() * 0x800);
        return Math.floor(random() * 0x10000);
      });
      samples.push(String.fromCharCode(...units));
    }
    for (const body of samples) {
      const result = toResult({ status: 200, headers: HEADERS, body });
      expect(responsePayloadBytes(result)).toBe(Buffer.byteLength(JSON.stringify(result), 'utf8'));
    }
  });

  it.each([
    ['plain text', 'a', 1],
    ['quotes (escaped)', '"', 2],
    ['two-byte characters', 'é', 2],
  ])('lets a response of exactly the limit through and refuses one byte more (%s)', (_case, unit, size) => {
    expect(oversizeResponse(resultOf(LAMBDA_RESPONSE_LIMIT_BYTES, unit, size))).toBeUndefined();
    const over = oversizeResponse(resultOf(LAMBDA_RESPONSE_LIMIT_BYTES + 1, unit, size));
    expect(over).toBeInstanceOf(ResponseTooLargeError);
    expect(over?.status).toBe(413);
    expect(over?.message).toBe(
      `the response is ${LAMBDA_RESPONSE_LIMIT_BYTES + 1} bytes as Lambda delivers it (JSON, binary bodies base64-encoded), over Lambda's limit of 6291556 bytes for a synchronous response: ask for fewer outputs (the request's "outputs"), for binary outputs ("binary_data_output": true, about 5.3 bytes a float32 once base64-encoded instead of up to 20 as JSON text), or send a smaller batch`,
    );
  });

  it('counts a binary body base64-encoded, and does not suggest binary outputs for it', () => {
    const raw = new Uint8Array(Math.ceil((LAMBDA_RESPONSE_LIMIT_BYTES * 3) / 4));
    const result = toResult({
      status: 200,
      headers: { 'content-type': 'application/octet-stream' },
      body: raw,
    });
    expect(result.isBase64Encoded).toBe(true);
    const over = oversizeResponse(result);
    expect(over?.message).toMatch(
      /^the response is \d+ bytes .*: ask for fewer outputs \(the request's "outputs"\) or send a smaller batch$/,
    );
  });
});
