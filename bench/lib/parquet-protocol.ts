/** What the parquet part hands its child processes, and what they report back. */

export interface ParquetSpec {
  /** A Parquet file on local disk: an `id` column and feature columns `f0`, `f1`, ... */
  readonly file: string;
  readonly records: number;
  /** The ORT file of the model, for the pipeline's and the raw loop's session. */
  readonly ortFile: string;
  readonly inputName: string;
  readonly features: number;
  /** Rows per run: the model's maxBatchSize, the pipeline's micro-batch size. */
  readonly batchSize: number;
}

export interface ParquetReport {
  /** Footer, row groups, mapping, runs and output encoding, ms. */
  readonly pipelineMs: number;
  /** The raw loop over tensors of the same count and batch size, ms. */
  readonly rawMs: number;
  /** Peak resident memory right after the pipeline, before the raw loop allocates anything, KiB. */
  readonly peakRssKiB: number;
  readonly rowGroups: number;
  readonly bytesRead: number;
  readonly outputBytes: number;
}
