/**
 * The batch door's continuation on AWS Lambda: an asynchronous invocation (`InvocationType: 'Event'`) of
 * the same function with the continuation payload. Lambda queues it and answers 202 at once; the new
 * invocation starts with a full time budget and resumes the job from its checkpoint. Asynchronous
 * invocations are retried by Lambda on failure (twice by default) and may be delivered more than once,
 * which the job tolerates: parts are immutable and the manifest is the commit point.
 */
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import type { Continuation, ContinuationPayload } from '../core/batch/ports';

/** The client and the function a {@link LambdaContinuation} invokes. */
export interface LambdaContinuationOptions {
  readonly client: LambdaClient;
  /** The function to invoke: this function's name or ARN (`AWS_LAMBDA_FUNCTION_NAME` on Lambda). */
  readonly functionName: string;
}

const utf8 = new TextEncoder();

/**
 * @example
 * const continuation = new LambdaContinuation({ client: new LambdaClient({}), functionName: 'batch' });
 * await continuation.schedule({ onnxServerlessBatch: { action: 'run', object, hop: 1 } });
 */
export class LambdaContinuation implements Continuation {
  readonly #client: LambdaClient;
  readonly #functionName: string;

  constructor(options: LambdaContinuationOptions) {
    this.#client = options.client;
    this.#functionName = options.functionName;
  }

  async schedule(payload: ContinuationPayload): Promise<void> {
    const output = await this.#client.send(
      new InvokeCommand({
        FunctionName: this.#functionName,
        InvocationType: 'Event',
        Payload: utf8.encode(JSON.stringify(payload)),
      }),
    );
    // An asynchronous invocation that Lambda accepted answers 202; anything else did not queue the job.
    if (output.StatusCode !== 202) {
      throw new Error(
        `invoking ${this.#functionName} asynchronously answered ${output.StatusCode ?? 'nothing'}, not 202`,
      );
    }
  }
}

/** The Lambda client of an instance; region and credentials from the SDK's default chains. */
export function createLambdaClient(region?: string): LambdaClient {
  return new LambdaClient(region === undefined ? {} : { region });
}
