/**
 * The worker thread of {@link WorkerOrtEngine}: one onnxruntime session, created and run by an
 * {@link OrtEngine} here, so its synchronous `session.run` blocks this thread instead of the server's
 * event loop. Bundled on its own (`dist/server/ort-worker.js`, tools/build.mjs).
 */
import { parentPort } from 'node:worker_threads';
import { OrtEngine, type OrtLoadedModel } from './ort-engine';
import { packTensors, toWireError, type WorkerReply, type WorkerRequest } from './ort-worker-protocol';

const port = parentPort;
if (port === null) throw new Error('ort-worker.js runs only as a worker thread');

// Holds the transferred model bytes too: a zero-copy ORT session reads its weights from them until it is
// released, and the OrtModel keeps them referenced for exactly that long.
let model: OrtLoadedModel | undefined;

async function handle(request: WorkerRequest): Promise<{ reply: WorkerReply; transfer: ArrayBuffer[] }> {
  const { id } = request;
  try {
    switch (request.op) {
      case 'load': {
        if (model !== undefined) throw new Error('this worker already holds a session');
        const engine = new OrtEngine({ defaultIntraOpThreads: request.defaultIntraOpThreads });
        model = await engine.load({ bytes: request.bytes, format: request.format }, request.options);
        const fallbacks = model.fallbacks.map((f) => ({ provider: f.provider, error: toWireError(f.error) }));
        const reply = { id, type: 'loaded', signature: model.signature, provider: model.provider, fallbacks };
        return { reply: reply as WorkerReply, transfer: [] };
      }
      case 'run': {
        if (model === undefined) throw new Error('the session was released');
        const packed = packTensors(await model.run(request.feeds, request.outputs));
        return { reply: { id, type: 'outputs', outputs: packed.tensors }, transfer: packed.transfer };
      }
      case 'release': {
        await model?.release();
        model = undefined;
        return { reply: { id, type: 'released' }, transfer: [] };
      }
    }
  } catch (error) {
    return { reply: { id, type: 'failed', error: toWireError(error) }, transfer: [] };
  }
}

port.on('message', (request: WorkerRequest) => {
  void handle(request).then(({ reply, transfer }) => {
    try {
      port.postMessage(reply, transfer);
    } catch (error) {
      // An answer that cannot be cloned must still settle the caller's promise.
      port.postMessage({ id: request.id, type: 'failed', error: toWireError(error) } satisfies WorkerReply);
    }
  });
});
