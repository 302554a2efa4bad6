/**
 * The warm-up options of `add`: `--warmup default|off|<samples>` and `--warmup-input NAME=SHAPE[:DATA]`,
 * turned into the `session.warmup` that add checks and writes to config.json (see shared/core/warmup.ts).
 */
import { readFile } from 'node:fs/promises';
import type { ModelSignature } from '../../shared/core/tensor';
import {
  DEFAULT_WARMUP,
  defaultWarmupShapes,
  NO_WARMUP,
  parseWarmup,
  WARMUP_MAX_ELEMENTS,
  type WarmupConfig,
} from '../../shared/core/warmup';
import { type ParsedArgs, stringOption, UsageError } from './command';

export const WARMUP_OPTIONS = {
  warmup: { type: 'string' },
  'warmup-input': { type: 'string', multiple: true },
} as const;

export const WARMUP_HELP = `  --warmup default|off|<file.json>   the model's warm-up, written to config.json session.warmup (for every
                           version): the default run, none, or warm-up samples as config.json takes them
                           (a JSON file, or the JSON itself starting with '[')
  --warmup-input <name>=<shape>[:<data>]   one input of a warm-up sample (repeatable), e.g.
                           --warmup-input input=1x512:random --warmup-input sr=scalar:16000
                           shape: dims joined by 'x', or 'scalar'; data: zeros (default), random,
                           random:<seed>, or values joined by ',' (one value fills the tensor).
                           Inputs left out get the default shape and zeros.`;

/** Where a warm-up came from, for messages. */
export type WarmupSource = 'default' | 'config.json' | '--warmup' | '--warmup-input';

/**
 * The warm-up that `--warmup` or `--warmup-input` asks for, or `undefined` when neither is given (the
 * model keeps what config.json says). Throws {@link UsageError} naming the option and the value at fault.
 */
export async function warmupOption(
  args: ParsedArgs,
): Promise<{ warmup: WarmupConfig; source: WarmupSource } | undefined> {
  const mode = stringOption(args, 'warmup');
  const inputs = (args.values['warmup-input'] as string[] | undefined) ?? [];
  if (mode !== undefined && inputs.length > 0) {
    throw new UsageError(`give either --warmup or --warmup-input, not both`);
  }
  if (inputs.length > 0) return { warmup: warmupFromInputs(inputs), source: '--warmup-input' };
  if (mode === undefined) return undefined;
  if (mode === 'default') return { warmup: DEFAULT_WARMUP, source: '--warmup' };
  if (mode === 'off') return { warmup: NO_WARMUP, source: '--warmup' };
  let text = mode;
  if (!/^\s*[[{]/.test(mode)) {
    try {
      text = await readFile(mode, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
      throw new UsageError(
        `--warmup must be default, off, a JSON file of warm-up samples or the JSON itself; cannot read '${mode}' (${code === 'ENOENT' ? 'no such file' : code})`,
      );
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`--warmup: '${mode}' is not valid JSON`);
  }
  return { warmup: checked(json, '--warmup'), source: '--warmup' };
}

function checked(json: unknown, where: string): WarmupConfig {
  const problems: string[] = [];
  const warmup = parseWarmup(json, problems, where);
  if (problems.length > 0) throw new UsageError(problems.join('; '));
  return warmup;
}

const SHAPE = /^[1-9]\d*(?:x[1-9]\d*)*$/;
const NUMBER = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

/** One warm-up sample from `--warmup-input` values. */
export function warmupFromInputs(values: readonly string[]): WarmupConfig {
  const inputs: Record<string, unknown> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const name = eq < 0 ? '' : value.slice(0, eq);
    const rest = eq < 0 ? '' : value.slice(eq + 1);
    const colon = rest.indexOf(':');
    const shapeText = colon < 0 ? rest : rest.slice(0, colon);
    const dataText = colon < 0 ? undefined : rest.slice(colon + 1);
    const usage = (why: string) =>
      new UsageError(
        `--warmup-input '${value}': ${why} (expected <name>=<shape>[:<data>], e.g. input=1x512:random or sr=scalar:16000)`,
      );
    if (name === '') throw usage('no input name before =');
    if (Object.hasOwn(inputs, name)) throw usage(`input '${name}' is given more than once`);
    if (shapeText !== 'scalar' && !SHAPE.test(shapeText)) {
      throw usage(`the shape must be dims of at least 1 joined by 'x', or 'scalar'`);
    }
    const shape = shapeText === 'scalar' ? [] : shapeText.split('x').map(Number);
    const elements = shape.reduce((n, d) => n * d, 1);
    if (elements > WARMUP_MAX_ELEMENTS)
      throw usage(`the shape holds more than ${WARMUP_MAX_ELEMENTS} elements`);
    const spec: Record<string, unknown> = { shape };
    if (dataText === undefined || dataText === 'zeros') {
      // zeros: the default
    } else if (dataText === 'random') {
      spec.data = 'random';
    } else if (dataText.startsWith('random:')) {
      const seed = dataText.slice('random:'.length);
      if (!/^\d{1,10}$/.test(seed) || Number(seed) >= 2 ** 32)
        throw usage(`the seed must be an integer from 0 to ${2 ** 32 - 1}`);
      Object.assign(spec, { data: 'random', seed: Number(seed) });
    } else {
      const items = dataText.split(',').map((v) => {
        if (NUMBER.test(v)) return Number(v);
        if (v === 'true' || v === 'false') return v === 'true';
        return v;
      });
      if (items.length !== 1 && items.length !== elements) {
        throw usage(`${items.length} values for a shape of ${elements} elements (give one value to fill it)`);
      }
      spec.data = items;
    }
    inputs[name] = spec;
  }
  return checked([{ inputs }], '--warmup-input');
}

/** `--warmup-input` flags for the default shapes of `signature`: a starting point a user edits. */
export function warmupInputExample(signature: ModelSignature): string {
  const shapes = defaultWarmupShapes(signature);
  return signature.inputs
    .map((input) => {
      const shape = shapes[input.name] ?? [];
      const data = input.datatype.startsWith('FP') ? ':random' : '';
      const flag = `${input.name}=${shape.length === 0 ? 'scalar' : shape.join('x')}${data}`;
      return `--warmup-input ${/^[\w.:/=x-]+$/.test(flag) ? flag : `'${flag.replaceAll("'", "'\\''")}'`}`;
    })
    .join(' ');
}
