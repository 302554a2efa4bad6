/**
 * The naive cold start, as the public samples do it: GetObject the `.onnx` file to /tmp, create the
 * session from that path with default options, run. Bundled as a Lambda function would be (the SDK inside,
 * onnxruntime-node outside) and required by children/cold-start.ts.
 */
import { createWriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import * as ort from 'onnxruntime-node';
import type { BaselineOutcome, BaselineSpec } from '../lib/cold-protocol';
import { benchInput, elements } from '../lib/input';

export async function run(spec: BaselineSpec): Promise<BaselineOutcome> {
  const target = spec.download;
  if (target === undefined) throw new Error(`the naive baseline needs 'download'`);
  const t0 = performance.now();
  const s3 = new S3Client({
    endpoint: target.endpoint,
    forcePathStyle: true,
    // Against an S3-compatible server, as our client is configured (FACTS.md).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const object = await s3.send(new GetObjectCommand({ Bucket: target.bucket, Key: target.key }));
  await pipeline(object.Body as Readable, createWriteStream(target.file));
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(target.file);
  const t2 = performance.now();
  const { name, shape } = spec.input;
  const results = await session.run({
    [name]: new ort.Tensor('float32', benchInput(elements(shape)), [...shape]),
  });
  const first = results[session.outputNames[0] as string] as ort.Tensor;
  const t3 = performance.now();
  s3.destroy();
  return {
    phases: { downloadMs: t1 - t0, createMs: t2 - t1, firstRunMs: t3 - t2 },
    output: Array.from(first.data as Float32Array),
  };
}
