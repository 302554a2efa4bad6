/**
 * Execution providers and precision variants with the real onnxruntime-node (CPU only here): a provider
 * that cannot load falls back to the next with a warning, and a variant is taken only with a provider it
 * lists.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import { parseModelConfig } from '../../shared/core/model-config';
import { loadPlan, servingPlan } from '../../shared/core/model-loader';
import type { ResolvedModel } from '../../shared/core/model-registry';
import { buildLinearModel, buildMlpModel } from '../../tools/onnx/model-builder';
import { expectClose } from '../support/golden';
import {
  get,
  linearRequest,
  metric,
  post,
  type RepositoryModel,
  serverConfig,
  writeRepository,
} from '../support/server-harness';

const INFER = '/v2/models/linear/infer';
const ROWS = [
  [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  [-1, 0.5, 0, 2, -3, 1, 1, 0, -0.25, 4],
];
/** A model with the linear model's signature (x [batch, 10] -> y [batch, 2]) and other weights. */
const OTHER_BYTES = buildMlpModel({ inputSize: 10, hidden: [4], outputSize: 2, seed: 3 });

const running: ServerInstance[] = [];
const dirs: string[] = [];

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function start(
  model: Omit<RepositoryModel, 'name' | 'bytes'>,
  preload = true,
): Promise<ServerInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'server-providers-'));
  dirs.push(dir);
  await writeRepository(dir, [{ name: 'linear', bytes: buildLinearModel(), ...model }]);
  const server = await startServer(serverConfig(dir, preload ? { ONNX_SERVE_PRELOAD: 'linear' } : {}));
  running.push(server);
  await server.preloaded;
  return server;
}

/** `bytes` run on the CPU in this process. */
async function reference(bytes: Uint8Array): Promise<Float32Array> {
  const engine = new OrtEngine({ defaultIntraOpThreads: 1 });
  const model = await engine.load(
    { bytes, format: 'onnx' },
    {
      graphOptimizationLevel: 'all',
      intraOpThreads: 1,
      interOpThreads: 1,
      executionProviders: ['cpu'],
      useModelBytesDirectly: false,
      disablePrepacking: false,
    },
  );
  try {
    const x = { datatype: 'FP32' as const, shape: [ROWS.length, 10], data: Float32Array.from(ROWS.flat()) };
    return (await model.run({ x })).y?.data as Float32Array;
  } finally {
    await model.release();
  }
}

describe('execution providers', () => {
  it('falls back from CUDA (and its FP16 variant) to the CPU and the default file, with a warning naming CUDA', async () => {
    const warnings = jest.spyOn(Logger.prototype, 'warn');
    const server = await start({
      config: { maxBatchSize: 8, session: { executionProviders: ['cuda', 'cpu'] } },
      variants: [{ name: 'fp16', bytes: OTHER_BYTES, providers: ['cuda'] }],
    });
    expect(server.isReady()).toBe(true);
    const reply = await post(server.url, INFER, linearRequest(ROWS));
    expect(reply.status).toBe(200);
    expectClose(reply.json.outputs[0].data, await reference(buildLinearModel()), { atol: 1e-5 });

    const warned = warnings.mock.calls.filter(([message]) => String(message).includes('execution provider'));
    expect(warned).toHaveLength(1);
    expect(warned[0]?.[1]).toMatchObject({ model: 'linear', provider: 'cuda', variant: 'fp16' });
    const logged = warned[0]?.[1] as { error: Error } | undefined;
    expect(logged?.error.message).toMatch(/cuda/i);

    const text = (await get(server.url, '/metrics')).text;
    expect(metric(text, 'onnx_serve_provider_fallbacks_total', { model: 'linear', provider: 'cuda' })).toBe(
      1,
    );
    const info = { model: 'linear', version: '1', provider: 'cpu', variant: '' };
    expect(metric(text, 'onnx_serve_model_provider_info', info)).toBe(1);
  });

  it('loads the variant whose providers include the one that loads', async () => {
    const server = await start({
      config: { session: { executionProviders: ['cpu'] } },
      variants: [{ name: 'alt', bytes: OTHER_BYTES, providers: ['cpu'] }],
    });
    const reply = await post(server.url, INFER, linearRequest(ROWS));
    expectClose(reply.json.outputs[0].data, await reference(OTHER_BYTES), { atol: 1e-5 });
    const text = (await get(server.url, '/metrics')).text;
    const info = { model: 'linear', version: '1', provider: 'cpu', variant: 'alt' };
    expect(metric(text, 'onnx_serve_model_provider_info', info)).toBe(1);
  });

  it('answers 503 naming the providers when none of them loads', async () => {
    const server = await start({ config: { session: { executionProviders: ['cuda'] } } }, false);
    const reply = await post(server.url, INFER, linearRequest(ROWS));
    expect(reply.status).toBe(503);
    expect(reply.json.error).toMatch(/cuda:/);
  });
});

describe('loadPlan', () => {
  function resolved(versions: Record<string, unknown>, providers: string[]): ResolvedModel {
    const config = parseModelConfig(
      'm',
      JSON.stringify({ versions: { '1': versions }, session: { executionProviders: providers } }),
    );
    return { config, version: '1', format: 'onnx', sha256: 'a'.repeat(64), size: 10 };
  }
  const fp16 = { sha256: 'b'.repeat(64), size: 5, providers: ['cuda', 'tensorrt'] };

  it('pairs each provider with the variant that lists it, neighbours sharing a file in one attempt', () => {
    const plan = loadPlan(
      resolved({ sha256: 'a'.repeat(64), size: 10, variants: { fp16 } }, ['tensorrt', 'cuda', 'cpu']),
    );
    expect(plan).toEqual([
      { variant: 'fp16', format: 'onnx', sha256: 'b'.repeat(64), size: 5, providers: ['tensorrt', 'cuda'] },
      { variant: undefined, format: 'onnx', sha256: 'a'.repeat(64), size: 10, providers: ['cpu'] },
    ]);
  });

  it('is one attempt with every provider when the version has no variants', () => {
    const plan = loadPlan(resolved({ sha256: 'a'.repeat(64), size: 10 }, ['cuda', 'cpu']));
    expect(plan).toEqual([
      { variant: undefined, format: 'onnx', sha256: 'a'.repeat(64), size: 10, providers: ['cuda', 'cpu'] },
    ]);
  });

  it('never picks a CPU variant on its own: int8 made for the CPU is served only where a deployment chooses it', () => {
    const int8 = { sha256: 'c'.repeat(64), size: 3, precision: 'int8', runsOn: ['cpu'] };
    const plan = loadPlan(
      resolved({ sha256: 'a'.repeat(64), size: 10, variants: { fp16, int8 } }, ['cuda', 'cpu']),
    );
    expect(plan).toEqual([
      { variant: 'fp16', format: 'onnx', sha256: 'b'.repeat(64), size: 5, providers: ['cuda'] },
      { variant: undefined, format: 'onnx', sha256: 'a'.repeat(64), size: 10, providers: ['cpu'] },
    ]);
  });

  describe('servingPlan', () => {
    const int8 = {
      sha256: 'c'.repeat(64),
      size: 3,
      precision: 'int8',
      runsOn: ['cpu'],
      ort: { sha256: 'd'.repeat(64), size: 4 },
    };
    const version = { sha256: 'a'.repeat(64), size: 10, variants: { fp16, int8 } };

    it("puts the chosen variant first, from its ORT copy, with its runsOn providers in the model's order", () => {
      const plan = servingPlan(resolved(version, ['cuda', 'cpu']), 'int8');
      expect(plan.attempts).toEqual([
        { variant: 'int8', format: 'ort', sha256: 'd'.repeat(64), size: 4, providers: ['cpu'], chosen: true },
        { variant: 'fp16', format: 'onnx', sha256: 'b'.repeat(64), size: 5, providers: ['cuda'] },
        { variant: undefined, format: 'onnx', sha256: 'a'.repeat(64), size: 10, providers: ['cpu'] },
      ]);
      expect(plan.variantFallback).toBeUndefined();
    });

    it('leaves out providers that are not available, and the files only they would run', () => {
      const missing = new Map([['cuda', new Error('no CUDA')]]);
      const plan = servingPlan(resolved(version, ['cuda', 'cpu']), undefined, missing);
      expect(plan.attempts.map((a) => [a.variant, a.providers])).toEqual([[undefined, ['cpu']]]);
      expect(plan.skipped).toEqual([{ provider: 'cuda', variant: 'fp16', error: missing.get('cuda') }]);
    });

    it('does not try a chosen fp16 variant twice', () => {
      const plan = servingPlan(resolved(version, ['cuda', 'cpu']), 'fp16');
      expect(plan.attempts.map((a) => a.variant)).toEqual(['fp16', undefined]);
    });

    it('says why a chosen variant is not tried: missing, or not for these providers', () => {
      expect(servingPlan(resolved(version, ['cpu']), 'int4').variantFallback).toEqual({
        reason: "version 1 has no 'int4' variant",
      });
      expect(servingPlan(resolved(version, ['cpu']), 'constructor').variantFallback).toEqual({
        reason: "version 1 has no 'constructor' variant",
      });
      expect(servingPlan(resolved(version, ['cuda']), 'int8').variantFallback?.reason).toMatch(
        /runs on cpu, none of which is in the model's executionProviders \(cuda\)/,
      );
    });
  });

  it('refuses a variant without providers or with a bad name in config.json', () => {
    expect(() =>
      resolved({ sha256: 'a'.repeat(64), size: 10, variants: { fp16: { ...fp16, providers: [] } } }, ['cpu']),
    ).toThrow(/variants\.fp16' must list its providers/);
    expect(() => resolved({ sha256: 'a'.repeat(64), size: 10, variants: { '../x': fp16 } }, ['cpu'])).toThrow(
      /variant name '\.\.\/x'/,
    );
  });
});
