/**
 * Our int8 quantisation against PyTorch's own, as served: tools/export/export_model.py exports a
 * transformer encoder (token ids, Linear layers throughout) and an MLP with reference inputs, PyTorch's
 * float32 outputs and the outputs of `torch.quantization.quantize_dynamic` (qint8, nn.Linear) for the same
 * inputs. The CLI writes each into a model repository with an int8 variant measured on those inputs as
 * samples (the transformer by `add --variants int8`, the MLP by `add` then `quantize --to int8`). The
 * server door, started over that repository with `ONNX_SERVE_VARIANT=int8`, answers the reference inputs
 * over HTTP and its metadata must say the int8 variant answered; that answer must be at least as close to
 * PyTorch's float32 outputs as PyTorch's dynamic quantisation is, by mean and by max absolute error. The
 * figures are printed.
 *
 * Needs Debian's python3-torch and python3-onnx (see pytorch-export.test.ts): skipped without them,
 * except under CI.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { parseModelConfig } from '../../shared/core/model-config';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';
import { get, post, serverConfig } from '../support/server-harness';

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
let server: ServerInstance | undefined;

beforeAll(async () => {
  torchMissing = await run(PYTHON, ['-c', 'import torch, onnx']).then(
    () => undefined,
    (error: { stderr?: string; message: string }) =>
      (error.stderr || error.message).trim().split('\n').at(-1),
  );
  if (torchMissing === undefined) work = await mkdtemp(join(tmpdir(), 'pytorch-quantize-'));
});

afterEach(async () => {
  await server?.shutdown();
  server = undefined;
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

describe('int8 variants of PyTorch models, served, against torch.quantization.quantize_dynamic', () => {
  it.each(['transformer', 'mlp'])(
    '%s: the int8 variant as served is at least as close to float32 as PyTorch dynamic quantisation',
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
      const repo = join(work, `repo-${name}`);
      const add = ['add', join(out, 'model.onnx'), '--model', name, '--repo', repo, '--inputs', samples];
      const quantizeLater = name === 'mlp';
      if (quantizeLater) {
        expect(await cli(...add)).toMatchObject({ code: 0 });
        expect(
          await cli('quantize', '--model', name, '--repo', repo, '--to', 'int8', '--inputs', samples),
        ).toMatchObject({ code: 0 });
      } else {
        expect(await cli(...add, '--variants', 'int8')).toMatchObject({ code: 0 });
      }
      const config = parseModelConfig(name, await readFile(join(repo, name, 'config.json'), 'utf8'));
      expect(config.versions['1']?.variants?.int8?.accuracy).toMatchObject({
        inputs: 'samples',
        examples: 64,
      });

      server = await startServer(serverConfig(repo, { ONNX_SERVE_VARIANT: 'int8' }));
      const flat = input.data.flat(Number.POSITIVE_INFINITY) as number[];
      const body = {
        inputs: [{ name: inputName, datatype: input.datatype, shape: input.shape, data: flat }],
      };
      const reply = await post(server.url, `/v2/models/${name}/infer`, JSON.stringify(body));
      expect(reply.status).toBe(200);
      // A float32 answer would be closer than any quantisation: the test holds only if int8 answered.
      expect((await get(server.url, `/v2/models/${name}`)).json).toMatchObject({
        variant: 'int8',
        provider: 'cpu',
      });
      const answer = (reply.json.outputs as { name: string; data: number[] }[]).find(
        (o) => o.name === outputName,
      );
      const ours = answer?.data ?? [];
      const expected = float32.data.flat(Number.POSITIVE_INFINITY) as number[];
      const torchQuantized = reference.quantized.outputs[outputName]?.data.flat(
        Number.POSITIVE_INFINITY,
      ) as number[];

      expect(ours).toHaveLength(expected.length);
      const mine = errors(ours, expected);
      const theirs = errors(torchQuantized, expected);
      console.log(
        `${name}: |int8 - float32| on 64 examples: ours as served (DynamicQuantizeMatMul, per-column) mean ${mine.mean.toExponential(2)} ` +
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
