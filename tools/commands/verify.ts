import { parseModelConfig } from '../../shared/core/model-config';
import { compareVersions } from '../../shared/core/names';
import { ARTIFACT_FILE } from '../../shared/core/ports';
import { type ConfigJson, parseConfigJson, versionsOf } from '../repository/config-update';
import { checkedSegments, type ModelRepositoryWriter } from '../repository/model-repository-writer';
import {
  type Command,
  formatBytes,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  UsageError,
} from './command';

/** One recorded file and what the repository holds for it. */
export interface FileCheck {
  readonly model: string;
  readonly version: string;
  readonly file: string;
  readonly status: 'ok' | 'mismatch' | 'missing';
  readonly recorded: { readonly sha256: string; readonly size: number };
  readonly actual?: { readonly sha256: string; readonly size: number };
}

/** A config.json that cannot be checked file by file. */
export interface ConfigProblem {
  readonly model: string;
  readonly problem: string;
}

export interface VerifyReport {
  readonly repository: string;
  readonly files: readonly FileCheck[];
  readonly configs: readonly ConfigProblem[];
  readonly ok: boolean;
}

/** The files a config.json records for each version: model.onnx, model.ort, precision variants and their ORT copies. */
function recordedFiles(
  config: ConfigJson,
): { version: string; file: string; sha256: string; size: number }[] {
  const files: { version: string; file: string; sha256: string; size: number }[] = [];
  const versions = versionsOf(config);
  for (const version of Object.keys(versions).sort(compareVersions)) {
    const entry = versions[version] as ConfigJson;
    const add = (file: string, info: unknown) => {
      const { sha256, size } = (info ?? {}) as { sha256?: unknown; size?: unknown };
      if (typeof sha256 === 'string' && typeof size === 'number') files.push({ version, file, sha256, size });
    };
    add(ARTIFACT_FILE.onnx, entry);
    if (entry.ort !== undefined) add(ARTIFACT_FILE.ort, entry.ort);
    const variants = entry.variants;
    if (typeof variants === 'object' && variants !== null) {
      for (const [name, info] of Object.entries(variants)) {
        add(`model.${name}.onnx`, info);
        const ort = (info as ConfigJson | null)?.ort;
        if (ort !== undefined) add(`model.${name}.ort`, ort);
      }
    }
  }
  return files;
}

/**
 * Streams every recorded file of `models` (default: all) through sha256 and compares digest and size with
 * config.json, at most `concurrency` files at once.
 */
export async function verifyRepository(
  writer: ModelRepositoryWriter,
  models?: readonly string[],
  { concurrency = 4, log = (_: string) => {} } = {},
): Promise<VerifyReport> {
  const names = models ?? (await writer.listModels());
  const configs: ConfigProblem[] = [];
  const tasks: (() => Promise<FileCheck>)[] = [];
  for (const model of names) {
    checkedSegments(model);
    const snapshot = await writer.readConfig(model);
    if (snapshot === undefined) {
      configs.push({ model, problem: 'no config.json' });
      continue;
    }
    let config: ConfigJson;
    try {
      config = parseConfigJson(model, snapshot.text);
      parseModelConfig(model, snapshot.text);
    } catch (error) {
      configs.push({ model, problem: (error as Error).message });
      continue;
    }
    for (const { version, file, sha256, size } of recordedFiles(config)) {
      tasks.push(async () => {
        log(`checking ${model}/${version}/${file}`);
        const actual = await writer.digestVersionFile(model, version, file);
        const recorded = { sha256, size };
        if (actual === undefined) return { model, version, file, status: 'missing', recorded };
        const same = actual.sha256 === sha256 && actual.size === size;
        return { model, version, file, status: same ? 'ok' : 'mismatch', recorded, actual };
      });
    }
  }
  const files = new Array<FileCheck>(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      files[i] = await (tasks[i] as () => Promise<FileCheck>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
  const ok = configs.length === 0 && files.every((f) => f.status === 'ok');
  return { repository: writer.location, files, configs, ok };
}

export function formatVerifyReport(report: VerifyReport): string {
  const lines = report.files.map((f) => {
    const path = `${f.model}/${f.version}/${f.file}`;
    if (f.status === 'ok')
      return `ok        ${path}  ${formatBytes(f.recorded.size)}  ${f.recorded.sha256.slice(0, 16)}…`;
    if (f.status === 'missing') return `MISSING   ${path}  (config.json records ${f.recorded.size} bytes)`;
    return (
      `MISMATCH  ${path}  sha256 ${f.actual?.sha256.slice(0, 16)}… ${f.actual?.size} bytes, ` +
      `config.json records ${f.recorded.sha256.slice(0, 16)}… ${f.recorded.size} bytes`
    );
  });
  for (const c of report.configs) lines.push(`INVALID   ${c.model}/config.json: ${c.problem}`);
  const bad = report.files.filter((f) => f.status !== 'ok').length + report.configs.length;
  lines.push(
    report.ok
      ? `${report.files.length} files in ${report.repository} match config.json`
      : `${bad} problem${bad === 1 ? '' : 's'} in ${report.repository}`,
  );
  return lines.join('\n');
}

export const verifyCommand: Command = {
  name: 'verify',
  summary: "check that every version's files match the sha256 and size in config.json",
  help: `Usage: onnx-serve-models verify --repo <location> [--model <name>] [--json]

Reads every file config.json records (model.onnx, model.ort, precision variants) and compares its sha256
and size with the record. Prints one line per file and exits with 1 when any file is missing or differs,
or a config.json is invalid.

Options:
  --model <name>   only this model (repeatable)
  --json           print the report as JSON
${REPOSITORY_HELP}`,
  options: { ...REPOSITORY_OPTIONS, model: { type: 'string', multiple: true }, json: { type: 'boolean' } },
  async run(args, context) {
    if (args.positionals.length > 0) throw new UsageError(`verify takes no positional arguments`);
    const selected = args.values.model as unknown as string[] | undefined;
    const writer = await repositoryFrom(args, context);
    try {
      const report = await verifyRepository(writer, selected);
      context.out(args.values.json === true ? JSON.stringify(report, null, 2) : formatVerifyReport(report));
      if (!report.ok) throw new VerifyFailedError(report);
    } finally {
      writer.close();
    }
  },
};

/** verify found problems; the report was printed already. */
export class VerifyFailedError extends Error {
  readonly report: VerifyReport;
  constructor(report: VerifyReport) {
    super(`verify found problems in ${report.repository}`);
    this.name = 'VerifyFailedError';
    this.report = report;
  }
}
