/**
 * The model repository of the benchmarks: s3rver on loopback (an S3-compatible server, in this process)
 * holding models in the serving layout, and the environment a child needs to reach it.
 */
import { readFile } from 'node:fs/promises';
import { type S3Server, startS3Server } from '../../test/support/s3-server';
import type { BenchModel } from './models';

const BUCKET = 'bench-models';
const PREFIX = 'repo';
/** s3rver accepts any signature made with these (it checks nothing else). */
const CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

/** A running repository. */
export interface BenchRepository {
  readonly endpoint: string;
  readonly bucket: string;
  /** `s3://bucket/prefix`, as `ONNX_SERVE_MODEL_REPOSITORY` takes it. */
  readonly url: string;
  /** Key of a file of `model`, e.g. `key('mlp-50mb', '1/model.onnx')`. */
  key(model: string, file: string): string;
  /** Uploads both formats of `model` as version 1, with a config.json preferring the ORT copy. */
  publish(model: BenchModel, config?: Readonly<Record<string, unknown>>): Promise<void>;
  /** Rewrites `model`'s config.json: whether the ORT copy is served (`preferOrtFormat`). */
  setPreferOrt(model: BenchModel, preferOrt: boolean): Promise<void>;
  /** Puts any object (batch inputs). */
  put(key: string, bytes: Uint8Array | string): Promise<void>;
  /** Environment variables of an S3 client of a child process: credentials and region. */
  readonly clientEnv: Readonly<Record<string, string>>;
  readonly server: S3Server;
  close(): Promise<void>;
}

export async function startRepository(): Promise<BenchRepository> {
  const server = await startS3Server({ bucket: BUCKET });
  const key = (model: string, file: string) => `${PREFIX}/${model}/${file}`;
  const configs = new Map<string, Record<string, unknown>>();
  const writeConfig = async (model: BenchModel, preferOrt: boolean) => {
    const extra = configs.get(model.name) ?? {};
    const session = { ...(extra.session as Record<string, unknown> | undefined), preferOrtFormat: preferOrt };
    const config = {
      name: model.name,
      maxBatchSize: 64,
      ...extra,
      versions: {
        '1': {
          sha256: model.onnx.sha256,
          size: model.onnx.size,
          ort: { sha256: model.ort.sha256, size: model.ort.size },
          ...(model.variants === undefined
            ? {}
            : {
                variants: Object.fromEntries(
                  Object.entries(model.variants).map(([precision, v]) => [
                    precision,
                    {
                      sha256: v.onnx.sha256,
                      size: v.onnx.size,
                      precision,
                      runsOn: ['cpu'],
                      ort: { sha256: v.ort.sha256, size: v.ort.size },
                    },
                  ]),
                ),
              }),
        },
      },
      session,
    };
    await server.putObject(BUCKET, key(model.name, 'config.json'), JSON.stringify(config));
  };
  return {
    endpoint: server.endpoint,
    bucket: BUCKET,
    url: `s3://${BUCKET}/${PREFIX}`,
    key,
    async publish(model, config = {}) {
      configs.set(model.name, { ...config });
      await server.putObject(BUCKET, key(model.name, '1/model.onnx'), await readFile(model.onnx.file));
      await server.putObject(BUCKET, key(model.name, '1/model.ort'), await readFile(model.ort.file));
      for (const [precision, v] of Object.entries(model.variants ?? {})) {
        await server.putObject(
          BUCKET,
          key(model.name, `1/model.${precision}.onnx`),
          await readFile(v.onnx.file),
        );
        await server.putObject(
          BUCKET,
          key(model.name, `1/model.${precision}.ort`),
          await readFile(v.ort.file),
        );
      }
      await writeConfig(model, true);
    },
    setPreferOrt: writeConfig,
    async put(objectKey, bytes) {
      await server.putObject(BUCKET, objectKey, bytes);
    },
    clientEnv: { ...CREDENTIALS, AWS_REGION: 'us-east-1' },
    server,
    close: () => server.close(),
  };
}
