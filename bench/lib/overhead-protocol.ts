/** What the request-overhead part hands its child process, and what the child reports back. */

/** One measured case: a model, its input shape and the payload encoding of the request. */
export interface OverheadCase {
  readonly model: string;
  readonly input: { readonly name: string; readonly shape: readonly number[] };
  readonly payload: 'json' | 'binary';
  /** Timed iterations per round, for the handler and for the raw loop each. */
  readonly iterations: number;
}

export interface OverheadSpec {
  /** The bundled infer handler (dist/infer/index.js). */
  readonly handler: string;
  /** The model repository folder (the handler reads it through ONNX_SERVE_MODEL_REPOSITORY). */
  readonly repository: string;
  readonly cases: readonly OverheadCase[];
  readonly rounds: number;
  /** Untimed iterations of each loop before the first round. */
  readonly warmup: number;
}

/** Percentiles (ms) of one round of one loop. */
export interface RoundFigures {
  readonly p50: number;
  readonly p99: number;
}

export interface OverheadCaseReport {
  readonly model: string;
  readonly payload: 'json' | 'binary';
  /** Bytes of the request body as API Gateway delivers it (base64 text for binary). */
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly handler: readonly RoundFigures[];
  /** The engine run inside those same invocations, from the handler's `InferenceTime` metric. */
  readonly handlerEngine: readonly RoundFigures[];
  readonly raw: readonly RoundFigures[];
  /** A second raw session of the same file, created after the handler's: the session-to-session spread. */
  readonly control: readonly RoundFigures[];
}
