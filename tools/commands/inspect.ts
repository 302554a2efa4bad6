import { readFile } from 'node:fs/promises';
import { assertEmptyDimsMatch, parseModelConfig, resolveVersion } from '../../shared/core/model-config';
import { ARTIFACT_FILE } from '../../shared/core/ports';
import { checkedSegments, RepositoryError } from '../repository/model-repository-writer';
import {
  type Command,
  type CommandContext,
  formatBytes,
  type ParsedArgs,
  REPOSITORY_HELP,
  REPOSITORY_OPTIONS,
  repositoryFrom,
  stringOption,
  UsageError,
} from './command';
import { formatPrecisionInfo, formatStoredVersion, precisionInfo } from './inspect-variants';
import { formatShape, type OnnxInfo, readOnnxInfo } from './onnx-info';

/** Reads and decodes an ONNX file; a missing or unreadable file is a clear error naming it. */
export async function readOnnxFile(file: string): Promise<{ bytes: Uint8Array; info: OnnxInfo }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new Error(`cannot read ${file} (${code === 'ENOENT' ? 'no such file' : code})`, { cause: error });
  }
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { bytes: view, info: readOnnxInfo(view, file) };
}

/** The human-readable report of {@link OnnxInfo}. */
export function formatOnnxInfo(info: OnnxInfo): string {
  const tensors = (list: OnnxInfo['inputs']) =>
    list.length === 0 ? ['  (none)'] : list.map((v) => `  ${v.name}: ${v.type} ${formatShape(v.shape)}`);
  const weights = (w: OnnxInfo['initializers']) =>
    `${w.count} tensors, ${formatBytes(w.bytes)} (${w.bytes} bytes: raw_data ${w.rawDataBytes}, typed fields ${w.typedFieldBytes}` +
    `${w.externalCount > 0 ? `, external ${w.externalBytes} in ${w.externalCount} tensors` : ''})`;
  const producer = [info.producerName, info.producerVersion].filter((s) => s !== '').join(' ') || '(not set)';
  const lines = [
    `file:          ${info.file}`,
    `size:          ${formatBytes(info.size)} (${info.size} bytes)`,
    `sha256:        ${info.sha256}`,
    `producer:      ${producer}`,
    `ir version:    ${info.irVersion}`,
    `opsets:        ${info.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}`,
    `graph:         ${info.graphName || '(unnamed)'}, ${info.nodeCount} nodes` +
      (info.subgraphCount > 0
        ? `; ${info.subgraphCount} subgraphs (If, Loop, Scan bodies) with ${info.subgraphNodeCount} nodes`
        : ''),
    `initialisers:  ${weights(info.initializers)}`,
  ];
  if (info.constants.count > 0) lines.push(`constants:     ${weights(info.constants)}`);
  lines.push('inputs:', ...tensors(info.inputs), 'outputs:', ...tensors(info.outputs));
  const metadata = Object.entries(info.metadata);
  if (metadata.length > 0) lines.push('metadata:', ...metadata.map(([k, v]) => `  ${k}: ${v}`));
  return lines.join('\n');
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'show the inputs, outputs, opsets, producer, size, sha256 and weight bytes of an ONNX file',
  help: `Usage: onnx-serve-models inspect <file.onnx> [--json]
       onnx-serve-models inspect --model <name> [--version <n>] --repo <location> [--json]

Reads an ONNX file without running it and prints:
  inputs and outputs (names, element types, shapes with symbolic dims such as 'batch'; '?' is unknown),
  opset imports, IR version, producer, size, sha256, and the bytes of its initialisers (and of Constant
  nodes) by storage: raw_data, typed fields (float_data, int64_data...), external files; weights inside
  subgraphs (If branches, Loop and Scan bodies) are counted too; the MatMul/Gemm nodes quantize can
  rewrite, the custom ops (e.g. com.microsoft.DynamicQuantizeMatMul) and weight types.

With --model, prints a stored version instead (default: the default version, else the highest): its
files and precision variants with their sizes, the accuracy recorded when each was made (max error,
cosine, top-1 agreement) and who serves it. A config.json that serving would refuse is refused here
too, with the same message (an unknown key, or an 'emptyDims' input the version's model.onnx lacks).

Options:
  --json   print the same as one JSON object
${REPOSITORY_HELP}`,
  options: {
    ...REPOSITORY_OPTIONS,
    model: { type: 'string' },
    version: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(args, context) {
    if (stringOption(args, 'model') !== undefined) return inspectStored(args, context);
    const [file, ...rest] = args.positionals;
    if (file === undefined) throw new UsageError('name the ONNX file to inspect');
    if (rest.length > 0) throw new UsageError(`inspect takes one file, got ${args.positionals.length}`);
    const { bytes, info } = await readOnnxFile(file);
    const precision = precisionInfo(bytes);
    context.out(
      args.values.json === true
        ? JSON.stringify({ ...info, precision }, null, 2)
        : [formatOnnxInfo(info), ...formatPrecisionInfo(precision)].join('\n'),
    );
  },
};

/** `inspect --model`: a stored version's files and variants, from config.json. */
async function inspectStored(args: ParsedArgs, context: CommandContext): Promise<void> {
  if (args.positionals.length > 0) throw new UsageError('inspect takes a file or --model, not both');
  const model = stringOption(args, 'model') as string;
  const requested = stringOption(args, 'version');
  checkedSegments(model, requested);
  const writer = await repositoryFrom(args, context);
  try {
    const snapshot = await writer.readConfig(model);
    if (snapshot === undefined) throw new RepositoryError(`model '${model}' is not in ${writer.location}`);
    const config = parseModelConfig(model, snapshot.text);
    const version = resolveVersion(config, requested);
    const info = version === undefined ? undefined : config.versions[version];
    if (version === undefined || info === undefined) {
      throw new RepositoryError(`model '${model}' has no version '${requested}' in ${writer.location}`);
    }
    if (Object.keys(config.emptyDims).length > 0) {
      // Only the file knows its inputs: read it when there are emptyDims to check, as serving would.
      const bytes = await writer.readVersionFile(model, version, ARTIFACT_FILE.onnx);
      const label = `model '${model}' version ${version}`;
      assertEmptyDimsMatch(label, config.emptyDims, readOnnxInfo(bytes, `${model}/${version}/model.onnx`));
    }
    if (args.values.json === true) {
      const raw = (JSON.parse(snapshot.text) as { versions: Record<string, unknown> }).versions[version];
      context.out(
        JSON.stringify({ model, version, repository: writer.location, ...(raw as object) }, null, 2),
      );
    } else {
      context.out(formatStoredVersion(`${model} version ${version}`, writer.location, info));
    }
  } finally {
    writer.close();
  }
}
