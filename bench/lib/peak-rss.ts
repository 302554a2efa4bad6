import { readFileSync } from 'node:fs';

/**
 * The high-water mark of this process's resident memory, KiB. Linux's `VmHWM` belongs to the process
 * image, whereas `getrusage`'s maxrss (`process.resourceUsage().maxRSS`) carries over from before `exec`:
 * the parent's resident size at the fork, hundreds of MB in the bench, would hide a small child's peak.
 */
export function peakRssKiB(): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (match?.[1] !== undefined) return Number(match[1]);
  } catch {
    // Not Linux: fall through.
  }
  return process.resourceUsage().maxRSS;
}
