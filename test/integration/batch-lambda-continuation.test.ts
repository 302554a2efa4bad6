/**
 * The continuation adapter through the real Lambda SDK client, against a loopback HTTP server that plays
 * the Lambda Invoke API: what goes on the wire is what Lambda would receive.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { LambdaContinuation } from '../../shared/adapters/lambda-continuation';
import type { ContinuationPayload } from '../../shared/core/batch/ports';

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

let server: Server;
let client: LambdaClient;
const received: Received[] = [];
let answer: { status: number; headers?: Record<string, string>; body?: string } = { status: 202 };

beforeAll(async () => {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      received.push({
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      response.writeHead(answer.status, answer.headers ?? {});
      response.end(answer.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  client = new LambdaClient({
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    region: 'eu-west-1',
    credentials: { accessKeyId: 'AKID', secretAccessKey: 'SECRET' },
    maxAttempts: 1,
  });
});

afterAll(async () => {
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  received.length = 0;
  answer = { status: 202 };
});

const PAYLOAD: ContinuationPayload = {
  onnxServerlessBatch: {
    action: 'run',
    object: { bucket: 'data', key: 'batch/in/linear/day 1.jsonl', etag: 'abc' },
    hop: 3,
  },
};

describe('LambdaContinuation', () => {
  it('invokes the function asynchronously (InvocationType Event) with the continuation as payload', async () => {
    await new LambdaContinuation({ client, functionName: 'onnx-serverless-dev-batch' }).schedule(PAYLOAD);
    expect(received).toHaveLength(1);
    const [request] = received;
    expect(request?.method).toBe('POST');
    expect(request?.url).toBe('/2015-03-31/functions/onnx-serverless-dev-batch/invocations');
    expect(request?.headers['x-amz-invocation-type']).toBe('Event');
    expect(request?.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKID\/\d+\/eu-west-1\/lambda\//,
    );
    expect(JSON.parse(request?.body ?? '')).toEqual(PAYLOAD);
  });

  it('fails when Lambda did not queue the invocation', async () => {
    answer = { status: 200, body: '{}' };
    await expect(new LambdaContinuation({ client, functionName: 'batch' }).schedule(PAYLOAD)).rejects.toThrow(
      'invoking batch asynchronously answered 200, not 202',
    );
  });

  it('passes on a refusal of the Lambda API', async () => {
    answer = {
      status: 429,
      headers: { 'content-type': 'application/json', 'x-amzn-errortype': 'TooManyRequestsException' },
      body: JSON.stringify({ Type: 'User', message: 'Rate Exceeded.' }),
    };
    await expect(
      new LambdaContinuation({ client, functionName: 'batch' }).schedule(PAYLOAD),
    ).rejects.toMatchObject({
      name: 'TooManyRequestsException',
    });
  });
});
