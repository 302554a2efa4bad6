#!/usr/bin/env node
/**
 * `onnx-serve-models`: the model tooling door. From an ONNX file (e.g. exported by tools/export) to a
 * served, verified version: inspect, add, optimize, quantize, verify, ls. Exit codes: 0 ok, 1 failure, 2 usage.
 *
 * Run from the repository with `npm run models -- <command> ...`, or as the package's `bin`.
 */
import { parseArgs } from 'node:util';
import { addCommand } from './commands/add';
import type { Command, CommandContext } from './commands/command';
import { type ParsedArgs, UsageError } from './commands/command';
import { inspectCommand } from './commands/inspect';
import { lsCommand } from './commands/ls';
import { optimizeCommand } from './commands/optimize';
import { quantizeCommand } from './commands/quantize';
import { VerifyFailedError, verifyCommand } from './commands/verify';

export const COMMANDS: readonly Command[] = [
  inspectCommand,
  addCommand,
  optimizeCommand,
  quantizeCommand,
  verifyCommand,
  lsCommand,
];

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

const PROGRAM = 'onnx-serve-models';

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `Usage: ${PROGRAM} <command> [options]    (from the repository: npm run models -- <command> ...)`,
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    `Run '${PROGRAM} <command> --help' for a command's options.`,
  ].join('\n');
}

/**
 * Runs one command line (without `node` and the script) and returns the exit code. Never throws: every
 * error becomes a message on `context.err`.
 *
 * @example
 * const code = await main(['inspect', 'model.onnx'], { out: console.log, err: console.error, env: process.env });
 */
export async function main(argv: readonly string[], context: CommandContext): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    if (topic !== undefined) {
      context.out(topic.help);
      return EXIT.ok;
    }
    (name === undefined ? context.err : context.out)(overview());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (command === undefined) {
    context.err(`${PROGRAM}: unknown command '${name}'\n\n${overview()}`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    context.out(command.help);
    return EXIT.ok;
  }
  try {
    let parsed: ParsedArgs & { tokens: readonly { kind: string; name?: string }[] };
    try {
      parsed = parseArgs({
        args: [...rest],
        options: command.options,
        allowPositionals: true,
        strict: true,
        tokens: true,
      });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    assertNoRepeats(parsed.tokens, command);
    await command.run({ values: parsed.values, positionals: parsed.positionals }, context);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof UsageError) {
      context.err(`${PROGRAM} ${name}: ${error.message}\n\n${command.help}`);
      return EXIT.usage;
    }
    // verify printed its report already.
    if (!(error instanceof VerifyFailedError)) context.err(`${PROGRAM} ${name}: ${describe(error)}`);
    if (context.env.ONNX_SERVE_DEBUG) context.err(String((error as Error).stack));
    return EXIT.failure;
  }
}

/**
 * parseArgs keeps the last of a repeated single-valued option: `--model a --model b` would quietly
 * mean `b`. Only options declared `multiple` may repeat.
 */
function assertNoRepeats(tokens: readonly { kind: string; name?: string }[], command: Command): void {
  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined) continue;
    const option = command.options[token.name];
    if (seen.has(token.name) && option?.multiple !== true) {
      throw new UsageError(`--${token.name} is given more than once`);
    }
    seen.add(token.name);
  }
}

/** The message, and the causes' messages where they add something (set ONNX_SERVE_DEBUG for stacks). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const parts = [error.message];
  let cause = error.cause;
  for (let depth = 0; cause instanceof Error && depth < 3; depth++) {
    if (!parts.some((p) => p.includes(cause instanceof Error ? cause.message : '')))
      parts.push(cause.message);
    cause = cause.cause;
  }
  return parts.join('\n  caused by: ');
}

if (require.main === module) {
  // The SDK warns on Node 20 about its releases after January 2027; this project pins the SDK, so the
  // warning tells a CLI user nothing they can act on. Set the variable to 'false' to see it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  main(process.argv.slice(2), {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
    env: process.env,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${PROGRAM}: ${String(error)}\n`);
      process.exitCode = EXIT.failure;
    },
  );
}
