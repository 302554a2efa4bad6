/**
 * The `onnx-serve-models` commands against the real thing: ONNX files on disk, the bundled onnxruntime,
 * a folder repository and s3rver on loopback. Commands run in-process through `main`; the built bin is
 * spawned once to prove the package.json wiring.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { onnx } from 'onnx-proto';
import { FileModelStore } from '../../shared/adapters/file-model-store';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseModelConfig } from '../../shared/core/model-config';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';
import { loadAndWarmUp, MAX_OPSETS, servingOptions } from '../../tools/commands/model-check';
import {
  buildLinearModel,
  buildMlpModel,
  LINEAR_WEIGHTS,
  mlpOptionsForWeightBytes,
} from '../../tools/onnx/model-builder';
import { textDirectionModelPath } from '../../tools/sample-models';
import { withBuiltCli } from '../support/built-cli';
import { expectClose } from '../support/golden';
import { type S3Server, startS3Server } from '../support/s3-server';

const MiB = 1024 * 1024;
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const run = promisify(execFile);
const savedEnv = { ...process.env };

let s3: S3Server;
let work: string;
let files: { linear: string; big: string; notOnnx: string; opset99: string };
let bigBytes: Uint8Array;

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: process.env };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** A one-Relu model declaring `opset` of the default domain. */
function reluModel(opset: number): Uint8Array {
  const tensor = {
    tensorType: {
      elemType: onnx.TensorProto.DataType.FLOAT,
      shape: { dim: [{ dimParam: 'b' }, { dimValue: 2 }] },
    },
  };
  return onnx.ModelProto.encode({
    irVersion: 10,
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: 'relu',
      node: [{ opType: 'Relu', input: ['x'], output: ['y'] }],
      input: [{ name: 'x', type: tensor }],
      output: [{ name: 'y', type: tensor }],
    },
  }).finish();
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

beforeAll(async () => {
  s3 = await startS3Server();
  work = await mkdtemp(join(tmpdir(), 'cli-'));
  // The CLI takes S3 credentials from the SDK's default chain, as it would on a developer's machine.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  bigBytes = buildMlpModel(mlpOptionsForWeightBytes(9 * MiB, { inputSize: 64, outputSize: 4 }));
  files = {
    linear: join(work, 'linear.onnx'),
    big: join(work, 'big.onnx'),
    notOnnx: join(work, 'notes.onnx'),
    opset99: join(work, 'opset99.onnx'),
  };
  await writeFile(files.linear, buildLinearModel());
  await writeFile(files.big, bigBytes);
  await writeFile(files.notOnnx, 'these are my notes, not a model\n');
  await writeFile(files.opset99, reluModel(99));
});

afterAll(async () => {
  process.env = savedEnv;
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

async function newFolder(): Promise<string> {
  return join(await mkdtemp(join(work, 'repo-')), 'models');
}

describe('inspect', () => {
  it('describes the text-direction classifier: symbolic dims, opset, Constant weights, sha256', async () => {
    const file = textDirectionModelPath();
    const bytes = await readFile(file);

    const result = await cli('inspect', file, '--json');

    expect(result.code).toBe(0);
    const info = JSON.parse(result.out);
    expect(info).toMatchObject({
      size: bytes.byteLength,
      sha256: sha256(bytes),
      irVersion: 8,
      opsets: [{ domain: 'ai.onnx', version: 9 }],
      inputs: [
        {
          name: 'x',
          type: 'float32',
          shape: ['p2o.DynamicDimension.0', 3, 'p2o.DynamicDimension.1', 'p2o.DynamicDimension.2'],
        },
      ],
      outputs: [{ name: 'softmax_0.tmp_0', type: 'float32', shape: ['p2o.DynamicDimension.3', 2] }],
      initializers: { count: 0, bytes: 0 },
      constants: { count: 250, bytes: 534_660, rawDataBytes: 534_660 },
    });
  });

  it('prints a built model for people', async () => {
    const result = await cli('inspect', files.linear);
    expect(result.code).toBe(0);
    expect(result.out).toContain(`sha256:        ${sha256(buildLinearModel())}`);
    expect(result.out).toContain('producer:      onnx-serverless model-builder 1');
    expect(result.out).toContain('initialisers:  2 tensors, 88 B (88 bytes: raw_data 88, typed fields 0)');
    expect(result.out).toContain('inputs:\n  x: float32 [batch, 10]\noutputs:\n  y: float32 [batch, 2]');
  });

  it('says a file is not an ONNX model', async () => {
    const result = await cli('inspect', files.notOnnx);
    expect(result.code).toBe(1);
    expect(result.err).toContain(
      `${files.notOnnx} is not an ONNX model: it does not decode as an ONNX protobuf`,
    );
  });
});

describe('add to a folder', () => {
  it('writes the version, records its sha256 and size, and refuses to overwrite it', async () => {
    const repo = await newFolder();
    const bytes = buildLinearModel();

    const first = await cli(
      'add',
      files.linear,
      '--model',
      'linear',
      '--repo',
      repo,
      '--max-batch-size',
      '8',
    );

    expect(first.code).toBe(0);
    expect(first.out).toContain(`added linear version 1 to file://${repo}`);
    const config = parseModelConfig('linear', await readFile(join(repo, 'linear', 'config.json'), 'utf8'));
    expect(config.versions).toEqual({ 1: { sha256: sha256(bytes), size: bytes.byteLength } });
    expect(config.maxBatchSize).toBe(8);
    const store = new FileModelStore(repo);
    expect(sha256(await store.readArtifact('linear', '1', 'onnx', bytes.byteLength))).toBe(sha256(bytes));

    const again = await cli('add', files.big, '--model', 'linear', '--version', '1', '--repo', repo);
    expect(again.code).toBe(1);
    expect(again.err).toContain('linear version 1 already exists');
    expect(again.err).toContain('versions are immutable: add it as version 2');
    expect(sha256(await readFile(join(repo, 'linear', '1', 'model.onnx')))).toBe(sha256(bytes));

    const second = await cli('add', files.linear, '--model', 'linear', '--repo', repo, '--default');
    expect(second.code).toBe(0);
    const updated = parseModelConfig('linear', await readFile(join(repo, 'linear', 'config.json'), 'utf8'));
    expect(Object.keys(updated.versions)).toEqual(['1', '2']);
    expect(updated.defaultVersion).toBe('2');
    expect(updated.maxBatchSize).toBe(8);
    // Every write went through a temporary name: nothing else is left beside the files.
    expect((await readdir(join(repo, 'linear'))).sort()).toEqual(['1', '2', 'config.json']);
    expect(await readdir(join(repo, 'linear', '2'))).toEqual(['model.onnx']);
  });

  it('refuses a version whose file is there without a record (an interrupted add)', async () => {
    const repo = await newFolder();
    await mkdir(join(repo, 'linear', '1'), { recursive: true });
    await writeFile(join(repo, 'linear', '1', 'model.onnx'), 'half');

    const result = await cli('add', files.linear, '--model', 'linear', '--repo', repo);

    expect(result.code).toBe(1);
    expect(result.err).toContain('linear/1/model.onnx exists');
    expect(result.err).toContain('but config.json does not record it (an interrupted add?)');
    expect(await readdir(join(repo, 'linear'))).toEqual(['1']);
  });

  it.each([
    [
      'a file that is not ONNX',
      () => files.notOnnx,
      'is not an ONNX model: it does not decode as an ONNX protobuf',
    ],
    [
      'an opset the bundled runtime cannot load',
      () => files.opset99,
      'uses opset 99 of ai.onnx, but the bundled onnxruntime 1.30.0 supports at most opset 26',
    ],
  ])('refuses %s and writes nothing', async (_, file, message) => {
    const repo = await newFolder();
    const result = await cli('add', file(), '--model', 'm', '--repo', repo);
    expect(result.code).toBe(1);
    expect(result.err).toContain(message);
    await expect(stat(repo)).rejects.toThrow('ENOENT');
  });

  it('refuses a config.json that serving would refuse: a misspelt session key, an emptyDims input the model lacks', async () => {
    const repo = await newFolder();
    expect((await cli('add', files.linear, '--model', 'linear', '--repo', repo)).code).toBe(0);
    const path = join(repo, 'linear', 'config.json');
    const recorded = JSON.parse(await readFile(path, 'utf8'));

    await writeFile(path, JSON.stringify({ ...recorded, session: { warmUp: false } }));
    const misspelt = await cli('add', files.linear, '--model', 'linear', '--repo', repo);
    expect(misspelt.code).toBe(1);
    expect(misspelt.err).toContain("'session' has an unknown key 'warmUp' (did you mean 'warmup'?)");

    await writeFile(path, JSON.stringify({ ...recorded, emptyDims: { X: [0] } }));
    const message =
      "model 'linear' version 1: config.json is invalid: 'emptyDims' names input 'X', which the model does not have (did you mean 'x'?)";
    const inspected = await cli('inspect', '--model', 'linear', '--repo', repo);
    expect(inspected.code).toBe(1);
    expect(inspected.err).toContain(message);
    const added = await cli('add', files.linear, '--model', 'linear', '--repo', repo);
    expect(added.code).toBe(1);
    expect(added.err).toContain(message.replace('version 1', 'version 2'));
    expect((await readdir(join(repo, 'linear'))).sort()).toEqual(['1', 'config.json']);

    await writeFile(path, JSON.stringify({ ...recorded, emptyDims: { x: [0] } }));
    expect((await cli('inspect', '--model', 'linear', '--repo', repo)).code).toBe(0);
  });

  it('refuses a name the repository rejects', async () => {
    const repo = await newFolder();
    const result = await cli('add', files.linear, '--model', 'has space', '--repo', repo);
    expect(result.code).toBe(1);
    expect(result.err).toContain("model name 'has space' is rejected by the repository");
  });
});

describe('the supported opset limit', () => {
  it('is what onnxruntime itself loads: opset 26 runs, 27 is refused with both numbers named', async () => {
    const max = MAX_OPSETS['ai.onnx'] as number;
    const model = await loadAndWarmUp(reluModel(max), 'onnx', 'relu.onnx');
    await model.release();
    await expect(loadAndWarmUp(reluModel(max + 1), 'onnx', 'relu.onnx')).rejects.toThrow(
      `onnxruntime 1.30.0 cannot load relu.onnx: opset ${max + 1} of ai.onnx is above the supported maximum, opset ${max}`,
    );
  });
});

describe('add to S3', () => {
  it('uploads a large model with its ORT copy and records both; the serving store reads them back', async () => {
    const repo = `s3://${s3.bucket}/prod`;

    const result = await cli(
      'add',
      files.big,
      '--model',
      'big',
      '--repo',
      repo,
      '--endpoint',
      s3.endpoint,
      '--optimize',
      '--measure-runs',
      '0',
    );

    expect(result.code).toBe(0);
    expect(bigBytes.byteLength).toBeGreaterThan(8 * MiB);
    const store = new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: 'prod' });
    const document = await store.readConfig('big');
    const config = parseModelConfig('big', (document as { text: string }).text);
    const info = config.versions['1'];
    expect(info?.sha256).toBe(sha256(bigBytes));
    const onnxBytes = await store.readArtifact('big', '1', 'onnx', info?.size ?? 0);
    const ortBytes = await store.readArtifact('big', '1', 'ort', info?.ort?.size ?? 0);
    expect(sha256(onnxBytes)).toBe(sha256(bigBytes));
    expect(sha256(ortBytes)).toBe(info?.ort?.sha256);

    const again = await cli(
      'add',
      files.linear,
      '--model',
      'big',
      '--version',
      '1',
      '--repo',
      repo,
      '--endpoint',
      s3.endpoint,
    );
    expect(again.code).toBe(1);
    expect(again.err).toContain('big version 1 already exists');
  });

  it('fails fast and clearly when the repository cannot be reached', async () => {
    const port = await closedPort();
    // Fast by the count of connections tried, not by a wall clock a loaded machine can stretch.
    const connect = jest.spyOn(Socket.prototype, 'connect');
    let result: Awaited<ReturnType<typeof cli>>;
    let tries: number;
    try {
      result = await cli(
        'add',
        files.linear,
        '--model',
        'm',
        '--repo',
        's3://models/x',
        '--endpoint',
        `http://127.0.0.1:${port}`,
      );
      // Node passes the options first, or an array holding them (its normalised arguments).
      const portOf = (arg: unknown): unknown =>
        Array.isArray(arg) ? portOf(arg[0]) : (arg as { port?: unknown } | null)?.port;
      tries = connect.mock.calls.filter((call) => Number(portOf(call[0])) === port).length;
    } finally {
      connect.mockRestore();
    }

    expect(result.code).toBe(1);
    // Ended on the refusal, not on the probe's 10 s timeout, and after the SDK's standard 3 attempts.
    expect(result.err).toContain(
      `cannot reach the repository s3://models/x at http://127.0.0.1:${port} (ECONNREFUSED): check --endpoint and that the server runs`,
    );
    expect(tries).toBe(3);
  });
});

describe('optimize', () => {
  it('writes an ORT copy that answers what model.onnx answers, records it, and reports both sessions', async () => {
    const repo = await newFolder();
    expect((await cli('add', files.linear, '--model', 'linear', '--repo', repo)).code).toBe(0);

    const result = await cli(
      'optimize',
      '--model',
      'linear',
      '--repo',
      repo,
      '--measure-runs',
      '1',
      '--json',
    );

    expect(result.code).toBe(0);
    const report = JSON.parse(result.out);
    const ortBytes = new Uint8Array(await readFile(join(repo, 'linear', '1', 'model.ort')));
    const config = parseModelConfig('linear', await readFile(join(repo, 'linear', 'config.json'), 'utf8'));
    expect(config.versions['1']?.ort).toEqual({ sha256: sha256(ortBytes), size: ortBytes.byteLength });
    expect(report).toMatchObject({
      model: 'linear',
      version: '1',
      sha256: sha256(ortBytes),
      level: 'extended',
    });
    for (const side of [report.before, report.after]) {
      expect(side.runs).toHaveLength(1);
      expect(side.createMs).toBeGreaterThan(0);
      expect(side.rssAfterBytes).toBeGreaterThan(side.rssBeforeBytes);
    }

    // Independently of the command's own check: the copy, loaded as served, computes y = x·Wᵀ + b.
    const engine = new OrtEngine({ defaultIntraOpThreads: availableParallelism() });
    const model = await engine.load({ bytes: ortBytes, format: 'ort' }, servingOptions('ort'));
    const x = Float32Array.from({ length: 10 }, (_, i) => i - 4.5);
    const { y } = await model.run({ x: { datatype: 'FP32', shape: [1, 10], data: x } });
    await model.release();
    const expected = LINEAR_WEIGHTS.weight.map((row, o) =>
      row.reduce((s, w, i) => s + w * (x[i] as number), LINEAR_WEIGHTS.bias[o] as number),
    );
    expectClose(y?.data as Float32Array, expected, { atol: 1e-5 });

    const again = await cli('optimize', '--model', 'linear', '--repo', repo, '--measure-runs', '0');
    expect(again.code).toBe(1);
    expect(again.err).toContain('linear version 1 already has an ORT copy');
    const replaced = await cli(
      'optimize',
      '--model',
      'linear',
      '--repo',
      repo,
      '--measure-runs',
      '0',
      '--replace',
      '--level',
      'basic',
    );
    expect(replaced.code).toBe(0);
    expect(replaced.out).toContain('level basic');
  });

  it('checks an image model at the sizes it is given for its symbolic dims', async () => {
    const repo = await newFolder();
    const file = textDirectionModelPath();
    const [height, width] = ['p2o.DynamicDimension.1', 'p2o.DynamicDimension.2'];
    expect((await cli('add', file, '--model', 'text-direction', '--repo', repo)).code).toBe(0);

    const result = await cli(
      'optimize',
      '--model',
      'text-direction',
      '--repo',
      repo,
      '--measure-runs',
      '0',
      '--json',
      '--check-dim',
      `${height}=48`,
      '--check-dim',
      `${width}=192`,
    );

    expect(result.code).toBe(0);
    expect(JSON.parse(result.out).check).toMatchObject({ inputs: { x: [2, 3, 48, 192] }, elements: 4 });
  });

  it('refuses a --check-dim that names no dim of the model, listing the dims it has, writing nothing', async () => {
    const repo = await newFolder();
    const file = textDirectionModelPath();
    const dims = 'p2o.DynamicDimension.0, p2o.DynamicDimension.1, p2o.DynamicDimension.2';

    const added = await cli(
      'add',
      file,
      '--model',
      'td',
      '--repo',
      repo,
      '--optimize',
      '--check-dim',
      'heigth=48',
    );
    expect(added.code).toBe(2);
    expect(added.err).toContain(
      `--check-dim names 'heigth', which no input of the model has; its dynamic dims: ${dims}`,
    );
    await expect(stat(join(repo, 'td'))).rejects.toMatchObject({ code: 'ENOENT' });

    expect((await cli('add', file, '--model', 'td', '--repo', repo)).code).toBe(0);
    const optimised = await cli('optimize', '--model', 'td', '--repo', repo, '--check-dim', 'heigth=48');
    expect(optimised.code).toBe(2);
    expect(optimised.err).toContain("--check-dim names 'heigth'");
    await expect(stat(join(repo, 'td', '1', 'model.ort'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('says which model is missing', async () => {
    const repo = await newFolder();
    await mkdir(repo, { recursive: true });
    const result = await cli('optimize', '--model', 'ghost', '--repo', repo);
    expect(result.code).toBe(1);
    expect(result.err).toContain(`model 'ghost' is not in file://${repo}`);
  });
});

describe('verify and ls', () => {
  it('lists models and versions, passes an intact repository and finds a corrupted and a missing file', async () => {
    const repo = await newFolder();
    expect(
      (
        await cli(
          'add',
          files.linear,
          '--model',
          'linear',
          '--repo',
          repo,
          '--optimize',
          '--measure-runs',
          '0',
        )
      ).code,
    ).toBe(0);
    expect((await cli('add', files.linear, '--model', 'linear', '--repo', repo, '--default')).code).toBe(0);
    expect((await cli('add', files.big, '--model', 'big', '--repo', repo)).code).toBe(0);

    const listing = await cli('ls', '--repo', repo);
    expect(listing.code).toBe(0);
    const size = `${buildLinearModel().byteLength} B`;
    const lines = listing.out.split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toBe(`file://${repo}`);
    expect(lines[1]).toMatch(/^MODEL +VERSION +SIZE +ORT +DEFAULT +SHA256$/);
    expect(lines[2]).toMatch(/^big +1 +[\d.]+ MiB +- +default \(highest\) +[0-9a-f]{16}…$/);
    expect(lines[3]).toMatch(new RegExp(`^linear +1 +${size} +[\\d.]+ KiB +[0-9a-f]{16}…$`));
    expect(lines[4]).toMatch(new RegExp(`^linear +2 +${size} +- +default +[0-9a-f]{16}…$`));
    const json = JSON.parse((await cli('ls', '--repo', repo, '--json')).out);
    expect(json.models.map((m: { name: string; default: string }) => [m.name, m.default])).toEqual([
      ['big', '1'],
      ['linear', '2'],
    ]);

    const intact = await cli('verify', '--repo', repo);
    expect(intact.code).toBe(0);
    expect(intact.out).toContain(`4 files in file://${repo} match config.json`);

    const onnxFile = join(repo, 'linear', '2', 'model.onnx');
    const bytes = await readFile(onnxFile);
    bytes[bytes.byteLength - 1] = (bytes[bytes.byteLength - 1] as number) ^ 0xff;
    await writeFile(onnxFile, bytes);
    await unlink(join(repo, 'linear', '1', 'model.ort'));

    const broken = await cli('verify', '--repo', repo);
    expect(broken.code).toBe(1);
    expect(broken.out).toMatch(
      new RegExp(
        `^MISMATCH {2}linear/2/model\\.onnx {2}sha256 [0-9a-f]{16}… ${bytes.byteLength} bytes, config\\.json records`,
        'm',
      ),
    );
    expect(broken.out).toContain('MISSING   linear/1/model.ort');
    expect(broken.out).toContain('ok        big/1/model.onnx');
    expect(broken.out).toContain(`2 problems in file://${repo}`);
    expect((await cli('verify', '--repo', repo, '--model', 'big')).code).toBe(0);
  });

  it('verifies an S3 repository too', async () => {
    const repo = `s3://${s3.bucket}/verify`;
    expect(
      (await cli('add', files.linear, '--model', 'linear', '--repo', repo, '--endpoint', s3.endpoint)).code,
    ).toBe(0);
    await s3.putObject(s3.bucket, 'verify/linear/1/model.onnx', 'corrupted');

    const result = await cli('verify', '--repo', repo, '--endpoint', s3.endpoint);

    expect(result.code).toBe(1);
    expect(result.out).toContain('MISMATCH  linear/1/model.onnx');
  });

  it('says a folder repository does not exist', async () => {
    const missing = join(work, 'nowhere');
    const result = await cli('ls', '--repo', missing);
    expect(result.code).toBe(1);
    expect(result.err).toContain(
      `the repository folder ${missing} cannot be used (ENOENT): it does not exist`,
    );
  });
});

describe('the onnx-serve-models bin', () => {
  it('is the bundled CLI with a node shebang: it inspects, adds and lists, with exit codes', async () => {
    const repo = await newFolder();
    await withBuiltCli(async (bin) => {
      expect((await readFile(bin, 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);
      const inspect = await run(process.execPath, [bin, 'inspect', files.linear]);
      expect(inspect.stdout).toContain('x: float32 [batch, 10]');
      await run(process.execPath, [bin, 'add', files.linear, '--model', 'linear', '--repo', repo]);
      const ls = await run(process.execPath, [bin, 'ls', '--repo', repo]);
      expect(ls.stdout).toContain('linear  1');
      const usage = await run(process.execPath, [bin, 'add']).catch(
        (error: { code: number; stderr: string }) => error,
      );
      expect(usage).toMatchObject({ code: 2, stderr: expect.stringContaining('name the ONNX file to add') });
    });
  });
});
