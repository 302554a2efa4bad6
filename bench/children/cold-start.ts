/**
 * One cold-start sample in a fresh process (spawned by bench/parts/cold-start.ts):
 *
 *   node dist/bench/children/cold-start.js ours <dist/infer/index.js> <event.json>
 *   node dist/bench/children/cold-start.js naive|floor <dist/bench/children/cold-<kind>.js> <spec.json>
 *
 * `ours` requires the bundled infer handler as Lambda's runtime would and invokes it once with an API
 * Gateway v2 event; a baseline's bundle exports `run(spec)`. Prints one {@link ColdSampleReport} line.
 */
import { readFileSync } from 'node:fs';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import { lambdaContext } from '../../test/support/api-gateway';
import { reportResult } from '../lib/child';
import type { BaselineOutcome, BaselineSpec, ColdSampleReport } from '../lib/cold-protocol';
import { peakRssKiB } from '../lib/peak-rss';

const entryAt = performance.now();

type Handler = (event: unknown, context: Context) => Promise<APIGatewayProxyResult>;
type Baseline = (spec: BaselineSpec) => Promise<BaselineOutcome>;

async function main(): Promise<void> {
  const [kind, bundle, specFile] = process.argv.slice(2);
  if (bundle === undefined || specFile === undefined || !['ours', 'naive', 'floor'].includes(kind ?? '')) {
    throw new Error('usage: cold-start.js ours|naive|floor <bundle> <spec.json>');
  }
  // A dynamic require: the program under test is loaded (and timed) here, as Lambda loads a handler.
  const loaded = require(bundle) as { handler?: Handler; run?: Baseline };
  const loadedAt = performance.now();
  let phases: Readonly<Record<string, number>> = {};
  let output: number[];
  if (kind === 'ours') {
    const event: unknown = JSON.parse(readFileSync(specFile, 'utf8'));
    const result = await (loaded.handler as Handler)(event, lambdaContext(60_000));
    if (result.statusCode !== 200)
      throw new Error(`the handler answered ${result.statusCode}: ${result.body}`);
    const body = JSON.parse(result.body) as { outputs: { data: number[] }[] };
    output = body.outputs[0]?.data ?? [];
  } else {
    const spec = JSON.parse(readFileSync(specFile, 'utf8')) as BaselineSpec;
    ({ phases, output } = await (loaded.run as Baseline)(spec));
  }
  const doneAt = performance.now();
  const report: ColdSampleReport = {
    timeOrigin: performance.timeOrigin,
    entryAt,
    loadedAt,
    doneAt,
    phases,
    peakRssKiB: peakRssKiB(),
    output,
  };
  reportResult(report);
}

main().then(
  // The handler's S3 client keeps sockets open; a Lambda instance would be frozen here.
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
