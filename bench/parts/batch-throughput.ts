import { type PartOptions, type PartResult, unavailable } from '../lib/part';

export async function runBatchThroughput(_options: PartOptions): Promise<PartResult> {
  return unavailable('batch', 'not written yet');
}
