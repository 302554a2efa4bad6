/** What the cold-start part hands its per-sample child processes, and what they report back. */

/** The model input a baseline builds itself (with {@link benchInput}). */
export interface ColdInput {
  readonly name: string;
  readonly shape: readonly number[];
}

/** A baseline program's job: read or download the `.onnx` file, create a session, run once. */
export interface BaselineSpec {
  readonly input: ColdInput;
  /** floor: the file already on local disk. */
  readonly modelFile?: string;
  /** naive: where the object is, and the file in /tmp to download it to. */
  readonly download?: {
    readonly endpoint: string;
    readonly bucket: string;
    readonly key: string;
    readonly file: string;
  };
}

/** What a baseline's `run` returns: its own phases (ms) and the first output's values. */
export interface BaselineOutcome {
  readonly phases: Readonly<Record<string, number>>;
  readonly output: number[];
}

/** The child's report. Marks are `performance.now()` of the child; `timeOrigin` aligns them to the epoch. */
export interface ColdSampleReport {
  readonly timeOrigin: number;
  /** The child's first statement. */
  readonly entryAt: number;
  /** After `require` of the program under test (the handler bundle, or a baseline's). */
  readonly loadedAt: number;
  /** The first correct answer is in hand. */
  readonly doneAt: number;
  readonly phases: Readonly<Record<string, number>>;
  /** Peak resident memory of the child's own process image, KiB (`VmHWM`). */
  readonly peakRssKiB: number;
  readonly output: number[];
}
