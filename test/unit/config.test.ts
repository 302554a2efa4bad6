import { type InstanceFacts, parseConfig } from '../../shared/core/config';
import { ConfigError } from '../../shared/core/errors';

const FACTS: InstanceFacts = { memoryBytes: 4096 * 1024 * 1024, availableParallelism: 2, tmpDir: '/tmp' };
const MB = 1024 * 1024;

describe('parseConfig', () => {
  it('defaults to the local model folder with limits sized from the instance', () => {
    const config = parseConfig({}, FACTS);
    expect(config.repository).toEqual({ kind: 'file', root: './models' });
    expect(config.intraOpThreads).toBe(2);
    expect(config.cacheMemoryBytes).toBe(Math.floor(4096 * 0.6) * MB);
    expect(config.diskCache).toEqual({ dir: '/tmp/onnx-serve-models', maxBytes: 400 * MB });
    expect(config.server).toEqual({
      host: '127.0.0.1',
      port: 8080,
      shutdownGraceMs: 10_000,
      maxQueueSize: 256,
      maxInflightBytes: Math.floor(4096 * 0.1) * MB,
    });
    expect(Object.isFrozen(config.limits)).toBe(true);
  });

  it("derives the session budget from the Lambda function's memory", () => {
    const config = parseConfig({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '1024' }, FACTS);
    expect(config.cacheMemoryBytes).toBe(Math.floor(1024 * 0.6) * MB);
  });

  it.each([
    ['128', 1],
    ['1769', 1],
    ['3538', 2],
    ['10240', 2], // six vCPUs' worth, but this instance has two
  ])('on Lambda with %s MB, defaults to %d onnxruntime thread(s)', (memory, threads) => {
    expect(parseConfig({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: memory }, FACTS).intraOpThreads).toBe(threads);
  });

  it('reads an S3 repository with a custom endpoint', () => {
    const config = parseConfig(
      {
        ONNX_SERVE_MODEL_REPOSITORY: 's3://my-models/prod/repo/',
        ONNX_SERVE_S3_ENDPOINT: 'http://127.0.0.1:9000',
        ONNX_SERVE_S3_PART_SIZE_MB: '16',
        AWS_REGION: 'eu-west-1',
      },
      FACTS,
    );
    expect(config.repository).toEqual({
      kind: 's3',
      bucket: 'my-models',
      prefix: 'prod/repo',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      partSizeBytes: 16 * MB,
      concurrency: 8,
    });
  });

  it('honours PORT (Cloud Run) unless ONNX_SERVE_PORT is set', () => {
    expect(parseConfig({ PORT: '9000' }, FACTS).server.port).toBe(9000);
    expect(parseConfig({ PORT: '9000', ONNX_SERVE_PORT: '7000' }, FACTS).server.port).toBe(7000);
  });

  it("runs the server's sessions in worker threads unless ENGINE_THREAD is 'main', and refuses other values", () => {
    expect(parseConfig({}, FACTS).engineThread).toBe('worker');
    expect(parseConfig({ ONNX_SERVE_ENGINE_THREAD: 'Worker' }, FACTS).engineThread).toBe('worker');
    expect(parseConfig({ ONNX_SERVE_ENGINE_THREAD: 'MAIN' }, FACTS).engineThread).toBe('main');
    expect(() => parseConfig({ ONNX_SERVE_ENGINE_THREAD: 'gpu' }, FACTS)).toThrow(
      /ONNX_SERVE_ENGINE_THREAD: must be one of main, worker/,
    );
  });

  it('bounds the server: requests queued per model version and request bytes in flight', () => {
    const config = parseConfig({ ONNX_SERVE_MAX_QUEUE_SIZE: '32', ONNX_SERVE_MAX_INFLIGHT_MB: '64' }, FACTS);
    expect(config.server.maxQueueSize).toBe(32);
    expect(config.server.maxInflightBytes).toBe(64 * MB);
    // A small instance still has room for one body of the largest size.
    const small = parseConfig({}, { ...FACTS, memoryBytes: 100 * MB });
    expect(small.server.maxInflightBytes).toBe(16 * MB);
    expect(
      parseConfig({ ONNX_SERVE_MAX_BODY_MB: '64' }, { ...FACTS, memoryBytes: 100 * MB }).server,
    ).toMatchObject({ maxInflightBytes: 64 * MB });
    expect(() => parseConfig({ ONNX_SERVE_MAX_INFLIGHT_MB: '8' }, FACTS)).toThrow(
      /ONNX_SERVE_MAX_INFLIGHT_MB: 8 is below ONNX_SERVE_MAX_BODY_MB \(16\)/,
    );
    expect(() => parseConfig({ ONNX_SERVE_MAX_QUEUE_SIZE: '0' }, FACTS)).toThrow(/ONNX_SERVE_MAX_QUEUE_SIZE/);
  });

  it('reports every bad key at once', () => {
    const attempt = () =>
      parseConfig(
        {
          ONNX_SERVE_CACHE_MEMORY_MB: 'lots',
          ONNX_SERVE_MODEL: '../etc',
          ONNX_SERVE_MODEL_REPOSITORY: 's3://B!/x',
          ONNX_SERVE_LOG_LEVEL: 'chatty',
          ONNX_SERVE_PRELOAD: 'ok,bad/name',
        },
        FACTS,
      );
    expect(attempt).toThrow(ConfigError);
    try {
      attempt();
    } catch (error) {
      const problems = (error as ConfigError).problems.join('\n');
      expect(problems).toMatch(/ONNX_SERVE_CACHE_MEMORY_MB: 'lots' must be an integer/);
      expect(problems).toMatch(/ONNX_SERVE_MODEL: '..\/etc' is not a valid model name/);
      expect(problems).toMatch(/'B!' is not a valid bucket name/);
      expect(problems).toMatch(/ONNX_SERVE_LOG_LEVEL/);
      expect(problems).toMatch(/ONNX_SERVE_PRELOAD: 'bad\/name'/);
      expect((error as ConfigError).problems).toHaveLength(5);
    }
  });
  it('reads the batch door settings (ONNX_SERVE_BATCH_*) and reports overlapping prefixes', () => {
    expect(parseConfig({}, FACTS).batch).toEqual({
      input: { bucket: undefined, prefix: 'batch/in' },
      output: { bucket: undefined, prefix: 'batch/out' },
      partRecords: 10_000,
      partBytes: 16 * MB,
      maxBatchBytes: 4 * MB,
      timeMarginMs: 30_000,
      csvIdColumn: 'id',
      joinInput: false,
      gzipOutput: false,
      parquetOutput: 'parquet',
      parquetCompression: 'snappy',
      parquetRowGroupRows: 122_880,
      shardBytes: 256 * MB,
      maxContinuations: 1000,
      stateMachineArn: undefined,
      distributedMinBytes: 2048 * MB,
      modelRechecks: 3,
      modelRecheckMs: 2000,
    });
    const batch = parseConfig(
      {
        ONNX_SERVE_BATCH_INPUT_PREFIX: 's3://my-data/jobs/in/',
        ONNX_SERVE_BATCH_OUTPUT_PREFIX: 'results',
        ONNX_SERVE_BATCH_BUCKET: 'my-results',
        ONNX_SERVE_BATCH_PART_RECORDS: '500',
        ONNX_SERVE_BATCH_JOIN_INPUT: 'on',
        ONNX_SERVE_BATCH_GZIP_OUTPUT: 'true',
        ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'JSONL',
        ONNX_SERVE_BATCH_CSV_ID_COLUMN: 'customer',
        ONNX_SERVE_BATCH_STATE_MACHINE_ARN: 'arn:aws:states:eu-west-1:123456789012:stateMachine:batch-1',
        ONNX_SERVE_BATCH_DISTRIBUTED_MIN_MB: '512',
        ONNX_SERVE_BATCH_MODEL_RECHECKS: '0',
        ONNX_SERVE_BATCH_MODEL_RECHECK_MS: '500',
      },
      FACTS,
    ).batch;
    expect(batch).toMatchObject({
      stateMachineArn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:batch-1',
      distributedMinBytes: 512 * MB,
      input: { bucket: 'my-data', prefix: 'jobs/in' },
      output: { bucket: 'my-results', prefix: 'results' },
      partRecords: 500,
      joinInput: true,
      gzipOutput: true,
      parquetOutput: 'jsonl',
      csvIdColumn: 'customer',
      modelRechecks: 0,
      modelRecheckMs: 500,
    });
    const attempt = () =>
      parseConfig(
        {
          ONNX_SERVE_BATCH_INPUT_PREFIX: 'data',
          ONNX_SERVE_BATCH_OUTPUT_PREFIX: 'data/out',
          ONNX_SERVE_BATCH_JOIN_INPUT: 'maybe',
          ONNX_SERVE_BATCH_PART_RECORDS: '0',
          ONNX_SERVE_BATCH_STATE_MACHINE_ARN: 'arn:aws:lambda:eu-west-1:123456789012:function:batch',
          ONNX_SERVE_BATCH_DISTRIBUTED_MIN_MB: '0',
          ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'arrow',
        },
        FACTS,
      );
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(/BATCH_INPUT_PREFIX and ONNX_SERVE_BATCH_OUTPUT_PREFIX overlap/);
    expect(attempt).toThrow(/ONNX_SERVE_BATCH_JOIN_INPUT: 'maybe' must be on or off/);
    expect(attempt).toThrow(/ONNX_SERVE_BATCH_PART_RECORDS: '0' must be an integer from 1/);
    expect(attempt).toThrow(
      /ONNX_SERVE_BATCH_STATE_MACHINE_ARN: 'arn:aws:lambda:.*' is not a state machine ARN/,
    );
    expect(attempt).toThrow(/ONNX_SERVE_BATCH_DISTRIBUTED_MIN_MB: '0' must be an integer from 1/);
    expect(attempt).toThrow(/ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'arrow' must be parquet or jsonl/);
  });
  it('reads the Parquet output codec and row-group size; zstd only where the runtime compresses it', () => {
    const env = {
      ONNX_SERVE_BATCH_PARQUET_COMPRESSION: 'ZSTD',
      ONNX_SERVE_BATCH_PARQUET_ROW_GROUP_ROWS: '50000',
    };
    expect(parseConfig(env, { ...FACTS, zstdCompression: true }).batch).toMatchObject({
      parquetCompression: 'zstd',
      parquetRowGroupRows: 50_000,
    });
    expect(
      parseConfig({ ONNX_SERVE_BATCH_PARQUET_COMPRESSION: 'none' }, FACTS).batch.parquetCompression,
    ).toBe('none');
    // Node 20: no zstd encoder in zlib. Refused at start-up, not at the first part written.
    expect(() => parseConfig(env, { ...FACTS, zstdCompression: false })).toThrow(
      /ONNX_SERVE_BATCH_PARQUET_COMPRESSION: zstd needs Node 22.15 or later/,
    );
    const attempt = () =>
      parseConfig(
        {
          ONNX_SERVE_BATCH_PARQUET_COMPRESSION: 'lz4',
          ONNX_SERVE_BATCH_PARQUET_ROW_GROUP_ROWS: '0',
          ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'arrow',
        },
        { ...FACTS, zstdCompression: true },
      );
    try {
      attempt();
      throw new Error('no ConfigError');
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      // Every bad key at once.
      expect((error as ConfigError).problems).toEqual([
        expect.stringMatching(/ONNX_SERVE_BATCH_PARQUET_OUTPUT: 'arrow' must be parquet or jsonl/),
        "ONNX_SERVE_BATCH_PARQUET_COMPRESSION: 'lz4' must be snappy, zstd or none",
        expect.stringMatching(
          /ONNX_SERVE_BATCH_PARQUET_ROW_GROUP_ROWS: '0' must be an integer from 1 to 10000000/,
        ),
      ]);
    }
  });
});
