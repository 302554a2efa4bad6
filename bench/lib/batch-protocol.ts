/** What the batch-throughput part hands its child processes, and what they report back. */

export interface BatchSpec {
  /** The bundled batch handler (dist/batch/index.js). */
  readonly handler: string;
  readonly bucket: string;
  /** A small input scored first, untimed: it loads and warms the model. */
  readonly warmupKey: string;
  readonly warmupEtag: string;
  /** The measured input. */
  readonly inputKey: string;
  readonly inputEtag: string;
  /** Records of the measured input: the first `records` of `benchInput`, `features` values each. */
  readonly records: number;
  /** The ORT file the handler serves, for the raw loop's session. */
  readonly ortFile: string;
  readonly inputName: string;
  readonly features: number;
  /** Rows per raw run: the runner's micro-batch size (the model's maxBatchSize). */
  readonly batchSize: number;
}

export interface BatchReport {
  /** The handler's invocation for the measured input, ms. */
  readonly jobMs: number;
  readonly outcome: { readonly status: string; readonly counts?: Readonly<Record<string, number>> };
  /** Peak resident memory right after the job, before the raw loop allocates anything, KiB. */
  readonly peakRssKiB: number;
  /** The raw loop over pre-parsed tensors, ms. */
  readonly rawMs: number;
  readonly rawBatches: number;
}
