/** The model tool's bundle, built once at a time for the test files that spawn the real bin. */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const ROOT = resolve(__dirname, '../..');
const run = promisify(execFile);

/**
 * `node tools/build.mjs cli`, then `fn` with the path package.json names as the bin. Serialised with
 * other test files that build it through an atomic mkdir lock, so nobody runs a half-written bundle.
 */
export async function withBuiltCli<T>(fn: (bin: string) => Promise<T>): Promise<T> {
  const lock = join(ROOT, 'dist', '.cli-build.lock');
  await mkdir(join(ROOT, 'dist'), { recursive: true });
  for (const deadline = Date.now() + 120_000; ; ) {
    try {
      await mkdir(lock);
      break;
    } catch (error) {
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 300_000) await rm(lock, { recursive: true, force: true });
      else if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
  try {
    await run(process.execPath, ['tools/build.mjs', 'cli'], { cwd: ROOT });
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    return await fn(join(ROOT, pkg.bin['onnx-serve-models'] as string));
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
