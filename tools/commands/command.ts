/**
 * What every command of the `onnx-serve-models` CLI shares: its shape, its context (output streams and
 * environment, so tests run commands in-process), the usage error and the common options.
 */
import type { ParseArgsConfig } from 'node:util';
import { type ModelRepositoryWriter, RepositoryError } from '../repository/model-repository-writer';
import { openRepository } from '../repository/open-repository';

/** Where a command writes and what it reads from its surroundings. */
export interface CommandContext {
  /** Standard output: results (one call per line or block). */
  readonly out: (text: string) => void;
  /** Standard error: progress and warnings. */
  readonly err: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

/** Parsed arguments as node:util parseArgs gives them. */
export interface ParsedArgs {
  readonly values: Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;
  readonly positionals: readonly string[];
}

/** One subcommand. `run` throws {@link UsageError} for bad arguments and any other error for a failure. */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The full `--help` text. */
  readonly help: string;
  readonly options: OptionsConfig;
  run(args: ParsedArgs, context: CommandContext): Promise<void>;
}

/** Wrong arguments: the CLI prints the message and the command's help, and exits with 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The options every repository command takes. */
export const REPOSITORY_OPTIONS = {
  repo: { type: 'string' },
  endpoint: { type: 'string' },
  region: { type: 'string' },
} as const satisfies OptionsConfig;

export const REPOSITORY_HELP = `  --repo <folder | s3://bucket/prefix>   the model repository
  --endpoint <url>                       an S3-compatible server (path-style), e.g. http://127.0.0.1:9000
  --region <region>                      S3 region (default: AWS_REGION, then the SDK's chain)
  S3 credentials come from the AWS SDK's default chain (environment, profile, SSO, role).`;

/** A string option's value, or `undefined`. */
export function stringOption(args: ParsedArgs, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === 'string' ? value : undefined;
}

export function requiredOption(args: ParsedArgs, name: string): string {
  const value = stringOption(args, name);
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

/** A positive integer option, or `undefined` when absent. */
export function integerOption(args: ParsedArgs, name: string, min = 1): number | undefined {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer of at least ${min}, got '${value}'`);
  }
  return n;
}

/** Opens the repository named by `--repo` (and `--endpoint`, `--region`), checked to be reachable. */
export async function repositoryFrom(
  args: ParsedArgs,
  context: CommandContext,
  { create = false } = {},
): Promise<ModelRepositoryWriter> {
  const repo = requiredOption(args, 'repo');
  try {
    return await openRepository({
      repo,
      endpoint: stringOption(args, 'endpoint'),
      region: stringOption(args, 'region'),
      create,
      env: context.env,
    });
  } catch (error) {
    // A malformed --repo or --endpoint is a usage problem, not a failure of the repository.
    if (error instanceof RepositoryError && error.constructor === RepositoryError)
      throw new UsageError(error.message);
    throw error;
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** `1.5 MiB`, `840 B`. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${UNITS[unit]}`;
}

/** Lines of columns, padded to line up. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows
    .map((row) =>
      row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '),
    )
    .join('\n');
}
