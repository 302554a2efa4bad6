/**
 * The server door under overload, over real HTTP with the real onnxruntime-node and the linear model
 * (no dynamicBatching): requests queue per model and run one at a time in arrival order, a full queue
 * and the in-flight body budget refuse at once with 503 + Retry-After (before a body is read), and a
 * client gone mid-upload is a logged fact, not an error. The engine holds each run until the test lets
 * it through, so nothing here depends on timing.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { type ServerInstance, startServer } from '../../functions/server/main';
import { OrtEngine } from '../../shared/adapters/ort-engine';
import type { InferenceEngine, LoadedModel } from '../../shared/core/ports';
import type { Tensor } from '../../shared/core/tensor';
import { buildLinearModel } from '../../tools/onnx/model-builder';
import { deferred } from '../support/fakes';
import { expectClose } from '../support/golden';
import {
  call,
  linearRequest,
  metric,
  type Reply,
  serverConfig,
  waitFor,
  writeRepository,
} from '../support/server-harness';

const INFER = '/v2/models/linear/infer';
const LAST_ROWS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]];
const running: ServerInstance[] = [];
const dirs: string[] = [];

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** The real engine; once armed, each run waits at the door of the engine until the test lets it in. */
class HeldEngine implements InferenceEngine {
  readonly #inner = new OrtEngine({ defaultIntraOpThreads: 1 });
  armed = false;
  /** Runs that reached the engine, in order: the first input value of each, and its release. */
  readonly held: { first: number; release: () => void }[] = [];

  async load(...args: Parameters<InferenceEngine['load']>): Promise<LoadedModel> {
    const model = await this.#inner.load(...args);
    const engine = this;
    return {
      signature: model.signature,
      provider: model.provider,
      async run(feeds, outputs) {
        if (engine.armed) {
          const gate = deferred();
          engine.held.push({ first: (feeds.x as Tensor).data[0] as number, release: gate.resolve });
          await gate.promise;
        }
        return model.run(feeds, outputs);
      },
      release: () => model.release(),
    };
  }
}

/** The server over the linear model; with `hold`, every run after the preload waits for the test. */
async function startLinear(
  env: Record<string, string> = {},
  hold = true,
): Promise<{ server: ServerInstance; engine: HeldEngine }> {
  const dir = await mkdtemp(join(tmpdir(), 'server-overload-'));
  dirs.push(dir);
  await writeRepository(dir, [{ name: 'linear', bytes: buildLinearModel(), config: { maxBatchSize: 64 } }]);
  const engine = new HeldEngine();
  const server = await startServer(serverConfig(dir, { ONNX_SERVE_PRELOAD: 'linear', ...env }), { engine });
  running.push(server);
  await server.preloaded;
  engine.armed = hold;
  return { server, engine };
}

/** One row whose first feature is `first` (how a held run is told apart). */
function rowFor(first: number): number[][] {
  return [[first, 0.5, -1, 2, 0.25, -0.75, 1.5, 3, -2, 0.125]];
}

/** The linear model's answer for `rows`, from a session of this process. */
async function expected(rows: number[][]): Promise<Float32Array> {
  const engine = new OrtEngine({ defaultIntraOpThreads: 1 });
  const model = await engine.load(
    { bytes: buildLinearModel(), format: 'onnx' },
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
    const x = { datatype: 'FP32' as const, shape: [rows.length, 10], data: Float32Array.from(rows.flat()) };
    return (await model.run({ x })).y?.data as Float32Array;
  } finally {
    await model.release();
  }
}

async function expectAnswer(reply: Promise<Reply>, rows: number[][]): Promise<void> {
  const answer = await reply;
  expect(answer.status).toBe(200);
  expectClose(answer.json.outputs[0].data as number[], await expected(rows), { atol: 1e-5 });
}

function queueDepth(server: ServerInstance): number {
  const text = server.runtime.prometheus?.registry.render() ?? '';
  return metric(text, 'onnx_serve_queue_depth', { model: 'linear', version: '1' }) ?? 0;
}

function requestsTotal(server: ServerInstance, outcome: string): number | undefined {
  const text = server.runtime.prometheus?.registry.render() ?? '';
  return metric(text, 'onnx_serve_requests_total', { model: 'linear', outcome });
}

interface Upload {
  /** Resolves with the answer as soon as it comes, whether or not the body was sent. */
  readonly response: Promise<{ status: number; headers: IncomingMessage['headers']; text: string }>;
  write(bytes: Uint8Array | string): void;
  end(bytes?: Uint8Array | string): void;
  /** Closes the connection, as a client that gives up mid-upload. */
  destroy(): void;
}

/**
 * A POST whose body the test sends piece by piece: with `contentLength`, that header; without, a chunked
 * body with no length.
 */
function upload(baseUrl: string, path: string, contentLength?: number): Upload {
  const req = httpRequest(`${baseUrl}${path}`, {
    method: 'POST',
    agent: false,
    headers: {
      'content-type': 'application/json',
      ...(contentLength === undefined ? {} : { 'content-length': String(contentLength) }),
    },
  });
  // Writes after an early answer may fail (the server discards the rest): the answer is what counts.
  req.on('error', () => {});
  const response = new Promise<{ status: number; headers: IncomingMessage['headers']; text: string }>(
    (resolve, reject) => {
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString(),
          }),
        );
      });
      req.once('close', () => reject(new Error('closed without an answer')));
    },
  );
  response.catch(() => {});
  req.flushHeaders();
  return {
    response,
    write: (bytes) => {
      req.write(bytes);
    },
    end: (bytes) => {
      req.end(bytes);
    },
    destroy: () => {
      req.destroy();
    },
  };
}

/** A valid JSON request for `rows`, padded with trailing spaces to exactly `size` bytes. */
function paddedRequest(rows: number[][], size: number): Buffer {
  const text = linearRequest(rows);
  return Buffer.from(text + ' '.repeat(size - Buffer.byteLength(text)));
}

describe('server door under overload', () => {
  describe('per-model queue', () => {
    it('runs the requests of a model without dynamicBatching one at a time, in arrival order', async () => {
      const { server, engine } = await startLinear({ ONNX_SERVE_MAX_QUEUE_SIZE: '8' });
      const replies = [call(server.url, 'POST', INFER, linearRequest(rowFor(0))).reply];
      await waitFor(() => engine.held.length === 1);
      for (let i = 1; i <= 5; i++) {
        replies.push(call(server.url, 'POST', INFER, linearRequest(rowFor(i))).reply);
        // Arrived: in the engine or waiting in the queue.
        await waitFor(() => engine.held.length + queueDepth(server) === i + 1);
      }
      expect(engine.held.map((run) => run.first)).toEqual([0]);
      expect(queueDepth(server)).toBe(5);
      for (let i = 0; i <= 5; i++) {
        expect(engine.held.map((run) => run.first)).toEqual([0, 1, 2, 3, 4, 5].slice(0, i + 1));
        engine.held[i]?.release();
        await expectAnswer(replies[i] as Promise<Reply>, rowFor(i));
        if (i < 5) await waitFor(() => engine.held.length === i + 2);
      }
      expect(queueDepth(server)).toBe(0);
    });

    it('refuses a request past the bound with 503 and Retry-After before reading its body', async () => {
      const { server, engine } = await startLinear({ ONNX_SERVE_MAX_QUEUE_SIZE: '2' });
      const replies = [call(server.url, 'POST', INFER, linearRequest(rowFor(0))).reply];
      await waitFor(() => engine.held.length === 1);
      for (const i of [1, 2]) {
        replies.push(call(server.url, 'POST', INFER, linearRequest(rowFor(i))).reply);
        await waitFor(() => queueDepth(server) === i);
      }
      // Headers only: the answer comes without a byte of the body sent.
      const refused = upload(server.url, INFER, 5000);
      const answer = await refused.response;
      expect(answer.status).toBe(503);
      expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(answer.text).error).toMatch(/model 'linear' has 2 requests queued, its limit/);
      refused.destroy();
      expect(requestsTotal(server, 'overloaded')).toBe(1);
      // The queued requests were never disturbed: each is answered in its turn.
      for (let i = 0; i <= 2; i++) {
        engine.held[i]?.release();
        await expectAnswer(replies[i] as Promise<Reply>, rowFor(i));
        if (i < 2) await waitFor(() => engine.held.length === i + 2);
      }
      engine.armed = false;
      await expectAnswer(call(server.url, 'POST', INFER, linearRequest(LAST_ROWS)).reply, LAST_ROWS);
    });

    it('counts requests whose bodies are still arriving against the bound, refusing the next on its headers', async () => {
      const { server, engine } = await startLinear({ ONNX_SERVE_MAX_QUEUE_SIZE: '2' });
      const first = call(server.url, 'POST', INFER, linearRequest(rowFor(0)));
      await waitFor(() => engine.held.length === 1);
      const queued = call(server.url, 'POST', INFER, linearRequest(rowFor(1)));
      await waitFor(() => queueDepth(server) === 1);
      // Admitted on its headers, its body not yet sent: it holds the last place.
      const body = Buffer.from(linearRequest(rowFor(2)));
      const arriving = upload(server.url, INFER, body.byteLength);
      await waitFor(() => server.server.inFlight() === 3);
      const refused = upload(server.url, INFER, 5000);
      const answer = await refused.response;
      expect(answer.status).toBe(503);
      expect(JSON.parse(answer.text).error).toMatch(/model 'linear' has 1 requests queued, its limit/);
      refused.destroy();
      arriving.end(body);
      await waitFor(() => queueDepth(server) === 2);
      for (const [i, reply] of [first.reply, queued.reply].entries()) {
        engine.held[i]?.release();
        await expectAnswer(reply, rowFor(i));
        await waitFor(() => engine.held.length === i + 2);
      }
      engine.held[2]?.release();
      const last = await arriving.response;
      expect(last.status).toBe(200);
      expectClose(JSON.parse(last.text).outputs[0].data, await expected(rowFor(2)), { atol: 1e-5 });
    });

    it('drops a queued request whose client disconnects: it never runs, and nothing is logged as an error', async () => {
      const errors = jest.spyOn(Logger.prototype, 'error');
      const { server, engine } = await startLinear();
      const first = call(server.url, 'POST', INFER, linearRequest(rowFor(0)));
      await waitFor(() => engine.held.length === 1);
      const gone = call(server.url, 'POST', INFER, linearRequest(rowFor(1)));
      await waitFor(() => queueDepth(server) === 1);
      gone.abort();
      await expect(gone.reply).rejects.toThrow();
      await waitFor(() => queueDepth(server) === 0);
      const next = call(server.url, 'POST', INFER, linearRequest(rowFor(2)));
      await waitFor(() => queueDepth(server) === 1);
      engine.held[0]?.release();
      await expectAnswer(first.reply, rowFor(0));
      await waitFor(() => engine.held.length === 2);
      expect(engine.held.map((run) => run.first)).toEqual([0, 2]);
      engine.held[1]?.release();
      await expectAnswer(next.reply, rowFor(2));
      expect(requestsTotal(server, 'request_aborted')).toBe(1);
      expect(errors).not.toHaveBeenCalled();
    });
  });

  describe('request bytes in flight', () => {
    const SIZE = 600_000;

    it('refuses a body past ONNX_SERVE_MAX_INFLIGHT_MB with 503 and Retry-After, by Content-Length before reading it and by counting a body without one', async () => {
      const { server } = await startLinear(
        { ONNX_SERVE_MAX_BODY_MB: '1', ONNX_SERVE_MAX_INFLIGHT_MB: '1' },
        false,
      );
      const first = paddedRequest(rowFor(0), SIZE);
      const held = upload(server.url, INFER, SIZE);
      held.write(first.subarray(0, 1000));
      // Its bytes are taken when its headers arrive, before its body is read.
      await waitFor(() => server.server.inFlight() === 1);

      // Declared: refused on its headers, not a byte of its body sent.
      const declared = upload(server.url, INFER, SIZE);
      const refused = await declared.response;
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(JSON.parse(refused.text).error).toMatch(/request bodies.*limit of 1\.0 MiB/);
      declared.destroy();

      // No Content-Length: counted as it streams, refused once past the budget.
      const streamed = upload(server.url, INFER);
      for (let i = 0; i < 5; i++) streamed.write(Buffer.alloc(100_000, 0x20));
      streamed.end();
      const cut = await streamed.response;
      expect(cut.status).toBe(503);
      expect(cut.headers['retry-after']).toBe('1');
      await waitFor(() => server.server.inflightBytes() === SIZE);

      // The held body completes and is answered; its bytes are given back.
      held.end(first.subarray(1000));
      const answer = await held.response;
      expect(answer.status).toBe(200);
      expectClose(JSON.parse(answer.text).outputs[0].data, await expected(rowFor(0)), { atol: 1e-5 });
      await waitFor(() => server.server.inflightBytes() === 0);
      await expectAnswer(
        call(server.url, 'POST', INFER, paddedRequest(rowFor(1), SIZE).toString()).reply,
        rowFor(1),
      );
      expect(requestsTotal(server, 'overloaded')).toBe(2);
    });
  });

  describe('client gone mid-upload', () => {
    it('logs an info line without a stack, not an error, and gives back the bytes it held', async () => {
      const errors = jest.spyOn(Logger.prototype, 'error');
      const infos = jest.spyOn(Logger.prototype, 'info');
      const { server } = await startLinear({}, false);
      const body = paddedRequest(rowFor(0), 100_000);
      const gone = upload(server.url, INFER, body.byteLength);
      gone.write(body.subarray(0, 1000));
      await waitFor(() => server.server.inFlight() === 1);
      gone.destroy();
      await waitFor(() => server.server.inFlight() === 0);
      expect(errors).not.toHaveBeenCalled();
      expect(server.server.inflightBytes()).toBe(0);
      await waitFor(() => infos.mock.calls.some(([message]) => message === 'client disconnected mid-upload'));
      const [, details] =
        infos.mock.calls.find(([message]) => message === 'client disconnected mid-upload') ?? [];
      expect(details).toEqual({
        method: 'POST',
        path: INFER,
        receivedBytes: expect.any(Number),
        declaredBytes: body.byteLength,
      });
      expect((details as { receivedBytes: number }).receivedBytes).toBeLessThanOrEqual(1000);
      expect(errors).not.toHaveBeenCalled();
      expect(requestsTotal(server, 'request_aborted')).toBe(1);
      // The server serves on.
      await expectAnswer(call(server.url, 'POST', INFER, linearRequest(rowFor(1))).reply, rowFor(1));
    });
  });
});
