/**
 * From PyTorch to a served version: tools/export/export_model.py exports modules with a dynamic batch
 * axis and PyTorch's own outputs, the CLI adds them (with their ORT copies) to a loopback S3 repository,
 * and the infer door, built from an environment as on Lambda, answers what PyTorch answered.
 *
 * Needs Debian's python3-torch and python3-onnx (/usr/bin/python3; see FACTS.md). Without them the test
 * says what to install and passes, except under CI (`CI` set), where it fails: CI installs them.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import { parseConfig } from '../../shared/core/config';
import { createRuntime } from '../../shared/runtime/runtime';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';
import { apiEvent, lambdaContext } from '../support/api-gateway';
import { withBuiltCli } from '../support/built-cli';
import { RecordingTelemetry } from '../support/fakes';
import { expectClose } from '../support/golden';
import { type S3Server, startS3Server } from '../support/s3-server';

const ROOT = resolve(__dirname, '../..');
const PYTHON = process.env.ONNX_SERVE_PYTHON ?? '/usr/bin/python3';
const EXPORT_SCRIPT = join(ROOT, 'tools/export/export_model.py');
const TOLERANCE = { atol: 1e-4, rtol: 1e-3 };
const run = promisify(execFile);
const savedEnv = { ...process.env };

interface Reference {
  readonly inputs: Record<string, { datatype: string; shape: number[]; data: unknown[] }>;
  readonly outputs: Record<string, { datatype: string; shape: number[]; data: unknown[] }>;
}

let torchMissing: string | undefined;
let s3: S3Server;
let work: string;

beforeAll(async () => {
  torchMissing = await run(PYTHON, ['-c', 'import torch, onnx']).then(
    () => undefined,
    (error: { stderr?: string; message: string }) =>
      (error.stderr || error.message).trim().split('\n').at(-1),
  );
  if (torchMissing !== undefined) return;
  s3 = await startS3Server();
  work = await mkdtemp(join(tmpdir(), 'pytorch-export-'));
  // The CLI and the serving runtime take credentials from the SDK's default chain, as on a real machine.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
});

afterAll(async () => {
  process.env = savedEnv;
  await s3?.close();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: process.env };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function exportModel(args: string[], out: string, cwd = work): Promise<Reference> {
  await run(PYTHON, [EXPORT_SCRIPT, ...args, '--out', out], { cwd });
  return JSON.parse(await readFile(join(out, 'reference.json'), 'utf8')) as Reference;
}

const USER_MODULE = `import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 3), nn.Softmax(dim=1))

    def forward(self, x):
        return self.net(x)
`;

describe('a PyTorch model exported, added with the CLI and served by the infer door', () => {
  it("answers what PyTorch answered, for an MLP, a CNN and a module of one's own", async () => {
    if (torchMissing !== undefined) {
      const message = `skipped: install python3-torch and python3-onnx (apt) to run the PyTorch export test (${PYTHON}: ${torchMissing})`;
      if (process.env.CI) throw new Error(`${message}; CI must install them (.ci/run)`);
      console.log(message);
      return;
    }
    const repo = `s3://${s3.bucket}/pytorch`;
    const references: Record<string, Reference> = {};
    references.mlp = await exportModel(['mlp'], join(work, 'mlp'));
    references.cnn = await exportModel(['cnn'], join(work, 'cnn'));
    await mkdir(join(work, 'user'));
    await writeFile(join(work, 'user', 'tiny_net.py'), USER_MODULE);
    references.tiny = await exportModel(
      ['--module', 'tiny_net:TinyNet', '--input-shape', '1,6', '--init-kwargs', '{"hidden": 12}'],
      join(work, 'tiny'),
      join(work, 'user'),
    );

    const mlp = await cli(
      'add',
      join(work, 'mlp', 'model.onnx'),
      '--model',
      'mlp',
      '--repo',
      repo,
      '--endpoint',
      s3.endpoint,
      '--optimize',
      '--measure-runs',
      '0',
    );
    expect(mlp).toMatchObject({ code: 0, out: expect.stringContaining('added mlp version 1') });
    const tiny = await cli(
      'add',
      join(work, 'tiny', 'model.onnx'),
      '--model',
      'tiny',
      '--repo',
      repo,
      '--endpoint',
      s3.endpoint,
    );
    expect(tiny.code).toBe(0);
    // The CNN goes in through the real bin, as a developer would run it.
    await withBuiltCli(async (bin) => {
      const args = [
        'add',
        join(work, 'cnn', 'model.onnx'),
        '--model',
        'cnn',
        '--repo',
        repo,
        '--endpoint',
        s3.endpoint,
      ];
      const { stdout } = await run(process.execPath, [bin, ...args, '--optimize', '--measure-runs', '1'], {
        env: process.env,
      });
      expect(stdout).toContain('added cnn version 1');
      expect(stdout).toMatch(/before \(model\.onnx\) +create +[\d.]+ ms/);
    });
    expect((await cli('verify', '--repo', repo, '--endpoint', s3.endpoint)).out).toContain('5 files in');

    const telemetry = new RecordingTelemetry();
    const runtime = createRuntime(
      parseConfig(
        {
          ONNX_SERVE_MODEL_REPOSITORY: repo,
          ONNX_SERVE_S3_ENDPOINT: s3.endpoint,
          ONNX_SERVE_DISK_CACHE_DIR: join(work, 'disk-cache'),
        },
        { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: work },
      ),
      { telemetry },
    );
    const handler = createInferHandler(runtime);

    for (const [name, reference] of Object.entries(references)) {
      const [inputName, input] = Object.entries(reference.inputs)[0] as [string, Reference['inputs'][string]];
      const body = JSON.stringify({
        inputs: [
          {
            name: inputName,
            datatype: input.datatype,
            shape: input.shape,
            data: input.data.flat(Number.POSITIVE_INFINITY),
          },
        ],
      });
      const event = apiEvent('http-v2', 'POST', `/v2/models/${name}/infer`, { body });
      const result = (await handler(event, lambdaContext())) as APIGatewayProxyResult;

      expect(result.statusCode).toBe(200);
      const [output] = JSON.parse(result.body).outputs as { name: string; shape: number[]; data: number[] }[];
      const [outputName, expected] = Object.entries(reference.outputs)[0] as [
        string,
        Reference['outputs'][string],
      ];
      expect(input.shape[0]).toBe(3);
      expect(output).toMatchObject({ name: outputName, shape: expected.shape });
      expectClose(output?.data ?? [], expected.data.flat(Number.POSITIVE_INFINITY) as number[], TOLERANCE);
    }
    // The optimised models were served from their ORT copies, the other from its .onnx.
    const formats = Object.fromEntries(telemetry.ofType('model-loaded').map((e) => [e.model, e.format]));
    expect(formats).toEqual({ mlp: 'ort', cnn: 'ort', tiny: 'onnx' });
  });
});
