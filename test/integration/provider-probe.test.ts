/**
 * The execution-provider probe with the real onnxruntime-node, in a child process, since onnxruntime
 * writes its log lines straight to the process's stderr where a test in this process cannot see them.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { missingProviderLibrary, ortBinaryFolder } from '../../shared/adapters/provider-libraries';

const ROOT = resolve(__dirname, '../..');
const run = promisify(execFile);
let dir: string;
let script: string;

beforeAll(async () => {
  await mkdir(join(ROOT, 'dist'), { recursive: true });
  // Under dist/, so that onnxruntime-node resolves from the repository's node_modules.
  dir = await mkdtemp(join(ROOT, 'dist', 'provider-probe-test-'));
  script = join(dir, 'probe.js');
  await build({
    stdin: {
      contents: `import { probeProvider } from './shared/adapters/ort-engine';
        probeProvider(process.argv[2]).then((error) => console.log(JSON.stringify(error?.message ?? null)));`,
      resolveDir: ROOT,
      loader: 'ts',
    },
    outfile: script,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['onnxruntime-node'],
    logLevel: 'warning',
  });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('probeProvider', () => {
  it("says cuda is unavailable on a CPU-only install without onnxruntime's error line on stderr", async () => {
    const missing = missingProviderLibrary('cuda', ortBinaryFolder());
    const { stdout, stderr } = await run(process.execPath, [script, 'cuda']);
    const reason = JSON.parse(stdout) as string | null;
    if (missing === undefined) {
      // A GPU install: onnxruntime itself is asked, and it may load.
      expect(reason === null || reason.includes("'cuda' is not available")).toBe(true);
      return;
    }
    expect(reason).toBe(
      `execution provider 'cuda' is not available on this host: onnxruntime-node has no ${missing} here (a CPU-only install; ONNXRUNTIME_NODE_INSTALL=cuda12 installs the GPU providers)`,
    );
    expect(stderr).toBe('');
  });

  it('still asks onnxruntime for a provider it does not know, and reports its refusal', async () => {
    const { stdout } = await run(process.execPath, [script, 'nosuchprovider']);
    expect(JSON.parse(stdout)).toMatch(
      /^execution provider 'nosuchprovider' is not available on this host: /,
    );
  });
});
