import { type PartOptions, type PartResult, unavailable } from '../lib/part';

export async function runDynamicBatching(_options: PartOptions): Promise<PartResult> {
  return unavailable('dynamic', 'not written yet');
}
