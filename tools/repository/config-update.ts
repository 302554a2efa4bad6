import { setTimeout as sleep } from 'node:timers/promises';
import { type ModelConfig, parseModelConfig } from '../../shared/core/model-config';
import { ConfigConflictError, type ModelRepositoryWriter, RepositoryError } from './model-repository-writer';

/** config.json as plain JSON, key order kept, so an update changes only what it means to. */
export type ConfigJson = Record<string, unknown>;

/** What {@link updateModelConfig} did. */
export interface ConfigUpdateResult {
  /** The config as written (or as found, when nothing changed). */
  readonly config: ModelConfig;
  readonly text: string;
  /** False when the update left the text as it was, and nothing was written. */
  readonly changed: boolean;
}

export interface ConfigUpdateOptions {
  /** Read-change-write rounds before a conflict is reported. Default 5. */
  readonly attempts?: number;
}

/**
 * Reads `<model>/config.json`, applies `change` to it (`undefined` when the model is new), checks the
 * result with the serving parser and writes it back if nobody wrote in between; on a conflict, it reads
 * again and re-applies `change`, which must therefore be a pure function of what it is given (and may
 * throw, e.g. when the version it adds now exists).
 *
 * @example
 * await updateModelConfig(writer, 'mlp', (current) => ({
 *   name: 'mlp', platform: 'onnxruntime_onnx', ...current,
 *   versions: { ...(current?.versions as object), 2: { sha256, size } },
 * }));
 */
export async function updateModelConfig(
  writer: ModelRepositoryWriter,
  model: string,
  change: (current: ConfigJson | undefined) => ConfigJson,
  options: ConfigUpdateOptions = {},
): Promise<ConfigUpdateResult> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const snapshot = await writer.readConfig(model);
    const current = snapshot === undefined ? undefined : parseConfigJson(model, snapshot.text);
    const text = `${JSON.stringify(change(current), null, 2)}\n`;
    // Never write what the serving side would refuse to read.
    const config = parseModelConfig(model, text);
    if (text === snapshot?.text) return { config, text, changed: false };
    try {
      await writer.writeConfig(model, text, snapshot?.etag);
      return { config, text, changed: true };
    } catch (error) {
      if (!(error instanceof ConfigConflictError) || attempt >= attempts) throw error;
      await sleep(attempt * 25 + Math.random() * 50);
    }
  }
}

/** The JSON object of a config.json, or a {@link RepositoryError} saying it must be fixed by hand. */
export function parseConfigJson(model: string, text: string): ConfigJson {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new RepositoryError(`${model}/config.json is not valid JSON: fix or remove it`, { cause: error });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RepositoryError(`${model}/config.json is not a JSON object: fix or remove it`);
  }
  return value as ConfigJson;
}

/** `versions` of a config.json as an object (empty when missing). */
export function versionsOf(config: ConfigJson | undefined): Record<string, ConfigJson> {
  const versions = config?.versions;
  return typeof versions === 'object' && versions !== null && !Array.isArray(versions)
    ? (versions as Record<string, ConfigJson>)
    : {};
}
