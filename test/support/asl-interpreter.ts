/**
 * A local interpreter of the subset of the Amazon States Language that functions/batch/state-machine.asl.json
 * uses: Task on `lambda:invoke`, Choice (StringEquals, BooleanEquals), a Distributed Map with an S3 JSON
 * ItemReader and an ItemBatcher (child executions run at once), Succeed, and JSONPath `$` / `$.a.b` in
 * Parameters, ResultSelector, ResultPath, InputPath and OutputPath. Anything else in the definition fails.
 * Lambda invocations and S3 reads go to the {@link Services} the caller gives.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The batch function's ARN as the tests substitute it for `${BatchFunctionArn}`. */
export const FUNCTION_ARN = 'arn:aws:lambda:eu-west-1:123456789012:function:onnx-serverless-batch';
export const DEFINITION_FILE = join(__dirname, '../../functions/batch/state-machine.asl.json');

export type Json = Record<string, unknown>;

export interface StateMachine {
  readonly StartAt: string;
  readonly States: Readonly<Record<string, Json>>;
}

/** The definition as CloudFormation deploys it: DefinitionSubstitutions applied. */
export function definition(): StateMachine {
  const text = readFileSync(DEFINITION_FILE, 'utf8');
  const placeholder = ['$', '{BatchFunctionArn}'].join('');
  return JSON.parse(text.replaceAll(placeholder, FUNCTION_ARN)) as StateMachine;
}

/** What the state machine's tasks reach: Lambda (`lambda:invoke`) and S3 (the ItemReader). */
export interface Services {
  invoke(functionName: string, payload: unknown): Promise<unknown>;
  getObject(bucket: string, key: string): Promise<string>;
}

/** `$` or `$.a.b`: the only JSONPath the definition may use (anything else fails the test). */
function select(data: unknown, path: string): unknown {
  if (path === '$') return data;
  if (!/^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(path)) throw new Error(`unsupported JSONPath '${path}'`);
  return path
    .slice(2)
    .split('.')
    .reduce<unknown>((value, key) => {
      if (typeof value !== 'object' || value === null || !(key in value)) {
        throw new Error(`States.Runtime: '${path}' is not in the state's input`);
      }
      return (value as Json)[key];
    }, data);
}

/** Parameters / ResultSelector / BatchInput templates: keys ending in `.$` take a path's value. */
function fill(template: unknown, data: unknown): unknown {
  if (typeof template !== 'object' || template === null || Array.isArray(template)) return template;
  const out: Json = {};
  for (const [key, value] of Object.entries(template)) {
    if (key.endsWith('.$')) out[key.slice(0, -2)] = select(data, value as string);
    else out[key] = fill(value, data);
  }
  return out;
}

function place(input: unknown, resultPath: unknown, result: unknown): unknown {
  if (resultPath === undefined || resultPath === '$') return result;
  if (resultPath === null) return input;
  const keys = (resultPath as string).slice(2).split('.');
  const root = structuredClone(input) as Json;
  let at = root;
  for (const key of keys.slice(0, -1)) {
    at[key] = typeof at[key] === 'object' && at[key] !== null ? at[key] : {};
    at = at[key] as Json;
  }
  at[keys.at(-1) as string] = result;
  return root;
}

function matches(choice: Json, data: unknown): boolean {
  const value = select(data, choice.Variable as string);
  if ('StringEquals' in choice) return value === choice.StringEquals;
  if ('BooleanEquals' in choice) return value === choice.BooleanEquals;
  throw new Error(`unsupported Choice rule ${JSON.stringify(choice)}`);
}

/**
 * A Task's `Retry`: a failed invocation (the function threw; its error name is the Lambda error type) is
 * run again while a retrier whose `ErrorEquals` names it (or `States.ALL`, or `States.TaskFailed`, which
 * matches every task failure) has attempts left; each retry is traced as `retry <error name>`. No waiting:
 * intervals are AWS's business.
 */
async function withRetry<T>(state: Json, trace: string[], run: () => Promise<T>): Promise<T> {
  const retriers = (state.Retry as Json[] | undefined) ?? [];
  const used = new Map<Json, number>();
  for (;;) {
    try {
      return await run();
    } catch (error) {
      const name = (error as Error).name;
      const retrier = retriers.find((r) =>
        (r.ErrorEquals as string[]).some(
          (e) => e === name || e === 'States.ALL' || e === 'States.TaskFailed',
        ),
      );
      const attempts = retrier === undefined ? 0 : (used.get(retrier) ?? 0);
      if (retrier === undefined || attempts >= ((retrier.MaxAttempts as number | undefined) ?? 3))
        throw error;
      used.set(retrier, attempts + 1);
      trace.push(`retry ${name}`);
    }
  }
}

/** Runs a (sub-)state machine to its end; returns its output. */
export async function execute(
  machine: StateMachine,
  input: unknown,
  services: Services,
  trace: string[],
): Promise<unknown> {
  let name = machine.StartAt;
  let data = input;
  for (let step = 0; step < 10_000; step++) {
    const state = machine.States[name];
    if (state === undefined) throw new Error(`no state '${name}'`);
    trace.push(name);
    const effective = state.InputPath === undefined ? data : select(data, state.InputPath as string);
    const output = (value: unknown) =>
      state.OutputPath === undefined ? value : select(value, state.OutputPath as string);
    switch (state.Type) {
      case 'Task': {
        if (state.Resource !== 'arn:aws:states:::lambda:invoke') {
          throw new Error(`unsupported Task resource ${String(state.Resource)}`);
        }
        const parameters = fill(state.Parameters, effective) as { FunctionName: string; Payload: unknown };
        let result: unknown = {
          StatusCode: 200,
          Payload: await withRetry(state, trace, () =>
            services.invoke(parameters.FunctionName, parameters.Payload),
          ),
        };
        if (state.ResultSelector !== undefined) result = fill(state.ResultSelector, result);
        data = output(place(data, state.ResultPath, result));
        break;
      }
      case 'Choice': {
        const choice = (state.Choices as Json[]).find((c) => matches(c, effective));
        name = (choice?.Next ?? state.Default) as string;
        continue;
      }
      case 'Map': {
        const processor = state.ItemProcessor as StateMachine & { ProcessorConfig: Json };
        if (processor.ProcessorConfig.Mode !== 'DISTRIBUTED') throw new Error('the Map is not DISTRIBUTED');
        const reader = state.ItemReader as Json;
        if (
          reader.Resource !== 'arn:aws:states:::s3:getObject' ||
          (reader.ReaderConfig as Json | undefined)?.InputType !== 'JSON'
        ) {
          throw new Error(`unsupported ItemReader ${JSON.stringify(reader)}`);
        }
        const location = fill(reader.Parameters, effective) as { Bucket: string; Key: string };
        const items = JSON.parse(await services.getObject(location.Bucket, location.Key)) as unknown[];
        const batcher = state.ItemBatcher as { MaxItemsPerBatch: number; BatchInput: unknown };
        const batchInput = fill(batcher.BatchInput, effective);
        const batches: unknown[][] = [];
        for (let i = 0; i < items.length; i += batcher.MaxItemsPerBatch) {
          batches.push(items.slice(i, i + batcher.MaxItemsPerBatch));
        }
        // Child executions run at once, as the Distributed Map runs them.
        const results = await Promise.all(
          batches.map((batch) =>
            execute(processor, { Items: batch, BatchInput: batchInput }, services, trace),
          ),
        );
        data = output(place(data, state.ResultPath, results));
        break;
      }
      case 'Succeed':
        return output(effective);
      default:
        throw new Error(`unsupported state type ${String(state.Type)}`);
    }
    if (state.End === true) return data;
    name = state.Next as string;
  }
  throw new Error('the execution did not end');
}
