/**
 * One S3 trigger, two engines. An upload under the input prefix is scored in the batch function (the
 * runner, continuing itself past the deadline); an upload of at least `BATCH_DISTRIBUTED_MIN_MB` starts
 * the Step Functions Distributed Map (functions/batch/state-machine.asl.json) instead, when the
 * deployment names one (`BATCH_STATE_MACHINE_ARN`). The execution is named after the object version, so
 * a re-delivered S3 event finds the execution it already started instead of starting a second one.
 */
import { createHash } from 'node:crypto';
import type { BatchConfig } from './batch-config';
import type { BatchResult, InvocationClock, JobOutcome } from './batch-job';
import type { BatchEvent } from './events';
import { normalizeEtag, parseInputKey } from './object-names';
import { type BatchLog, NO_LOG, type ObjectVersionRef } from './ports';

/** The state machine's execution input: the object as stored (key not URL-encoded) and its version. */
export interface DistributedInput {
  readonly bucket: string;
  readonly key: string;
  readonly etag?: string;
  readonly versionId?: string;
  /** The object's size as the event gave it: the plan checks it against HEAD and GET. */
  readonly size?: number;
}

/** An execution to start: its name (unique per object version) and its input. */
export interface ExecutionRequest {
  readonly name: string;
  readonly input: DistributedInput;
}

/** What starting an execution came to. */
export interface ExecutionStarted {
  readonly executionArn: string;
  /** An execution of that name and input existed already (a re-delivered event): nothing new started. */
  readonly alreadyStarted: boolean;
}

/** Port: starts a named execution of the batch state machine. Adapter: `StepFunctionsStarter`. */
export interface ExecutionStarter {
  /**
   * Starts `request`. An execution of the same name and the same input, running or finished, is success
   * with `alreadyStarted: true`; the same name with another input is an error.
   */
  start(request: ExecutionRequest): Promise<ExecutionStarted>;
}

/** An upload handed to the state machine rather than scored in this invocation. */
export interface DistributedOutcome {
  readonly status: 'distributed';
  readonly key: string;
  readonly execution: string;
  readonly executionArn: string;
  readonly alreadyStarted: boolean;
}

/** What the trigger answers: the runner's answer, with the executions an S3 event started beside it. */
export type TriggerResult =
  | BatchResult
  | {
      readonly outcomes: readonly JobOutcome[];
      readonly scheduled: number;
      readonly distributed: readonly DistributedOutcome[];
    };

/** Step Functions' limit on execution names. */
export const EXECUTION_NAME_MAX = 80;
const HASH_CHARS = 24;

/**
 * The execution name of an object version: the tail of its key, in the characters Step Functions
 * accepts everywhere (CloudWatch Logs included: letters, digits, `-`, `_`), then a hash of the bucket,
 * the key, the ETag and the version id. Two versions of one key get two names; one version gets one name
 * however often its event is delivered. At most {@link EXECUTION_NAME_MAX} characters.
 *
 * @example
 * executionName({ bucket: 'data', key: 'batch/in/linear/day 1.jsonl', etag: '9b2c...' });
 * // 'batch_in_linear_day_1_jsonl-5c0e1a...' (24 hex characters of hash)
 */
export function executionName(object: ObjectVersionRef): string {
  const identity = JSON.stringify([
    object.bucket,
    object.key,
    object.etag === undefined ? null : normalizeEtag(object.etag),
    object.versionId ?? null,
  ]);
  const hash = createHash('sha256').update(identity).digest('hex').slice(0, HASH_CHARS);
  const readable = object.key
    .replace(/[^A-Za-z0-9_-]+/g, '_')
    .slice(-(EXECUTION_NAME_MAX - HASH_CHARS - 1))
    .replace(/^[_-]+/, '');
  return readable === '' ? hash : `${readable}-${hash}`;
}

/** The execution input for an object version. */
export function distributedInput(object: ObjectVersionRef): DistributedInput {
  return {
    bucket: object.bucket,
    key: object.key,
    ...(object.etag === undefined ? {} : { etag: normalizeEtag(object.etag) }),
    ...(object.versionId === undefined ? {} : { versionId: object.versionId }),
    ...(object.size === undefined ? {} : { size: object.size }),
  };
}

/**
 * Whether an S3 event's object goes to the state machine: one is configured, the event says the object
 * holds at least `distributedMinBytes` and names its version, and the key is a job that can be sharded
 * (under the input prefix, with a model folder, not gzip, which reads as one shard). Everything else,
 * ignored keys included, stays with the runner, which scores or logs it as before.
 */
export function goesDistributed(object: ObjectVersionRef, config: BatchConfig): boolean {
  if (config.stateMachineArn === undefined) return false;
  if (object.size === undefined || object.size < config.distributedMinBytes) return false;
  if (object.etag === undefined && object.versionId === undefined) return false;
  if (config.input.bucket !== undefined && config.input.bucket !== object.bucket) return false;
  const input = parseInputKey(object.key, config.input.prefix);
  return input.ok && !input.input.gzipSuffix;
}

/** What a {@link BatchTrigger} hands events to. */
export interface BatchEventRunner {
  handle(event: BatchEvent, clock: InvocationClock): Promise<BatchResult>;
}

/** The ports and settings of a {@link BatchTrigger}. */
export interface BatchTriggerOptions {
  readonly runner: BatchEventRunner;
  /** Absent: no state machine is configured, every event goes to the runner. */
  readonly starter?: ExecutionStarter;
  readonly config: BatchConfig;
  readonly log?: BatchLog;
}

/**
 * The batch door's first stop: S3 events' large uploads start the state machine, everything else (small
 * uploads, continuations, the state machine's own plan, shard and commit invocations) goes to the runner.
 *
 * @example
 * const trigger = new BatchTrigger({ runner, starter, config: config.batch });
 * await trigger.handle(readBatchEvent(event), { remainingMs: () => context.getRemainingTimeInMillis() });
 */
export class BatchTrigger {
  readonly #runner: BatchEventRunner;
  readonly #starter: ExecutionStarter | undefined;
  readonly #config: BatchConfig;
  readonly #log: BatchLog;

  constructor(options: BatchTriggerOptions) {
    this.#runner = options.runner;
    this.#starter = options.starter;
    this.#config = options.config;
    this.#log = options.log ?? NO_LOG;
  }

  async handle(event: BatchEvent, clock: InvocationClock): Promise<TriggerResult> {
    const starter = this.#starter;
    if (event.kind !== 's3' || starter === undefined) return this.#runner.handle(event, clock);
    const large = event.objects.filter((object) => goesDistributed(object, this.#config));
    if (large.length === 0) return this.#runner.handle(event, clock);
    const distributed: DistributedOutcome[] = [];
    for (const object of large) {
      const name = executionName(object);
      const started = await starter.start({ name, input: distributedInput(object) });
      this.#log.info(
        started.alreadyStarted
          ? 'batch job already started on Step Functions'
          : 'batch job started on Step Functions',
        { key: object.key, size: object.size, execution: name, executionArn: started.executionArn },
      );
      distributed.push({ status: 'distributed', key: object.key, execution: name, ...started });
    }
    const small = event.objects.filter((object) => !large.includes(object));
    const result = await this.#runner.handle({ ...event, objects: small }, clock);
    if (!('outcomes' in result)) throw new Error('the runner answered an S3 event without outcomes');
    return { ...result, distributed };
  }
}
