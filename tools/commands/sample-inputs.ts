/**
 * The inputs a precision variant is measured on: real samples from a JSON Lines file (the batch job's
 * record format, decoded and validated by the serving rules), or seeded random inputs shaped from the
 * model's dims when there are none.
 */
import { readFile } from 'node:fs/promises';
import { planMicroBatches, stackInputs } from '../../shared/core/batch/micro-batch';
import { createRecordParser, hasBatchAxis, type ParsedRecord } from '../../shared/core/batch/records';
import type { ModelSignature, Tensor } from '../../shared/core/tensor';
import { checkInputs } from './model-check';

/** One run's feeds. */
export type Feeds = Record<string, Tensor>;

/** Where the measurement inputs came from, as recorded next to the variant. */
export interface SampleSet {
  readonly source: 'samples' | 'random';
  readonly feeds: readonly Feeds[];
  /** Examples in all (records read, or random rows). */
  readonly examples: number;
}

/** Records a run stacks at most: a sample file of thousands of lines runs in a few dozen runs. */
const RECORDS_PER_RUN = 32;
const MAX_SAMPLE_BYTES = 256 * 1024 * 1024;

/** The sample file cannot be used; the message names the line at fault. */
export class SampleInputError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SampleInputError';
  }
}

/**
 * Reads `file` (JSON Lines: one example a line, `{"x": [...]}`, `{"inputs": ...}`, OIP tensors or a bare
 * array, as docs/batch.md describes) into runs for a model with `signature`. Records are stacked along a
 * new batch dim when every input's dim 0 is dynamic, else each line is one run.
 *
 * @throws {@link SampleInputError} naming the first bad line, or when the file has no record
 */
export async function readSampleInputs(file: string, signature: ModelSignature): Promise<SampleSet> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new SampleInputError(
      `cannot read --inputs ${file} (${code === 'ENOENT' ? 'no such file' : code})`,
      {
        cause: error,
      },
    );
  }
  if (bytes.byteLength > MAX_SAMPLE_BYTES) {
    throw new SampleInputError(
      `--inputs ${file} is over ${MAX_SAMPLE_BYTES / 1024 / 1024} MiB: use fewer samples`,
    );
  }
  const parse = createRecordParser({
    format: 'jsonl',
    signature,
    // Any model whose inputs all have a dynamic dim 0 takes stacked examples here, whatever its config says.
    maxBatchSize: RECORDS_PER_RUN,
    limits: { maxTensorElements: Number.MAX_SAFE_INTEGER },
    maxLineBytes: MAX_SAMPLE_BYTES,
    joinInput: false,
  });
  const records: ParsedRecord[] = [];
  let start = 0;
  let number = 0;
  while (start < bytes.byteLength) {
    number++;
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.byteLength;
    let line = bytes.subarray(start, end);
    if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
    if (number === 1 && line[0] === 0xef && line[1] === 0xbb && line[2] === 0xbf) line = line.subarray(3);
    const result = parse({ start, end: end + 1, number, bytes: new Uint8Array(line) });
    if (result.kind === 'failure') {
      throw new SampleInputError(`--inputs ${file} line ${number}: ${result.failure.message}`);
    }
    if (result.kind === 'record') records.push(result.record);
    start = end + 1;
  }
  if (records.length === 0) throw new SampleInputError(`--inputs ${file} holds no sample`);

  const feeds: Feeds[] = [];
  if (hasBatchAxis(signature, RECORDS_PER_RUN)) {
    const plan = planMicroBatches(records, RECORDS_PER_RUN, Number.MAX_SAFE_INTEGER);
    for (const indices of plan)
      feeds.push(toFeeds(stackInputs(indices.map((i) => records[i] as ParsedRecord))));
  } else {
    for (const record of records) feeds.push(toFeeds(record.inputs));
  }
  return { source: 'samples', feeds, examples: records.length };
}

function toFeeds(inputs: readonly (Tensor & { readonly name: string })[]): Feeds {
  return Object.fromEntries(
    inputs.map((i) => [i.name, { datatype: i.datatype, shape: i.shape, data: i.data }]),
  );
}

/**
 * `runs` sets of seeded random inputs (floats uniform in [-1, 1), integers in [0, 4): see
 * {@link checkInputs}), leading symbolic dims 2 and others 1 unless `dims` says otherwise.
 */
export function randomInputs(
  signature: ModelSignature,
  runs: number,
  dims: Readonly<Record<string, number>> = {},
): SampleSet {
  const feeds: Feeds[] = [];
  let examples = 0;
  for (let seed = 1; seed <= runs; seed++) {
    const f = checkInputs(signature, seed, dims);
    feeds.push(f);
    examples += Object.values(f)[0]?.shape[0] ?? 1;
  }
  return { source: 'random', feeds, examples };
}
