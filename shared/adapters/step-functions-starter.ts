/**
 * The batch trigger's way into Step Functions: `StartExecution` of the batch state machine under a name
 * derived from the object version. For a STANDARD state machine Step Functions itself answers a repeat
 * with the same name and input while the first execution runs with that execution; once it has ended, or
 * for another input, it answers `ExecutionAlreadyExists`, and then the existing execution's input decides:
 * the same input is a re-delivered event (success, nothing started), another one is a conflict.
 */
import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  SFNClient,
  type SFNClientConfig,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import type { ExecutionRequest, ExecutionStarted, ExecutionStarter } from '../core/batch/distributed-trigger';
import { ExecutionConflictError } from '../core/batch/errors';

/** The client and the state machine a {@link StepFunctionsStarter} starts. */
export interface StepFunctionsStarterOptions {
  readonly client: SFNClient;
  /** `arn:aws:states:<region>:<account>:stateMachine:<name>` */
  readonly stateMachineArn: string;
}

/**
 * @example
 * const starter = new StepFunctionsStarter({ client: createStepFunctionsClient(), stateMachineArn });
 * await starter.start({ name: executionName(object), input: distributedInput(object) });
 */
export class StepFunctionsStarter implements ExecutionStarter {
  readonly #client: SFNClient;
  readonly #stateMachineArn: string;

  constructor(options: StepFunctionsStarterOptions) {
    this.#client = options.client;
    this.#stateMachineArn = options.stateMachineArn;
  }

  async start(request: ExecutionRequest): Promise<ExecutionStarted> {
    const input = JSON.stringify(request.input);
    try {
      const output = await this.#client.send(
        new StartExecutionCommand({ stateMachineArn: this.#stateMachineArn, name: request.name, input }),
      );
      if (output.executionArn === undefined) throw new Error('StartExecution answered no executionArn');
      return { executionArn: output.executionArn, alreadyStarted: false };
    } catch (error) {
      if (!(error instanceof ExecutionAlreadyExists)) throw error;
    }
    const executionArn = `${this.#stateMachineArn.replace(':stateMachine:', ':execution:')}:${request.name}`;
    const existing = await this.#client.send(new DescribeExecutionCommand({ executionArn }));
    if (canonical(existing.input) !== canonical(input)) {
      throw new ExecutionConflictError(
        `the execution '${request.name}' exists with another input than ${input}: not starting it again`,
      );
    }
    return { executionArn, alreadyStarted: true };
  }
}

/** JSON text with its object keys sorted, so that two spellings of one input compare equal. */
function canonical(text: string | undefined): string {
  if (text === undefined) return '';
  const sort = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(sort);
    if (typeof value !== 'object' || value === null) return value;
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([key, item]) => [key, sort(item)]),
    );
  };
  try {
    return JSON.stringify(sort(JSON.parse(text)));
  } catch {
    return text;
  }
}

/** The Step Functions client of an instance; region and credentials from the SDK's default chains. */
export function createStepFunctionsClient(options: SFNClientConfig = {}): SFNClient {
  return new SFNClient(options);
}
