import { type PartOptions, type PartResult, unavailable } from '../lib/part';

export async function runRequestOverhead(_options: PartOptions): Promise<PartResult> {
  return unavailable('overhead', 'not written yet');
}
