import { type PartOptions, type PartResult, unavailable } from '../lib/part';

export async function runSize(_options: PartOptions): Promise<PartResult> {
  return unavailable('size', 'not written yet');
}
