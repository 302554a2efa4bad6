/**
 * A local Step Functions endpoint for one STANDARD state machine: an HTTP server on loopback speaking the
 * AWS JSON 1.0 protocol (`POST /`, `X-Amz-Target: AWSStepFunctions.<Operation>`) for `StartExecution` and
 * `DescribeExecution`, as the AWS SDK's SFN client calls them. It records every call and keeps the
 * service's rules on execution names: at most 80 characters of the allowed set, unique per state machine;
 * a repeat with the same name and input while that execution runs answers the running execution, and
 * otherwise `ExecutionAlreadyExists` (the StartExecution API reference). A started execution runs
 * `run(input)` (for example the local interpreter of the definition) and ends SUCCEEDED or FAILED with it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ExecutionStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED';

export interface StubExecution {
  readonly name: string;
  readonly executionArn: string;
  readonly input: string;
  readonly startDate: number;
  status: ExecutionStatus;
  output?: string;
  error?: string;
}

/** One request the stub answered. */
export interface StubCall {
  readonly operation: string;
  readonly body: Record<string, unknown>;
  /** The HTTP status answered, and the error type when it is an error. */
  readonly status: number;
  readonly errorType?: string;
}

export interface StepFunctionsStub {
  /** `http://127.0.0.1:<port>`, for the client's `endpoint`. */
  readonly endpoint: string;
  readonly stateMachineArn: string;
  readonly calls: readonly StubCall[];
  readonly executions: ReadonlyMap<string, StubExecution>;
  /** Adds an execution as if started earlier (finished, with `input`). */
  seed(name: string, input: string, status?: ExecutionStatus): void;
  /** Resolves when no execution is running. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export interface StepFunctionsStubOptions {
  readonly stateMachineArn: string;
  /** What an execution does with its input; its result is the execution's output. */
  readonly run: (input: unknown, execution: StubExecution) => Promise<unknown>;
}

// StartExecution's name rules: no whitespace, brackets, wildcards, these special characters or controls.
const FORBIDDEN = /[\s<>{}[\]?*"#%\\^|~`$&,;:/]/;
const isControl = (name: string) =>
  [...name].some((c) => c.charCodeAt(0) <= 0x1f || (c.charCodeAt(0) >= 0x7f && c.charCodeAt(0) <= 0x9f));

/** Starts the stub on a free loopback port. */
export async function startStepFunctionsStub(options: StepFunctionsStubOptions): Promise<StepFunctionsStub> {
  const { stateMachineArn } = options;
  const executionPrefix = `${stateMachineArn.replace(':stateMachine:', ':execution:')}:`;
  const calls: StubCall[] = [];
  const executions = new Map<string, StubExecution>();
  const running = new Set<Promise<void>>();

  const start = (body: Record<string, unknown>): [number, Record<string, unknown>] => {
    if (body.stateMachineArn !== stateMachineArn) {
      return error(
        400,
        'StateMachineDoesNotExist',
        `State Machine Does Not Exist: '${body.stateMachineArn}'`,
      );
    }
    const name = body.name;
    if (
      typeof name !== 'string' ||
      name.length < 1 ||
      name.length > 80 ||
      FORBIDDEN.test(name) ||
      isControl(name)
    ) {
      return error(400, 'InvalidName', `Invalid Name: '${String(name)}'`);
    }
    const input = typeof body.input === 'string' ? body.input : '{}';
    try {
      JSON.parse(input);
    } catch {
      return error(400, 'InvalidExecutionInput', 'Invalid Execution Input');
    }
    const existing = executions.get(name);
    if (existing !== undefined) {
      if (existing.status === 'RUNNING' && existing.input === input) {
        return [200, { executionArn: existing.executionArn, startDate: existing.startDate }];
      }
      return error(400, 'ExecutionAlreadyExists', `Execution Already Exists: '${existing.executionArn}'`);
    }
    const execution: StubExecution = {
      name,
      executionArn: `${executionPrefix}${name}`,
      input,
      startDate: Date.now() / 1000,
      status: 'RUNNING',
    };
    executions.set(name, execution);
    const done = options
      .run(JSON.parse(input), execution)
      .then(
        (output) => {
          execution.status = 'SUCCEEDED';
          execution.output = JSON.stringify(output);
        },
        (reason: unknown) => {
          execution.status = 'FAILED';
          execution.error = String(reason);
        },
      )
      .finally(() => running.delete(done));
    running.add(done);
    return [200, { executionArn: execution.executionArn, startDate: execution.startDate }];
  };

  const describe = (body: Record<string, unknown>): [number, Record<string, unknown>] => {
    const arn = String(body.executionArn);
    const execution = arn.startsWith(executionPrefix)
      ? executions.get(arn.slice(executionPrefix.length))
      : undefined;
    if (execution === undefined)
      return error(400, 'ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`);
    return [
      200,
      {
        executionArn: execution.executionArn,
        stateMachineArn,
        name: execution.name,
        status: execution.status,
        startDate: execution.startDate,
        input: execution.input,
        ...(execution.output === undefined ? {} : { output: execution.output }),
      },
    ];
  };

  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const target = String(request.headers['x-amz-target'] ?? '');
      const operation = target.startsWith('AWSStepFunctions.')
        ? target.slice('AWSStepFunctions.'.length)
        : '';
      let body: Record<string, unknown> = {};
      let answer: [number, Record<string, unknown>];
      if (
        request.method !== 'POST' ||
        !String(request.headers['content-type']).startsWith('application/x-amz-json-1.0')
      ) {
        answer = error(400, 'UnknownOperationException', 'not an AWS JSON 1.0 request');
      } else {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
        if (operation === 'StartExecution') answer = start(body);
        else if (operation === 'DescribeExecution') answer = describe(body);
        else answer = error(400, 'UnknownOperationException', `operation '${target}' is not stubbed`);
      }
      const [status, payload] = answer;
      const errorType = status === 200 ? undefined : String(payload.__type).split('#')[1];
      calls.push({ operation, body, status, ...(errorType === undefined ? {} : { errorType }) });
      response.writeHead(status, {
        'content-type': 'application/x-amz-json-1.0',
        'x-amzn-requestid': `stub-${calls.length}`,
      });
      response.end(JSON.stringify(payload));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    stateMachineArn,
    calls,
    executions,
    seed(name, input, status = 'SUCCEEDED') {
      executions.set(name, {
        name,
        executionArn: `${executionPrefix}${name}`,
        input,
        startDate: Date.now() / 1000,
        status,
      });
    },
    async idle() {
      while (running.size > 0) await Promise.allSettled([...running]);
    },
    close: () => new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve()))),
  };
}

function error(status: number, type: string, message: string): [number, Record<string, unknown>] {
  return [status, { __type: `com.amazonaws.states#${type}`, message }];
}
