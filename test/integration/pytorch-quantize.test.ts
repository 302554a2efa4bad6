/**
 * Our int8 quantisation against PyTorch's own: tools/export/export_model.py exports a transformer encoder
 * (token ids, Linear layers throughout) and an MLP with reference inputs, PyTorch's float32 outputs and
 * the outputs of `torch.quantization.quantize_dynamic` (qint8, nn.Linear) for the same inputs. The CLI
 * adds each with an int8 variant, measured on those inputs as samples; the stored model.int8.onnx, run
 * in onnxruntime-node, must be at least as close to PyTorch's float32 outputs as PyTorch's dynamic
 * quantisation is, by mean and by max absolute error. The figures are printed.
 *
 * Needs Debian's python3-torch and python3-onnx (see pytorch-export.test.ts): skipped without them,
 * except under CI.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { parseModelConfig } from '../../shared/core/model-config';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';

const ROOT = resolve(__dirname, '../..');
const PYTHON = process.env.ONNX_SERVE_PYTHON ?? '/usr/bin/python3';
const EXPORT_SCRIPT = join(ROOT, 'tools/export/export_model.py');
const run = promisify(execFile);

interface TensorJson {
  datatype: string;
  shape: number[];
  data: unknown[];
}
interface Reference {
  readonly inputs: Record<string, TensorJson>;
  readonly outputs: Record<string, TensorJson>;
  readonly quantized: { readonly producer: string; readonly outputs: Record<string, TensorJson> };
}

let torchMissing: string | undefined;
let work: string;

beforeAll(async () => {
  torchMissing = await run(PYTHON, ['-c', 'import torch, onnx']).then(
    () => undefined,
    (error: { stderr?: string; message: string }) =>
      (error.stderr || error.message).trim().split('\n').at(-1),
  );
  if (torchMissing === undefined) work = await mkdtemp(join(tmpdir(), 'pytorch-quantize-'));
});

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: process.env };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function errors(actual: ArrayLike<number>, expected: readonly number[]): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs((actual[i] as number) - (expected[i] as number));
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / expected.length };
}

describe('int8 variants of PyTorch models, against torch.quantization.quantize_dynamic', () => {
  it.each(['transformer', 'mlp'])(
    '%s: ours is at least as close to float32 as PyTorch dynamic quantisation',
    async (name) => {
      if (torchMissing !== undefined) {
        const message = `skipped: install python3-torch and python3-onnx (apt) to compare with PyTorch's quantisation (${PYTHON}: ${torchMissing})`;
        if (process.env.CI) throw new Error(`${message}; CI must install them (.ci/run)`);
        console.log(message);
        return;
      }
      const out = join(work, name);
      await run(PYTHON, [
        EXPORT_SCRIPT,
        name,
        '--out',
        out,
        '--reference-batch',
        '64',
        '--quantized-reference',
      ]);
      const reference = JSON.parse(await readFile(join(out, 'reference.json'), 'utf8')) as Reference;
      const [inputName, input] = Object.entries(reference.inputs)[0] as [string, TensorJson];
      const [outputName, float32] = Object.entries(reference.outputs)[0] as [string, TensorJson];
      // The reference inputs, one example a line: the samples the variant's accuracy is measured on.
      const samples = join(out, 'samples.jsonl');
      await writeFile(
        samples,
        `${(input.data as unknown[]).map((row) => JSON.stringify({ [inputName]: row })).join('\n')}\n`,
      );
      const repo = join(work, 'repo');

      const added = await cli(
        'add',
        join(out, 'model.onnx'),
        '--model',
        name,
        '--repo',
        repo,
        '--variants',
        'int8',
        '--inputs',
        samples,
      );

      expect(added).toMatchObject({ code: 0 });
      const config = parseModelConfig(name, await readFile(join(repo, name, 'config.json'), 'utf8'));
      expect(config.versions['1']?.variants?.int8?.accuracy).toMatchObject({
        inputs: 'samples',
        examples: 64,
      });
      const flat = input.data.flat(Number.POSITIVE_INFINITY) as number[];
      const feed =
        input.datatype === 'INT64'
          ? new ort.Tensor('int64', BigInt64Array.from(flat.map((v) => BigInt(v))), input.shape)
          : new ort.Tensor('float32', Float32Array.from(flat), input.shape);
      const session = await ort.InferenceSession.create(join(repo, name, '1', 'model.int8.onnx'));
      const ours = (await session.run({ [inputName]: feed }))[outputName]?.data as Float32Array;
      await session.release();
      const expected = float32.data.flat(Number.POSITIVE_INFINITY) as number[];
      const torchQuantized = reference.quantized.outputs[outputName]?.data.flat(
        Number.POSITIVE_INFINITY,
      ) as number[];

      const mine = errors(ours, expected);
      const theirs = errors(torchQuantized, expected);
      console.log(
        `${name}: |int8 - float32| on 64 examples: ours (DynamicQuantizeMatMul, per-column) mean ${mine.mean.toExponential(2)} ` +
          `max ${mine.max.toExponential(2)}; ${reference.quantized.producer}: mean ${theirs.mean.toExponential(2)} ` +
          `max ${theirs.max.toExponential(2)}; ours is ${((1 - mine.mean / theirs.mean) * 100).toFixed(0)}% lower by mean, ` +
          `${((1 - mine.max / theirs.max) * 100).toFixed(0)}% by max`,
      );
      expect(mine.mean).toBeGreaterThan(0);
      expect(mine.mean).toBeLessThanOrEqual(theirs.mean);
      expect(mine.max).toBeLessThanOrEqual(theirs.max);
    },
  );
});
