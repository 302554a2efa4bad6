/**
 * Scores the records of one part through the inference service, a micro-batch at a time. A micro-batch
 * that the engine refuses is retried record by record, so one bad record fails alone and its neighbours
 * are scored; a failure that is not the records' fault (the model cannot be loaded, the service is
 * overloaded) is thrown, so the job stops and retries instead of filing good records as errors.
 */
import { InvalidInputError, PayloadTooLargeError, ServingError } from '../errors';
import type { InferInput, InferOutput } from '../protocol/infer-types';
import type { ModelSignature } from '../tensor';
import { planMicroBatches, splitOutputs, stackInputs } from './micro-batch';
import { failureOf, type ParsedRecord, type RecordFailure } from './records';

/** The part of {@link InferenceService} that scoring uses. */
export interface Scorer {
  inferWith(
    name: string,
    version: string | undefined,
    build: (signature: ModelSignature) => InferInput[],
  ): Promise<{ version: string; outputs: InferOutput[] }>;
}

/** The model (pinned version) and caps records are scored with. */
export interface ScoreOptions {
  readonly scorer: Scorer;
  readonly model: string;
  /** The version resolved when the job started: every part of a job uses it. */
  readonly version: string;
  /** Records are single examples stacked along dim 0 (see `hasBatchAxis`); otherwise one run each. */
  readonly batched: boolean;
  /** The model's max batch size. */
  readonly maxBatchRecords: number;
  /** Bytes of input tensor data in one micro-batch at most. */
  readonly maxBatchBytes: number;
}

/** A record's outputs, or why it could not be scored. */
export type RecordOutcome =
  | { readonly ok: true; readonly outputs: readonly InferOutput[] }
  | { readonly ok: false; readonly failure: RecordFailure };

/**
 * The outcome of each record, in the order given.
 *
 * @throws the service's error when it is not about the records (e.g. {@link ModelLoadError})
 * @example
 * const outcomes = await scoreRecords(records, { scorer: service, model: 'linear', version: '1', batched: true,
 *   maxBatchRecords: 64, maxBatchBytes: 4 << 20 });
 */
export async function scoreRecords(
  records: readonly ParsedRecord[],
  options: ScoreOptions,
): Promise<RecordOutcome[]> {
  const outcomes = new Array<RecordOutcome>(records.length);
  const maxRecords = options.batched ? options.maxBatchRecords : 1;
  for (const batch of planMicroBatches(records, maxRecords, options.maxBatchBytes)) {
    const members = batch.map((i) => records[i] as ParsedRecord);
    try {
      const results = await run(members, options);
      batch.forEach((index, k) => {
        outcomes[index] = { ok: true, outputs: results[k] as InferOutput[] };
      });
    } catch (error) {
      if (!isRecordsFault(error)) throw error;
      for (const [k, index] of batch.entries()) {
        const record = members[k] as ParsedRecord;
        if (batch.length === 1) {
          outcomes[index] = { ok: false, failure: failureOf(record.line, record.id, error) };
          continue;
        }
        try {
          outcomes[index] = { ok: true, outputs: (await run([record], options))[0] as InferOutput[] };
        } catch (alone) {
          if (!isRecordsFault(alone)) throw alone;
          outcomes[index] = { ok: false, failure: failureOf(record.line, record.id, alone) };
        }
      }
    }
  }
  return outcomes;
}

async function run(records: readonly ParsedRecord[], options: ScoreOptions): Promise<InferOutput[][]> {
  const inputs = options.batched ? stackInputs(records) : [...(records[0] as ParsedRecord).inputs];
  const { outputs } = await options.scorer.inferWith(options.model, options.version, () => inputs);
  return options.batched ? splitOutputs(outputs, records.length) : [outputs];
}

/**
 * Errors the records may have caused: the service refusing their tensors, or the engine failing on them
 * (anything that is not one of our named errors). Named errors about the model or the instance are not.
 */
export function isRecordsFault(error: unknown): boolean {
  if (error instanceof InvalidInputError || error instanceof PayloadTooLargeError) return true;
  return !(error instanceof ServingError);
}
