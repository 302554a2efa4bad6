import { parseModelConfig, resolveVersion, type VariantInfo } from '../../shared/core/model-config';
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
import { formatPercent } from './variant-accuracy';

export interface ListedVersion {
  readonly version: string;
  readonly size: number;
  readonly sha256: string;
  /** The ORT-format copy's size, when there is one. */
  readonly ortSize?: number;
  readonly variants?: readonly ListedVariant[];
}

/** A precision variant of a version, with its sizes and the accuracy recorded when it was made. */
export interface ListedVariant {
  readonly name: string;
  readonly precision?: string;
  readonly size: number;
  readonly ortSize?: number;
  /** Max |error| as a fraction of the largest |float32 output|, cosine, top-1 agreement (see `quantize`). */
  readonly relativeError?: number;
  readonly cosine?: number;
  readonly top1Agreement?: number;
  readonly inputs?: 'samples' | 'random';
  readonly runsOn: readonly string[];
  /** Providers the loader picks it for on its own; empty: served only where a deployment chooses it. */
  readonly providers: readonly string[];
}

function listedVariant(name: string, info: VariantInfo): ListedVariant {
  const a = info.accuracy;
  return {
    name,
    ...(info.precision === undefined ? {} : { precision: info.precision }),
    size: info.size,
    ...(info.ort === undefined ? {} : { ortSize: info.ort.size }),
    ...(a?.relativeError === undefined ? {} : { relativeError: a.relativeError }),
    ...(a?.cosine === undefined ? {} : { cosine: a.cosine }),
    ...(a?.top1Agreement === undefined ? {} : { top1Agreement: a.top1Agreement }),
    ...(a?.inputs === undefined ? {} : { inputs: a.inputs }),
    runsOn: info.runsOn,
    providers: info.providers,
  };
}

/** `max error 0.89%, cosine 0.9999, top-1 100% (random inputs); cpu, chosen per deployment`. */
export function describeVariant(v: ListedVariant): string {
  const figures: string[] = [];
  if (v.relativeError !== undefined) figures.push(`max error ${formatPercent(v.relativeError)}`);
  if (v.cosine !== undefined) figures.push(`cosine ${v.cosine.toFixed(4)}`);
  if (v.top1Agreement !== undefined) figures.push(`top-1 ${formatPercent(v.top1Agreement)}`);
  const accuracy =
    figures.length === 0
      ? 'accuracy not recorded'
      : `${figures.join(', ')}${v.inputs === undefined ? '' : ` (${v.inputs === 'samples' ? 'samples' : 'random inputs'})`}`;
  const who = v.providers.length > 0 ? `picked for ${v.providers.join(', ')}` : 'chosen per deployment';
  return `${accuracy}; ${v.runsOn.join(', ')}, ${who}`;
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
          const variants = Object.entries(info?.variants ?? {}).map(([n, v]) => listedVariant(n, v));
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
        `${v.sha256.slice(0, 16)}…`,
      ]);
      for (const variant of v.variants ?? []) {
        rows.push([
          '',
          `  ${variant.name}`,
          formatBytes(variant.size),
          variant.ortSize === undefined ? '-' : formatBytes(variant.ortSize),
          '',
          describeVariant(variant),
        ]);
      }
    }
  }
  return `${location}\n${table(rows)}`;
}

export const lsCommand: Command = {
  name: 'ls',
  summary: 'list the models of a repository with their versions, sizes and default version',
  help: `Usage: onnx-serve-models ls --repo <location> [--json]

Lists every model (a folder or prefix with a config.json): each version with the size of model.onnx and of
its ORT-format copy, the version served by default (defaultVersion, else the highest) and the sha256; under
it, each precision variant (quantize) with its sizes, the accuracy recorded when it was made and who
serves it.

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
