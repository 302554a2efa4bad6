/**
 * A child process for corpus tests of the infer Lambda door: bundled with esbuild, it runs the real
 * `handler` (built from the environment, as on Lambda) on API Gateway v2 events read from a JSON file, one
 * after another in this one process, and appends each answer to a results file as it comes, so a process
 * that dies mid-corpus leaves the answers it gave.
 *
 * `node lambda-corpus-driver.js <cases.json> <results.jsonl>`; a case is
 * `{ method, path, body?, base64?, headers? }`, a result line `{ i, status, body }`.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { handler } from '../../functions/infer/handler';
import { apiEvent, lambdaContext } from './api-gateway';

export interface DriverCase {
  readonly method: string;
  readonly path: string;
  readonly body?: string;
  /** `body` is base64 of binary bytes. */
  readonly base64?: boolean;
  readonly headers?: Record<string, string>;
}

async function main(): Promise<void> {
  const [casesFile = '', resultsFile = ''] = process.argv.slice(2);
  const cases = JSON.parse(readFileSync(casesFile, 'utf8')) as DriverCase[];
  for (const [i, c] of cases.entries()) {
    const body = c.base64 === true ? new Uint8Array(Buffer.from(c.body ?? '', 'base64')) : c.body;
    const event = apiEvent('http-v2', c.method, c.path, {
      ...(body === undefined ? {} : { body }),
      ...(c.headers === undefined ? {} : { headers: c.headers }),
    });
    const result = await handler(event, lambdaContext());
    const text = result.isBase64Encoded ? '' : result.body;
    appendFileSync(resultsFile, `${JSON.stringify({ i, status: result.statusCode, body: text })}\n`);
  }
}

void main();
