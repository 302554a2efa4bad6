/** The contract between bench/run.ts and each part: options in, tables and JSON-ready figures out. */
import type { Table } from './table';

export const PART_NAMES = ['cold', 'overhead', 'batch', 'parquet', 'dynamic', 'overload', 'size'] as const;
export type PartName = (typeof PART_NAMES)[number];

export interface PartOptions {
  /** The tiny configuration of the test suite: smallest models, fewest runs. */
  readonly quick: boolean;
  /** Repetitions of each measurement (each figure is the median over them). */
  readonly runs: number;
  /** Repository root (the bench reads `dist/` and `node_modules/` from it). */
  readonly root: string;
  /** A temporary folder of this run, removed afterwards. */
  readonly workDir: string;
  /** Progress lines (stderr). */
  readonly log: (message: string) => void;
  /** `--sizes`: the record counts to measure, where a part has sizes (batch). */
  readonly sizes?: readonly number[];
  /** `--formats`: the input formats to measure, where a part has formats (batch: jsonl, parquet). */
  readonly formats?: readonly string[];
}

/** A goal of the issue, checked against a measured figure. */
export interface Target {
  readonly name: string;
  /** A short label for a table cell, e.g. `vs naive`. */
  readonly label?: string;
  readonly value: number;
  readonly comparison: '<=' | '>=';
  readonly limit: number;
  readonly met: boolean;
}

/** Builds a {@link Target}. */
export function target(
  name: string,
  value: number,
  comparison: '<=' | '>=',
  limit: number,
  label?: string,
): Target {
  const met = comparison === '<=' ? value <= limit : value >= limit;
  return { name, ...(label === undefined ? {} : { label }), value, comparison, limit, met };
}

/** `met` or `MISSED` per target (with its label), for a table's target column. */
export function verdict(targets: readonly Target[]): string {
  return targets
    .map((t) => `${t.label === undefined ? '' : `${t.label} `}${t.met ? 'met' : 'MISSED'}`)
    .join(', ');
}

export interface PartResult {
  readonly part: PartName;
  /** False when the part could not run here; `reason` says why and nothing is measured. */
  readonly available: boolean;
  readonly reason?: string;
  readonly tables: readonly Table[];
  readonly targets: readonly Target[];
  /** The part's figures (summaries and their samples), written to its JSON file. */
  readonly data: Readonly<Record<string, unknown>>;
}

/** A part that cannot run: prints `not available: <reason>` instead of a figure. */
export function unavailable(part: PartName, reason: string): PartResult {
  return {
    part,
    available: false,
    reason,
    tables: [{ title: `${part}: not available: ${reason}`, columns: [], rows: [] }],
    targets: [],
    data: {},
  };
}
