/**
 * The batch door end to end: inputs uploaded to s3rver on loopback, the handler driven by s3rver's own
 * event records (keys URL-encoded as AWS does), the real onnxruntime-node, outputs read back from S3.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { createInferHandler } from '../../functions/infer/handler';
import type { JobOutcome } from '../../shared/core/batch/batch-job';
import type { Manifest } from '../../shared/core/batch/job-state';
import { apiEvent } from '../support/api-gateway';
import { expectClose } from '../support/golden';
import { publishModel } from '../support/model-repository';
import { type S3Server, startS3Server } from '../support/s3-server';
import {
  type BatchHarness,
  batchHarness,
  budgetContext,
  buildLookupModel,
  dataset,
  EventLog,
  getBytes,
  getText,
  INPUT_PREFIX,
  jsonLines,
  linear,
  listKeys,
  MALFORMED,
  MODEL_PREFIX,
  OUTPUT_PREFIX,
  publishLinear,
  upload,
} from './batch-harness';

let s3: S3Server;
let events: EventLog;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'data' });
  events = new EventLog(s3);
  await publishLinear(s3);
  await publishModel(
    s3.putObject,
    s3.bucket,
    MODEL_PREFIX,
    'lookup',
    { '1': { onnx: buildLookupModel() } },
    {
      maxBatchSize: 16,
    },
  );
});

afterAll(async () => {
  await s3.close();
});

const f32 = (x: readonly number[]) => x.map((v) => Math.fround(v));

/** The `y` output of a result line. */
function yOf(line: Record<string, unknown> | undefined): number[] {
  const y = (line?.outputs as { y?: number[] } | undefined)?.y;
  if (y === undefined) throw new Error(`no y output in ${JSON.stringify(line)}`);
  return y;
}

/** Uploads `body` under `key` and invokes the handler with s3rver's event for it. */
async function put(
  h: BatchHarness,
  key: string,
  body: string | Uint8Array,
  context = budgetContext(() => 900_000),
) {
  await upload(s3, key, body);
  return h.invoke(events.lastFor(key), context);
}

function outcomeOf(result: unknown): JobOutcome {
  const outcomes = (result as { outcomes: JobOutcome[] }).outcomes;
  expect(outcomes).toHaveLength(1);
  return outcomes[0] as JobOutcome;
}

async function outputs(name: string, model = 'linear') {
  const base = `${OUTPUT_PREFIX}/${model}/${name}`;
  return {
    out: await getText(s3, `${base}.out.jsonl`),
    errors: await getText(s3, `${base}.errors.jsonl`),
    manifest: JSON.parse((await getText(s3, `${base}.manifest.json`)) ?? 'null') as Manifest | null,
  };
}

describe('batch handler on S3 events', () => {
  describe('10,000 records with 1% malformed lines', () => {
    const data = dataset(10_000);
    let h: BatchHarness;
    let whole: Awaited<ReturnType<typeof outputs>>;

    beforeAll(async () => {
      h = await batchHarness(s3, { ONNX_SERVE_BATCH_PART_RECORDS: '1000' });
      const started = performance.now();
      const outcome = outcomeOf(await put(h, `${INPUT_PREFIX}/linear/ten-k.jsonl`, data.text));
      const seconds = (performance.now() - started) / 1000;
      if (process.env.BATCH_REPORT !== undefined) {
        process.stdout.write(
          `batch: 10,000 records in ${seconds.toFixed(2)} s = ${(10_000 / seconds).toFixed(0)} records/s\n`,
        );
      }
      expect(outcome.status).toBe('succeeded');
      whole = await outputs('ten-k');
    });

    it('scores every good record exactly once, as the model computes it', () => {
      const lines = jsonLines(whole.out);
      expect(lines).toHaveLength(data.good.size);
      const byId = new Map(lines.map((l) => [JSON.stringify(l.id), l]));
      expect(byId.size).toBe(data.good.size);
      for (const { id, x } of data.good.values()) {
        const line = byId.get(JSON.stringify(id));
        expect(line).toBeDefined();
        expectClose(yOf(line), linear(f32(x)), { atol: 1e-5, rtol: 1e-5 });
      }
      // In input order.
      const order = [...data.good.values()].map((g) => JSON.stringify(g.id));
      expect(lines.map((l) => JSON.stringify(l.id))).toEqual(order);
    });

    it('gives each record what the infer door answers for it', async () => {
      const door = createInferHandler(h.batch.runtime);
      const lines = new Map(jsonLines(whole.out).map((l) => [JSON.stringify(l.id), l]));
      const sample = [...data.good.values()].filter((_, i) => i % 397 === 0);
      expect(sample.length).toBeGreaterThan(20);
      for (const { id, x } of sample) {
        const event = apiEvent('http-v2', 'POST', '/v2/models/linear/predict', {
          body: JSON.stringify({ x: [x] }),
        });
        const result = (await door(
          event,
          budgetContext(() => 30_000),
        )) as APIGatewayProxyResult;
        expect(result.statusCode).toBe(200);
        const answer = JSON.parse(result.body) as { outputs: { y: number[][] } };
        const batch = yOf(lines.get(JSON.stringify(id)));
        // Same model, same float32 inputs; a batch of 64 and a batch of 1 may round the last bit apart.
        expectClose(batch, answer.outputs.y[0] as number[], { atol: 1e-6, rtol: 1e-6 });
      }
    });

    it('files every malformed line with its line number, id and reason', () => {
      const errors = jsonLines(whole.errors);
      expect(errors.map((e) => e.line)).toEqual([...data.bad]);
      for (const e of errors) {
        expect(e.id).toBe(e.line);
        expect(e.error).toEqual({
          code: expect.stringMatching(/^invalid_input$/),
          message: expect.any(String),
        });
      }
      for (const e of errors) {
        const [, reason] = MALFORMED[(e.line as number) % MALFORMED.length] as [string, RegExp];
        expect((e.error as { message: string }).message).toMatch(reason);
      }
    });

    it('commits a manifest with the counts, the model, the input ETag and the parts', async () => {
      expect(whole.manifest).toMatchObject({
        status: 'succeeded',
        input: { bucket: 'data', key: `${INPUT_PREFIX}/linear/ten-k.jsonl`, format: 'jsonl', gzip: false },
        model: { name: 'linear', version: '1', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
        counts: { read: 10_000, scored: 9_900, failed: 100 },
        outputs: {
          out: { key: `${OUTPUT_PREFIX}/linear/ten-k.out.jsonl` },
          errors: { key: `${OUTPUT_PREFIX}/linear/ten-k.errors.jsonl` },
        },
        timings: { invocations: 1 },
      });
      expect(whole.manifest?.parts).toHaveLength(10);
      expect(whole.manifest?.input.etag).toMatch(/^[0-9a-f]{32}$/);
      expect(await listKeys(s3, `${OUTPUT_PREFIX}/linear/ten-k.`)).toEqual([
        `${OUTPUT_PREFIX}/linear/ten-k.errors.jsonl`,
        `${OUTPUT_PREFIX}/linear/ten-k.manifest.json`,
        `${OUTPUT_PREFIX}/linear/ten-k.out.jsonl`,
      ]);
    });

    it('resumes a run stopped half way to an output identical to the uninterrupted one', async () => {
      // The deadline comes near once five parts are checkpointed (counted in the S3 requests, not in time).
      const checkpoints = () =>
        s3.requests.entries.filter((e) => e.command === 'PutObject' && e.key?.endsWith('checkpoint.json'))
          .length;
      s3.requests.clear();
      const first = await put(
        h,
        `${INPUT_PREFIX}/linear/halfway.jsonl`,
        data.text,
        budgetContext(() => (checkpoints() < 5 ? 900_000 : 0)),
      );
      expect(outcomeOf(first)).toEqual({ status: 'continued', hop: 1, parts: 5 });
      expect(h.queue).toHaveLength(1);
      const rest = await h.drain();
      expect(rest.map((r) => (r as JobOutcome).status)).toEqual(['succeeded']);
      const resumed = await outputs('halfway');
      expect(resumed.out).toBe(whole.out);
      expect(resumed.errors).toBe(whole.errors);
      expect(resumed.manifest?.counts).toEqual(whole.manifest?.counts);
      expect(resumed.manifest?.timings.invocations).toBe(2);
      expect(resumed.manifest?.parts.map((p) => [p.start, p.end])).toEqual(
        whole.manifest?.parts.map((p) => [p.start, p.end]),
      );
    });

    it('changes nothing when the event is delivered again', async () => {
      const key = `${INPUT_PREFIX}/linear/ten-k.jsonl`;
      const before = await listKeys(s3, OUTPUT_PREFIX);
      s3.requests.clear();
      const outcome = outcomeOf(await h.invoke(events.lastFor(key)));
      expect(outcome).toEqual({
        status: 'skipped',
        reason: `already committed (succeeded): ${OUTPUT_PREFIX}/linear/ten-k.manifest.json`,
      });
      const writes = s3.requests.entries.filter((e) => !['HeadObject', 'GetObject'].includes(e.command));
      expect(writes).toEqual([]);
      expect(await listKeys(s3, OUTPUT_PREFIX)).toEqual(before);
      expect(await outputs('ten-k')).toEqual(whole);
    });
  });

  it('continues in fresh invocations with a tiny time budget, one part each, to the same output', async () => {
    const data = dataset(2_000, 2);
    const env = { ONNX_SERVE_BATCH_PART_RECORDS: '250', ONNX_SERVE_BATCH_TIME_MARGIN_MS: '60000' };
    const reference = await batchHarness(s3, env);
    expect(outcomeOf(await put(reference, `${INPUT_PREFIX}/linear/tiny-ref.jsonl`, data.text)).status).toBe(
      'succeeded',
    );
    const h = await batchHarness(s3, env);
    // 60 s of margin and 30 s left: every invocation stops after the one part it must do.
    const short = () => budgetContext(() => 30_000);
    outcomeOf(await put(h, `${INPUT_PREFIX}/linear/tiny.jsonl`, data.text, short()));
    const results = await h.drain(short);
    expect(h.scheduled.map((p) => p.onnxServerlessBatch.hop)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect((results.at(-1) as JobOutcome).status).toBe('succeeded');
    const [ref, got] = [await outputs('tiny-ref'), await outputs('tiny')];
    expect(got.out).toBe(ref.out);
    expect(got.errors).toBe(ref.errors);
    expect(got.manifest?.timings.invocations).toBe(9);
  });

  it('fails with a clear manifest status, writing no output file, when the model does not exist', async () => {
    const h = await batchHarness(s3);
    const outcome = outcomeOf(await put(h, `${INPUT_PREFIX}/nosuch@2/day.jsonl`, '[1, 2]\n'));
    expect(outcome).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
    expect(await listKeys(s3, `${OUTPUT_PREFIX}/nosuch/`)).toEqual([
      `${OUTPUT_PREFIX}/nosuch/day.manifest.json`,
    ]);
    const { manifest } = await outputs('day', 'nosuch');
    expect(manifest).toMatchObject({
      status: 'failed',
      model: { name: 'nosuch', version: '2' },
      counts: { read: 0, scored: 0, failed: 0 },
      error: { code: 'model_not_found', message: "model 'nosuch' not found" },
    });
  });

  it('scores CSV with a header: numeric columns form the vector, the id column names the record', async () => {
    const h = await batchHarness(s3, { ONNX_SERVE_BATCH_CSV_ID_COLUMN: 'customer' });
    const header = ['customer', ...Array.from({ length: 10 }, (_, i) => `f${i}`)].join(',');
    const rows = [
      `c-1,${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].join(',')}`,
      `"c,2",${Array(10).fill('0.5').join(',')}`,
      `c-3,${[1, 2, 3].join(',')}`,
      `,${Array(10).fill('-1').join(',')}`,
      `c-5,${Array(9).fill('1').join(',')},oops`,
    ];
    const outcome = outcomeOf(
      await put(h, `${INPUT_PREFIX}/linear/customers.csv`, `${header}\r\n${rows.join('\r\n')}\r\n`),
    );
    expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 5, scored: 3, failed: 2 } });
    const { out, errors } = await outputs('customers');
    const lines = jsonLines(out);
    expect(lines.map((l) => l.id)).toEqual(['c-1', 'c,2', 5]);
    expectClose(yOf(lines[0]), linear([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    expectClose(yOf(lines[2]), linear(Array(10).fill(-1)));
    expect(jsonLines(errors).map((e) => [e.line, e.id])).toEqual([
      [4, 'c-3'],
      [6, 'c-5'],
    ]);
    expect(jsonLines(errors)[1]?.error).toMatchObject({ message: "column 'f9': 'oops' is not a number" });
  });

  it('reads gzip inputs by suffix and by Content-Encoding, and writes gzip output that resumes cleanly', async () => {
    const data = dataset(1_500, 3);
    const plain = await batchHarness(s3, { ONNX_SERVE_BATCH_PART_RECORDS: '400' });
    outcomeOf(await put(plain, `${INPUT_PREFIX}/linear/plain.jsonl`, data.text));
    const expected = await outputs('plain');

    const h = await batchHarness(s3, {
      ONNX_SERVE_BATCH_PART_RECORDS: '400',
      ONNX_SERVE_BATCH_GZIP_OUTPUT: 'on',
    });
    // Time runs out early in every invocation: the job goes on in several.
    const once = () => {
      let checks = 0;
      return budgetContext(() => (++checks <= 1 ? 900_000 : 0));
    };
    const bySuffix = outcomeOf(
      await put(h, `${INPUT_PREFIX}/linear/zipped.jsonl.gz`, gzipSync(data.text), once()),
    );
    expect(bySuffix.status).toBe('continued');
    await h.drain(once);
    await upload(s3, `${INPUT_PREFIX}/linear/encoded.jsonl`, gzipSync(data.text), 'gzip');
    expect(outcomeOf(await h.invoke(events.lastFor(`${INPUT_PREFIX}/linear/encoded.jsonl`))).status).toBe(
      'succeeded',
    );
    for (const name of ['zipped', 'encoded']) {
      const base = `${OUTPUT_PREFIX}/linear/${name}`;
      const gz = (await getBytes(s3, `${base}.out.jsonl.gz`)) as Uint8Array;
      // Each part is a gzip member: the whole is one valid gzip stream.
      expect(gunzipSync(gz).toString('utf8')).toBe(expected.out);
      expect(await getText(s3, `${base}.errors.jsonl`)).toBe(expected.errors);
      const manifest = JSON.parse((await getText(s3, `${base}.manifest.json`)) ?? '{}') as Manifest;
      expect(manifest).toMatchObject({ input: { gzip: true }, counts: expected.manifest?.counts });
    }
  });

  it('finds keys with spaces, plus signs and non-ASCII characters through their encoded event keys', async () => {
    const h = await batchHarness(s3);
    const key = `${INPUT_PREFIX}/linear/été 2024/a+b c%.jsonl`;
    await upload(s3, key, '[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n');
    const event = events.lastFor(key);
    expect(event.Records[0]?.s3.object.key).toBe(
      `${INPUT_PREFIX}/linear/%C3%A9t%C3%A9+2024/a%2Bb+c%25.jsonl`,
    );
    expect(outcomeOf(await h.invoke(event)).status).toBe('succeeded');
    expect(jsonLines(await getText(s3, `${OUTPUT_PREFIX}/linear/été 2024/a+b c%.out.jsonl`))).toHaveLength(1);
  });

  it("ignores events outside the input prefix (its own outputs') and deletions, writing nothing", async () => {
    const h = await batchHarness(s3);
    const from = events.events.length;
    outcomeOf(await put(h, `${INPUT_PREFIX}/linear/loop.jsonl`, '[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n'));
    const own = events.events.slice(from + 1);
    expect(own.length).toBeGreaterThan(0);
    s3.requests.clear();
    for (const event of own) {
      const record = event.Records[0];
      const result = (await h.invoke({
        Records: event.Records.map((r) => ({
          ...r,
          s3: { ...r.s3, object: { ...r.s3.object, key: encodeURIComponent(r.s3.object.key) } },
        })),
      })) as { outcomes: readonly JobOutcome[] };
      if (record?.eventName.startsWith('ObjectCreated:') === true) {
        expect(result.outcomes).toEqual([
          { status: 'ignored', reason: `the key is outside the input prefix '${INPUT_PREFIX}/'` },
        ]);
      } else {
        expect(result.outcomes).toEqual([]);
      }
    }
    expect(s3.requests.entries).toEqual([]);
  });

  it('retries a micro-batch the engine refuses record by record: only the bad record fails', async () => {
    const h = await batchHarness(s3);
    const lines = ['[0]', '[3]', '[7]', '[1]', '{"id": "x", "idx": [2]}'];
    const outcome = outcomeOf(await put(h, `${INPUT_PREFIX}/lookup/picks.jsonl`, lines.join('\n')));
    expect(outcome).toMatchObject({ status: 'succeeded', counts: { read: 5, scored: 4, failed: 1 } });
    const { out, errors } = await outputs('picks', 'lookup');
    expect(jsonLines(out)).toEqual([
      { id: 1, outputs: { y: [[0, 0.5]] } },
      { id: 2, outputs: { y: [[3, 3.5]] } },
      { id: 4, outputs: { y: [[1, 1.5]] } },
      { id: 'x', outputs: { y: [[2, 2.5]] } },
    ]);
    expect(jsonLines(errors)).toEqual([
      // The engine adapter reports a failed run as the input's fault (400), as the infer door answers it.
      {
        line: 3,
        id: 3,
        error: {
          code: 'invalid_input',
          message: expect.stringMatching(/indices element out of data bounds/),
        },
      },
    ]);
  });

  it('joins the input record to its outputs when asked', async () => {
    const h = await batchHarness(s3, { ONNX_SERVE_BATCH_JOIN_INPUT: 'on' });
    outcomeOf(
      await put(
        h,
        `${INPUT_PREFIX}/linear/joined.jsonl`,
        '{"id": "j", "x": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}\n',
      ),
    );
    const [line] = jsonLines(await getText(s3, `${OUTPUT_PREFIX}/linear/joined.out.jsonl`));
    expect(line).toMatchObject({ id: 'j', input: { id: 'j', x: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] } });
    expectClose(yOf(line), linear(Array(10).fill(1)));
  });
});
