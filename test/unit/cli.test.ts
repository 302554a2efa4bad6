/**
 * The CLI's pure parts: argument handling and exit codes, ONNX decoding of models built in memory, the
 * support checks, the read-change-write loop of config.json against an in-memory writer.
 */
import { onnx } from 'onnx-proto';
import { main } from '../../tools/cli';
import { addCommand, nextVersion } from '../../tools/commands/add';
import { type CommandContext, formatBytes, table } from '../../tools/commands/command';
import { assertSupported, checkInputs, compareOutputs, MAX_OPSETS } from '../../tools/commands/model-check';
import { NotOnnxError, readOnnxInfo } from '../../tools/commands/onnx-info';
import { buildMlpModel, mlpWeightBytes } from '../../tools/onnx/model-builder';
import { updateModelConfig } from '../../tools/repository/config-update';
import {
  ConfigConflictError,
  type ConfigSnapshot,
  type ModelRepositoryWriter,
} from '../../tools/repository/model-repository-writer';

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const context: CommandContext = { out: (t) => out.push(t), err: (t) => err.push(t), env: {} };
  const code = await main(argv, context);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const T = onnx.TensorProto.DataType;

/** A one-node model with the given opsets, IR version, initialisers and nodes. */
function model(options: {
  opsets?: { domain: string; version: number }[];
  irVersion?: number;
  initializer?: onnx.ITensorProto[];
  node?: onnx.INodeProto[];
}): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: options.irVersion ?? 8,
    opsetImport: options.opsets ?? [{ domain: '', version: 17 }],
    producerName: 'unit',
    producerVersion: '7',
    graph: {
      name: 'g',
      node: options.node ?? [{ opType: 'Relu', input: ['x'], output: ['y'] }],
      initializer: options.initializer ?? [],
      input: [
        {
          name: 'x',
          type: {
            tensorType: { elemType: T.FLOAT, shape: { dim: [{ dimParam: 'n' }, {}, { dimValue: 3 }] } },
          },
        },
      ],
      output: [{ name: 'y', type: { tensorType: { elemType: T.INT64 } } }],
    },
  }).finish();
}

describe('main', () => {
  it('prints the commands and exits with 2 without a command, 0 with --help', async () => {
    const none = await cli();
    expect(none.code).toBe(2);
    expect(none.err).toContain('Commands:');
    for (const name of ['inspect', 'add', 'optimize', 'verify', 'ls'])
      expect(none.err).toContain(`  ${name} `);
    expect((await cli('--help')).code).toBe(0);
  });

  it.each(['inspect', 'add', 'optimize', 'verify', 'ls'])(
    '%s --help prints its usage and exits with 0',
    async (name) => {
      const result = await cli(name, '--help');
      expect(result.code).toBe(0);
      expect(result.out).toMatch(new RegExp(`^Usage: onnx-serve-models ${name} `));
      expect((await cli('help', name)).out).toBe(result.out);
    },
  );

  it.each([
    [['frobnicate'], "unknown command 'frobnicate'"],
    [['inspect'], 'name the ONNX file to inspect'],
    [['inspect', 'a.onnx', 'b.onnx'], 'inspect takes one file, got 2'],
    [['add', 'm.onnx', '--repo', 'r'], '--model is required'],
    [['add', 'm.onnx', '--model', 'm'], '--repo is required'],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--max-batch-size', 'lots'],
      '--max-batch-size must be an integer',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--optimize', '--level', 'fast'],
      '--level must be one of basic, extended, all',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--optimize', '--check-dim', 'h48'],
      '--check-dim must look like name=size',
    ],
    [['ls', '--repo', 'r', '--colour'], "Unknown option '--colour'"],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--optimize', '--check-dims', 'h=48'],
      "Unknown option '--check-dims'",
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--check-dim', 'h=48'],
      '--check-dim applies with --optimize only',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--level', 'all'],
      '--level applies with --optimize only',
    ],
    [
      [
        'add',
        'm.onnx',
        '--model',
        'm',
        '--repo',
        'r',
        '--optimize',
        '--check-dim',
        'h=48',
        '--check-dim',
        'h=64',
      ],
      "--check-dim gives 'h' more than once",
    ],
    [['add', 'm.onnx', '--model', 'a', '--model', 'b', '--repo', 'r'], '--model is given more than once'],
    [['verify', '--repo', 'r', '--json', '--json'], '--json is given more than once'],
    [['ls', '--repo', 'models', '--region', 'eu-west-1'], '--region applies to an s3:// repository only'],
    [['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', '1x512'], 'no input name before ='],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', 'x=1xx2'],
      "dims of at least 1 joined by 'x'",
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', 'x=2x0'],
      "dims of at least 1 joined by 'x'",
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', 'x=2x2:1,2,3'],
      '3 values for a shape of 4 elements',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', 'x=2:random:s'],
      'the seed must be an integer',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup-input', 'x=2', '--warmup-input', 'x=3'],
      "input 'x' is given more than once",
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup', 'off', '--warmup-input', 'x=2'],
      'give either --warmup or --warmup-input',
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup', 'fast'],
      "cannot read 'fast' (no such file)",
    ],
    [
      ['add', 'm.onnx', '--model', 'm', '--repo', 'r', '--warmup', '[{"inputs": {"x": {"shap": [1]}}}]'],
      "'--warmup[0].inputs.x' has an unknown key 'shap'",
    ],
    [['ls', '--repo', 's3://Not_A_Bucket/x'], "'s3://Not_A_Bucket/x' is not a valid S3 repository"],
    [
      ['ls', '--repo', 'models', '--endpoint', 'http://127.0.0.1:9'],
      '--endpoint applies to an s3:// repository only',
    ],
  ])('%j is a usage error (exit 2): %s', async (argv, message) => {
    const result = await cli(...argv);
    expect(result.code).toBe(2);
    expect(result.err).toContain(message);
  });

  it('rejects a model name the repository would refuse with exit 1, before reading the file', async () => {
    const result = await cli('add', '/no/such/file.onnx', '--model', '../x', '--repo', 'r');
    expect(result.code).toBe(1);
    expect(result.err).toContain(
      "model name '../x' is rejected by the repository: use letters, digits, '_', '-' and '.', starting with a letter or digit",
    );
  });

  it('names a file that cannot be read', async () => {
    const result = await cli('inspect', '/no/such/file.onnx');
    expect(result.code).toBe(1);
    expect(result.err).toContain('cannot read /no/such/file.onnx (no such file)');
  });

  it('documents every option it accepts', () => {
    for (const option of Object.keys(addCommand.options)) expect(addCommand.help).toContain(`--${option}`);
  });
});

describe('readOnnxInfo', () => {
  it('reads inputs, outputs, opsets, producer and the bytes of raw_data initialisers', () => {
    const options = { inputSize: 16, hidden: [32], outputSize: 4, seed: 3 };
    const info = readOnnxInfo(buildMlpModel(options), 'mlp.onnx');

    expect(info.inputs).toEqual([{ name: 'x', type: 'float32', shape: ['batch', 16] }]);
    expect(info.outputs).toEqual([{ name: 'y', type: 'float32', shape: ['batch', 4] }]);
    expect(info.opsets).toEqual([{ domain: 'ai.onnx', version: 17 }]);
    expect(info.irVersion).toBe(8);
    expect(info.producerName).toBe('onnx-serverless model-builder');
    expect(info.initializers).toEqual({
      count: 4,
      bytes: mlpWeightBytes(options),
      rawDataBytes: mlpWeightBytes(options),
      typedFieldBytes: 0,
      externalBytes: 0,
      externalCount: 0,
    });
    expect(info.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('keeps unknown dims and ranks, and counts typed fields, Constant nodes and external data', () => {
    const bytes = model({
      initializer: [
        { name: 'f', dims: [2, 3], dataType: T.FLOAT, floatData: [1, 2, 3, 4, 5, 6] },
        // float16 lives widened in int32_data: the tensor is still 2 bytes an element.
        { name: 'h', dims: [4], dataType: T.FLOAT16, int32Data: [1, 2, 3, 4] },
        {
          name: 'e',
          dims: [10],
          dataType: T.FLOAT,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [{ key: 'location', value: 'weights.bin' }],
        },
      ],
      node: [
        { opType: 'Relu', input: ['x'], output: ['y'] },
        {
          opType: 'Constant',
          output: ['c'],
          attribute: [
            {
              name: 'value',
              type: onnx.AttributeProto.AttributeType.TENSOR,
              t: { dims: [3], dataType: T.INT64, int64Data: [1, 2, 3] },
            },
          ],
        },
      ],
    });
    const info = readOnnxInfo(bytes, 'typed.onnx');

    expect(info.inputs[0]?.shape).toEqual(['n', null, 3]);
    expect(info.outputs[0]).toEqual({ name: 'y', type: 'int64', shape: null });
    expect(info.initializers).toMatchObject({
      count: 3,
      rawDataBytes: 0,
      typedFieldBytes: 24 + 8,
      externalBytes: 40,
      externalCount: 1,
    });
    expect(info.constants).toMatchObject({ count: 1, bytes: 24, typedFieldBytes: 24 });
  });

  it('counts the weights, Constant nodes and nodes inside If, Loop and Scan subgraphs', () => {
    const weight = (name: string, n: number): onnx.ITensorProto => ({
      name,
      dims: [n],
      dataType: T.FLOAT,
      rawData: new Uint8Array(4 * n),
    });
    const graph = (name: string, node: onnx.INodeProto[], initializer: onnx.ITensorProto[]) => ({
      name,
      node,
      initializer,
      output: [{ name: 'y' }],
    });
    const ifNode = (then: onnx.IGraphProto, otherwise: onnx.IGraphProto): onnx.INodeProto => ({
      opType: 'If',
      input: ['cond'],
      output: ['y'],
      attribute: [
        { name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: then },
        { name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: otherwise },
      ],
    });
    const constant: onnx.INodeProto = {
      opType: 'Constant',
      output: ['c'],
      attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: weight('k', 8) }],
    };
    // An If whose then-branch holds another If; a Scan-like node with a list of graphs (attribute.graphs).
    const inner = ifNode(graph('inner_then', [constant], [weight('w3', 16)]), graph('inner_else', [], []));
    const bytes = model({
      initializer: [weight('w0', 2)],
      node: [
        ifNode(graph('then', [inner], [weight('w1', 4)]), graph('else', [], [weight('w2', 8)])),
        {
          opType: 'Scan',
          output: ['s'],
          attribute: [
            {
              name: 'bodies',
              type: onnx.AttributeProto.AttributeType.GRAPHS,
              graphs: [graph('body', [], [weight('w4', 1)])],
            },
          ],
        },
      ],
    });
    const info = readOnnxInfo(bytes, 'if.onnx');
    expect(info.nodeCount).toBe(2);
    expect(info.subgraphCount).toBe(5);
    expect(info.subgraphNodeCount).toBe(2);
    expect(info.initializers).toMatchObject({ count: 5, bytes: 4 * (2 + 4 + 8 + 16 + 1) });
    expect(info.constants).toMatchObject({ count: 1, bytes: 32 });
  });

  it.each([
    ['an empty file', new Uint8Array(0), 'the file is empty'],
    ['JSON', Buffer.from('{"name": "not a model"}'), 'it does not decode as an ONNX protobuf'],
    [
      'an ORT-format file',
      Buffer.from('\x10\x00\x00\x00ORTM\x00\x00\x00\x00', 'latin1'),
      'it is an ORT-format model',
    ],
    [
      'a protobuf without a graph',
      onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }] }).finish(),
      'it has no graph',
    ],
  ])('refuses %s as not an ONNX model', (_, bytes, reason) => {
    expect(() => readOnnxInfo(bytes, 'x.bin')).toThrow(NotOnnxError);
    expect(() => readOnnxInfo(bytes, 'x.bin')).toThrow(`x.bin is not an ONNX model: ${reason}`);
  });
});

describe('assertSupported', () => {
  const info = (bytes: Uint8Array) => readOnnxInfo(bytes, 'm.onnx');

  it('takes the highest supported opset and refuses one above it, naming both', () => {
    expect(() =>
      assertSupported(info(model({ opsets: [{ domain: '', version: MAX_OPSETS['ai.onnx'] as number }] }))),
    ).not.toThrow();
    expect(() => assertSupported(info(model({ opsets: [{ domain: '', version: 99 }] })))).toThrow(
      /^m\.onnx uses opset 99 of ai\.onnx, but the bundled onnxruntime 1\.30\.0 supports at most opset 26; export again with opset_version=17 or lower$/,
    );
    expect(() =>
      assertSupported(
        info(
          model({
            opsets: [
              { domain: '', version: 17 },
              { domain: 'ai.onnx.ml', version: 6 },
            ],
          }),
        ),
      ),
    ).toThrow('uses opset 6 of ai.onnx.ml, but the bundled onnxruntime 1.30.0 supports at most opset 5');
  });

  it('refuses an IR version above 13 and weights in external files', () => {
    expect(() => assertSupported(info(model({ irVersion: 14 })))).toThrow('has IR version 14, but');
    const external = model({
      initializer: [
        { name: 'e', dims: [1], dataType: T.FLOAT, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL },
      ],
    });
    expect(() => assertSupported(info(external))).toThrow('keeps 1 tensors in external data files');
  });

  it('finds weights in external files inside an If branch', () => {
    const branch = {
      name: 'then',
      initializer: [
        { name: 'e', dims: [1], dataType: T.FLOAT, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL },
      ],
      output: [{ name: 'y' }],
    };
    const bytes = model({
      node: [
        {
          opType: 'If',
          input: ['cond'],
          output: ['y'],
          attribute: [
            { name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch },
            { name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch },
          ],
        },
      ],
    });
    expect(() => assertSupported(info(bytes))).toThrow('keeps 2 tensors in external data files');
  });
});

describe('nextVersion', () => {
  it('is one above the highest version in numeric order, or 1', () => {
    expect(nextVersion(undefined)).toBe('1');
    expect(nextVersion({ versions: { 2: {}, 10: {}, 9: {} } })).toBe('11');
  });
});

describe('checkInputs', () => {
  const signature = {
    inputs: [
      { name: 'a', datatype: 'FP32' as const, shape: [-1, -1, 4], dims: ['batch', 'seq', 4] },
      { name: 'b', datatype: 'INT64' as const, shape: [-1, -1], dims: ['batch', 'seq'] },
      { name: 'c', datatype: 'BOOL' as const, shape: [3] },
    ],
    outputs: [],
  };

  it('gives each symbolic dim one value (2 for a leading one) and repeatable, non-zero data', () => {
    const first = checkInputs(signature);
    expect(first.a?.shape).toEqual([2, 1, 4]);
    expect(first.b?.shape).toEqual([2, 1]);
    expect(first.c?.shape).toEqual([3]);
    expect(Array.from(first.a?.data as Float32Array).some((v) => v !== 0)).toBe(true);
    expect(Array.from(first.b?.data as BigInt64Array).every((v) => v >= 0n && v < 4n)).toBe(true);
    expect(checkInputs(signature)).toEqual(first);
    expect(checkInputs(signature, 2)).not.toEqual(first);
  });

  it('takes the sizes it is given for named dims', () => {
    const feeds = checkInputs(signature, 1, { seq: 5, batch: 3 });
    expect(feeds.a?.shape).toEqual([3, 5, 4]);
    expect(feeds.b?.shape).toEqual([3, 5]);
  });
});

describe('compareOutputs', () => {
  const y = (values: number[]) => ({
    y: { datatype: 'FP32' as const, shape: [values.length], data: Float32Array.from(values) },
  });

  it('accepts floats within atol + rtol·|expected| and reports the largest difference', () => {
    const result = compareOutputs(y([1, 100]), y([1.00005, 100.05]), { atol: 1e-4, rtol: 1e-3 });
    expect(result.elements).toBe(2);
    expect(result.maxAbsDiff).toBeCloseTo(0.05, 4);
  });

  it('names the first element out of tolerance, a missing output and a shape that differs', () => {
    expect(() => compareOutputs(y([1, 2]), y([1, 2.1]))).toThrow(
      "output 'y'[1] is 2.0999999046325684, expected 2",
    );
    expect(() => compareOutputs(y([1]), {})).toThrow("output 'y' is missing");
    expect(() => compareOutputs(y([1]), y([1, 1]))).toThrow("output 'y' is FP32 [2], expected FP32 [1]");
  });
});

/** An in-memory writer whose config.json another writer changes before the first `conflicts` writes. */
class RacingWriter implements Partial<ModelRepositoryWriter> {
  text: string | undefined;
  etag = 0;
  writes = 0;
  constructor(
    private conflicts: number,
    private readonly rival: (text: string | undefined) => string,
  ) {}
  async readConfig(): Promise<ConfigSnapshot | undefined> {
    return this.text === undefined ? undefined : { text: this.text, etag: String(this.etag) };
  }
  async writeConfig(_: string, text: string, expected: string | undefined): Promise<void> {
    this.writes++;
    if (this.conflicts > 0) {
      this.conflicts--;
      this.text = this.rival(this.text);
      this.etag++;
    }
    if (expected !== (this.text === undefined ? undefined : String(this.etag)))
      throw new ConfigConflictError('conflict');
    this.text = text;
    this.etag++;
  }
}

describe('updateModelConfig', () => {
  const entry = (n: number) => ({ sha256: String(n).repeat(64).slice(0, 64), size: n });
  const addVersion = (v: string) => (current: Record<string, unknown> | undefined) => ({
    name: 'm',
    ...current,
    versions: { ...(current?.versions as object), [v]: entry(Number(v)) },
  });
  const rivalAdds = (v: string) => (text: string | undefined) =>
    JSON.stringify(addVersion(v)(text === undefined ? undefined : JSON.parse(text)));

  it('reads again and re-applies the change after a conflict, so the rival update survives', async () => {
    const writer = new RacingWriter(2, rivalAdds('7'));

    const result = await updateModelConfig(writer as unknown as ModelRepositoryWriter, 'm', addVersion('1'));

    expect(writer.writes).toBe(3);
    expect(Object.keys(result.config.versions)).toEqual(['1', '7']);
    expect(JSON.parse(writer.text ?? '')).toEqual({ name: 'm', versions: { 1: entry(1), 7: entry(7) } });
  });

  it('gives up with the conflict after the allowed attempts', async () => {
    const writer = new RacingWriter(10, rivalAdds('7'));
    await expect(
      updateModelConfig(writer as unknown as ModelRepositoryWriter, 'm', addVersion('1'), { attempts: 3 }),
    ).rejects.toBeInstanceOf(ConfigConflictError);
    expect(writer.writes).toBe(3);
  });
});

describe('formatting', () => {
  it('prints sizes with binary units and lines columns up', () => {
    expect(formatBytes(840)).toBe('840 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(245 * 1024 * 1024)).toBe('245 MiB');
    expect(
      table([
        ['A', 'BB', 'C'],
        ['long', 'x', 'y'],
      ]),
    ).toBe('A     BB  C\nlong  x   y');
  });
});
