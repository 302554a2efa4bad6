/**
 * Runs the packaged batch function in a Lambda layout with its layer (lambda-layout.ts), invoked by
 * lambda-local with the S3 event the loopback S3 server emitted for an input uploaded under the packaged
 * input prefix, and reads its results back from the packaged output prefix.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { buildLinearModel, LINEAR_IN, LINEAR_WEIGHTS } from '../../tools/onnx/model-builder';
import { writeModelVersion } from '../../tools/sample-models';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  environmentOf,
  functionNamed,
  type LambdaLayout,
  type LayoutReport,
  s3Location,
  unpackFunction,
} from './lambda-layout';
import { packagedService } from './packaged-service';

const MODEL = 'linear';
const RECORDS = 5;

let s3: S3Server;
let layout: LambdaLayout;
let report: LayoutReport<unknown>;
let outputPrefix: string;
let bucket: string;

const rows = Array.from({ length: RECORDS }, (_, r) =>
  Array.from({ length: LINEAR_IN }, (_, i) => ((r * 7 + i * 3) % 11) / 4 - 1),
);

function linear(x: readonly number[]): number[] {
  return LINEAR_WEIGHTS.weight.map(
    (row, o) => row.reduce((sum, w, i) => sum + w * (x[i] ?? Number.NaN), 0) + (LINEAR_WEIGHTS.bias[o] ?? 0),
  );
}

async function getText(key: string): Promise<string> {
  const output = await s3.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await output.Body?.transformToString('utf-8')) ?? '';
}

beforeAll(async () => {
  const pkg = await packagedService();
  const fn = functionNamed(pkg, 'batch');
  const env = environmentOf(fn);
  const models = s3Location(env.ONNX_SERVE_MODEL_REPOSITORY);
  const input = s3Location(env.ONNX_SERVE_BATCH_INPUT_PREFIX);
  const output = s3Location(env.ONNX_SERVE_BATCH_OUTPUT_PREFIX);
  expect(new Set([models.bucket, input.bucket, output.bucket]).size).toBe(1);
  bucket = models.bucket;
  outputPrefix = output.prefix;

  s3 = await startS3Server({ bucket });
  layout = await unpackFunction(pkg, fn);
  const repo = join(layout.sandbox, 'repo');
  // A batch axis (maxBatchSize > 0) lets records be single examples, stacked into micro-batches.
  await writeModelVersion(repo, MODEL, '1', buildLinearModel(), { configPatch: { maxBatchSize: 64 } });
  for (const file of ['config.json', '1/model.onnx']) {
    await s3.putObject(bucket, `${models.prefix}/${MODEL}/${file}`, await readFile(join(repo, MODEL, file)));
  }

  const key = `${input.prefix}/${MODEL}/contract.jsonl`;
  const lines = [...rows.map((x, r) => JSON.stringify({ id: `r${r}`, x })), '{"x": [1, 2, 3'];
  // The event S3 would send: the one s3rver emits for the upload (its keys need no encoding here).
  const emitted = new Promise<unknown>((resolve) => {
    s3.events.on('event', (event: { Records: { s3: { object: { key: string } } }[] }) => {
      if (event.Records[0]?.s3.object.key === key) resolve(event);
    });
  });
  await s3.putObject(bucket, key, `${lines.join('\n')}\n`);
  report = await layout.invoke([await emitted], {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    ONNX_SERVE_S3_ENDPOINT: s3.endpoint,
  });
}, 300_000);

afterAll(async () => {
  await s3?.close();
  await layout?.dispose();
});

describe('serverless package', () => {
  describe('the packaged batch function, unzipped into a Lambda layout with its layer', () => {
    it('scores every record of an uploaded input into the output prefix', async () => {
      const results = (await getText(`${outputPrefix}/${MODEL}/contract.out.jsonl`))
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { id: string; outputs: { y: number[] | number[][] } });
      expect(results.map((r) => r.id)).toEqual(rows.map((_, r) => `r${r}`));
      results.forEach((result, r) => {
        const y = result.outputs.y.flat();
        linear(rows[r] ?? []).forEach((value, c) => {
          expect(y[c]).toBeCloseTo(value, 5);
        });
      });
    });

    it('reports the malformed line in the errors file and commits a manifest', async () => {
      const errors = (await getText(`${outputPrefix}/${MODEL}/contract.errors.jsonl`)).trim().split('\n');
      expect(errors).toHaveLength(1);
      expect(JSON.parse(errors[0] ?? '{}')).toMatchObject({ line: RECORDS + 1 });
      const manifest = JSON.parse(await getText(`${outputPrefix}/${MODEL}/contract.manifest.json`));
      expect(manifest).toMatchObject({ status: 'succeeded' });
    });

    it('loads onnxruntime-node from the layer', () => {
      expect(report.results).toHaveLength(1);
      const ort = report.modules.filter((file) => file.includes('onnxruntime'));
      expect(ort.some((file) => file.endsWith('/linux/x64/onnxruntime_binding.node'))).toBe(true);
      expect(
        ort.filter((file) => !file.startsWith(join(layout.layerRoot, 'nodejs', 'node_modules'))),
      ).toEqual([]);
    });
  });
});
