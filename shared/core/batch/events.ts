/**
 * The invocation payloads the batch door takes, told apart and checked:
 *
 * - an S3 event (`{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", ...}]}`), keys
 *   URL-decoded as AWS encodes them;
 * - a continuation, `{"onnxServerlessBatch": {"action": "run", "object": {...}, "hop": 3}}`;
 * - the Step Functions states of `functions/batch/state-machine.asl.json`: `{"action": "plan", "bucket",
 *   "key"}`, the Distributed Map's batched items `{"Items": [{"bucket", "key", "range": [start, end]}],
 *   "BatchInput": {"job": {...}}}` and `{"action": "commit", "job": {...}}`.
 */
import { printable } from '../names';
import { InvalidBatchEventError } from './errors';
import { isJobSpec, type JobSpec } from './job-state';
import { decodeS3EventKey } from './object-names';
import type { ObjectVersionRef } from './ports';

/** One shard of a Distributed Map item batch: an object and a byte range `[start, end)` (end null: to EOF). */
export interface ShardItem {
  readonly bucket: string;
  readonly key: string;
  readonly range: readonly [number, number | null];
  readonly newlinesBefore?: number;
}

/** An invocation payload, told apart by {@link readBatchEvent}. */
export type BatchEvent =
  | {
      readonly kind: 's3';
      readonly objects: readonly ObjectVersionRef[];
      /** Records that are not object creations (e.g. `ObjectRemoved:Delete`), for the log. */
      readonly skipped: readonly { readonly eventName: string; readonly key: string }[];
    }
  | { readonly kind: 'run'; readonly object: ObjectVersionRef; readonly hop: number }
  | {
      readonly kind: 'plan';
      readonly bucket: string;
      readonly key: string;
      /** What the S3 event said of the object, when the execution input carries it. */
      readonly etag?: string;
      readonly versionId?: string;
      readonly size?: number;
    }
  | { readonly kind: 'shards'; readonly job: JobSpec; readonly items: readonly ShardItem[] }
  | { readonly kind: 'commit'; readonly job: JobSpec };

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Tells the payload's kind and checks its shape.
 *
 * @throws {@link InvalidBatchEventError} naming what is wrong
 */
export function readBatchEvent(event: unknown): BatchEvent {
  if (!isObject(event)) throw new InvalidBatchEventError('the batch event must be a JSON object');
  if (Array.isArray(event.Records)) return readS3Event(event.Records);
  if (isObject(event.onnxServerlessBatch)) return readContinuation(event.onnxServerlessBatch);
  if (Array.isArray(event.Items)) return readItems(event.Items, event.BatchInput);
  if (event.action === 'plan') {
    if (typeof event.bucket !== 'string' || typeof event.key !== 'string' || event.key === '') {
      throw new InvalidBatchEventError(`a plan request needs 'bucket' and 'key'`);
    }
    return { kind: 'plan', bucket: event.bucket, key: event.key, ...eventFacts(event.execution) };
  }
  if (event.action === 'commit') {
    if (!isJobSpec(event.job)) throw new InvalidBatchEventError(`a commit request needs the plan's 'job'`);
    return { kind: 'commit', job: event.job };
  }
  throw new InvalidBatchEventError(
    'the event is neither an S3 event, a batch continuation nor a Step Functions batch state',
  );
}

/**
 * The ETag, version and size of the S3 event that started an execution, from its input (the plan state
 * passes the whole execution input as `execution`); absent fields are left out.
 */
function eventFacts(execution: unknown): { etag?: string; versionId?: string; size?: number } {
  if (!isObject(execution)) return {};
  return {
    ...(typeof execution.etag === 'string' && execution.etag !== '' ? { etag: execution.etag } : {}),
    ...(typeof execution.versionId === 'string' && execution.versionId !== ''
      ? { versionId: execution.versionId }
      : {}),
    ...(isSize(execution.size) ? { size: execution.size } : {}),
  };
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function readS3Event(records: unknown[]): BatchEvent {
  const objects: ObjectVersionRef[] = [];
  const skipped: { eventName: string; key: string }[] = [];
  for (const record of records) {
    if (!isObject(record) || record.eventSource !== 'aws:s3' || !isObject(record.s3)) {
      throw new InvalidBatchEventError('an S3 event record must have eventSource aws:s3 and an s3 entry');
    }
    const bucket = (record.s3.bucket as Json | undefined)?.name;
    const object = record.s3.object as Json | undefined;
    if (typeof bucket !== 'string' || typeof object?.key !== 'string') {
      throw new InvalidBatchEventError('an S3 event record must name the bucket and the object key');
    }
    let key: string;
    try {
      key = decodeS3EventKey(object.key);
    } catch (error) {
      throw new InvalidBatchEventError(`the S3 event key '${printable(object.key)}' is not URL-encoded`, {
        cause: error,
      });
    }
    const eventName = typeof record.eventName === 'string' ? record.eventName : '';
    if (!eventName.startsWith('ObjectCreated:')) {
      skipped.push({ eventName, key });
      continue;
    }
    objects.push({
      bucket,
      key,
      ...(typeof object.eTag === 'string' && object.eTag !== '' ? { etag: object.eTag } : {}),
      ...(typeof object.versionId === 'string' && object.versionId !== ''
        ? { versionId: object.versionId }
        : {}),
      ...(isSize(object.size) ? { size: object.size } : {}),
    });
  }
  return { kind: 's3', objects, skipped };
}

function readContinuation(body: Json): BatchEvent {
  const object = body.object;
  if (
    body.action !== 'run' ||
    !isObject(object) ||
    typeof object.bucket !== 'string' ||
    typeof object.key !== 'string' ||
    !Number.isSafeInteger(body.hop) ||
    (body.hop as number) < 0
  ) {
    throw new InvalidBatchEventError('a continuation needs action "run", the object and a hop count');
  }
  return {
    kind: 'run',
    object: {
      bucket: object.bucket,
      key: object.key,
      ...(typeof object.etag === 'string' ? { etag: object.etag } : {}),
      ...(typeof object.versionId === 'string' ? { versionId: object.versionId } : {}),
      ...(isSize(object.size) ? { size: object.size } : {}),
    },
    hop: body.hop as number,
  };
}

function readItems(items: unknown[], batchInput: unknown): BatchEvent {
  const job = isObject(batchInput) ? batchInput.job : undefined;
  if (!isJobSpec(job)) throw new InvalidBatchEventError(`a shard batch needs 'BatchInput.job' from the plan`);
  const shards = items.map((item, i): ShardItem => {
    const where = `Items[${i}]`;
    if (!isObject(item) || typeof item.bucket !== 'string' || typeof item.key !== 'string') {
      throw new InvalidBatchEventError(`${where} must name 'bucket' and 'key'`);
    }
    if (item.bucket !== job.input.bucket || item.key !== job.input.key) {
      throw new InvalidBatchEventError(`${where} is not a shard of the job's input`);
    }
    const range = item.range;
    const start = Array.isArray(range) ? range[0] : undefined;
    const end = Array.isArray(range) ? range[1] : undefined;
    if (
      !Array.isArray(range) ||
      range.length !== 2 ||
      !Number.isSafeInteger(start) ||
      (start as number) < 0 ||
      !(end === null || (Number.isSafeInteger(end) && (end as number) > (start as number)))
    ) {
      throw new InvalidBatchEventError(
        `${where}.range must be [start, end) with 0 <= start < end, or [start, null]`,
      );
    }
    const newlines = item.newlinesBefore;
    if (newlines !== undefined && (!Number.isSafeInteger(newlines) || (newlines as number) < 0)) {
      throw new InvalidBatchEventError(`${where}.newlinesBefore must be a non-negative integer`);
    }
    return {
      bucket: item.bucket,
      key: item.key,
      range: [start as number, end as number | null],
      ...(newlines === undefined ? {} : { newlinesBefore: newlines as number }),
    };
  });
  return { kind: 'shards', job, items: shards };
}
