import { parseModelConfig, resolveVersion } from '../../shared/core/model-config';
import { compareVersions } from '../../shared/core/names';
import type { ModelRepositoryWriter } from '../repository/model-repository-writer';
import {
  type Command,
  formatBytes,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  table,
  UsageError,
} from './command';

export interface ListedVersion {
  readonly version: string;
  readonly size: number;
  readonly sha256: string;
  /** The ORT-format copy's size, when there is one. */
  readonly ortSize?: number;
  readonly variants?: readonly string[];
}

export interface ListedModel {
  readonly name: string;
  readonly versions: readonly ListedVersion[];
  /** The version a request without one gets. */
  readonly default: string | undefined;
  /** `config` when config.json names it (defaultVersion), `highest` otherwise. */
  readonly defaultFrom: 'config' | 'highest';
  readonly maxBatchSize: number;
  /** Set when config.json is invalid (the rest is then empty). */
  readonly problem?: string;
}

/** Every model of the repository with its versions, sizes and default version. */
export async function listRepository(writer: ModelRepositoryWriter): Promise<ListedModel[]> {
  const models: ListedModel[] = [];
  for (const name of await writer.listModels()) {
    const snapshot = await writer.readConfig(name);
    if (snapshot === undefined) continue;
    try {
      const config = parseModelConfig(name, snapshot.text);
      const versions = Object.keys(config.versions)
        .sort(compareVersions)
        .map((version) => {
          const info = config.versions[version];
          const variants = Object.keys((info as { variants?: object } | undefined)?.variants ?? {});
          return {
            version,
            size: info?.size ?? 0,
            sha256: info?.sha256 ?? '',
            ...(info?.ort === undefined ? {} : { ortSize: info.ort.size }),
            ...(variants.length === 0 ? {} : { variants }),
          };
        });
      models.push({
        name,
        versions,
        default: resolveVersion(config, undefined),
        defaultFrom: config.defaultVersion === undefined ? 'highest' : 'config',
        maxBatchSize: config.maxBatchSize,
      });
    } catch (error) {
      models.push({
        name,
        versions: [],
        default: undefined,
        defaultFrom: 'highest',
        maxBatchSize: 0,
        problem: (error as Error).message,
      });
    }
  }
  return models;
}

export function formatListing(location: string, models: readonly ListedModel[]): string {
  if (models.length === 0) return `no models in ${location}`;
  const rows: string[][] = [['MODEL', 'VERSION', 'SIZE', 'ORT', 'DEFAULT', 'SHA256']];
  for (const model of models) {
    if (model.problem !== undefined) {
      rows.push([model.name, '-', '-', '-', '-', `invalid config.json: ${model.problem}`]);
      continue;
    }
    for (const v of model.versions) {
      const isDefault = v.version === model.default;
      rows.push([
        model.name,
        v.version,
        formatBytes(v.size),
        v.ortSize === undefined ? '-' : formatBytes(v.ortSize),
        isDefault ? (model.defaultFrom === 'config' ? 'default' : 'default (highest)') : '',
        `${v.sha256.slice(0, 16)}…${v.variants === undefined ? '' : `  variants: ${v.variants.join(', ')}`}`,
      ]);
    }
  }
  return `${location}\n${table(rows)}`;
}

export const lsCommand: Command = {
  name: 'ls',
  summary: 'list the models of a repository with their versions, sizes and default version',
  help: `Usage: onnx-serve-models ls --repo <location> [--json]

Lists every model (a folder or prefix with a config.json): each version with the size of model.onnx and of
its ORT-format copy, the version served by default (defaultVersion, else the highest) and the sha256.

Options:
  --json   print the listing as JSON
${REPOSITORY_HELP}`,
  options: { ...REPOSITORY_OPTIONS, json: { type: 'boolean' } },
  async run(args, context) {
    if (args.positionals.length > 0) throw new UsageError(`ls takes no positional arguments`);
    const writer = await repositoryFrom(args, context);
    try {
      const models = await listRepository(writer);
      context.out(
        args.values.json === true
          ? JSON.stringify({ repository: writer.location, models }, null, 2)
          : formatListing(writer.location, models),
      );
    } finally {
      writer.close();
    }
  },
};
