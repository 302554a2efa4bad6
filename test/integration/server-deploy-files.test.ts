/**
 * Static checks of the container files, which nothing here can build (no Docker engine): the Cloud Run
 * service's settings parse as this server's configuration and probe routes it serves, and every path a
 * Dockerfile copies from the build context survives its .dockerignore.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseConfig } from '../../shared/core/config';
import { createRuntime } from '../../shared/runtime/runtime';
import { FakeStore } from '../support/fakes';

const ROOT = resolve(__dirname, '../..');
const read = (path: string) => readFile(join(ROOT, path), 'utf8');

describe('containers/cloudrun/service.yaml', () => {
  it('sets environment keys that parse as the server configuration', async () => {
    const yaml = await read('containers/cloudrun/service.yaml');
    const env: Record<string, string> = {};
    for (const [, name, value] of yaml.matchAll(/- name: (ONNX_SERVE_\w+)\n\s+value: '?([^'\n]*)'?/g)) {
      env[name as string] = (value as string).replace(/\$\{PRELOAD\}/, 'linear');
    }
    expect(Object.keys(env)).toEqual(
      expect.arrayContaining(['ONNX_SERVE_PRELOAD', 'ONNX_SERVE_SHUTDOWN_GRACE_MS']),
    );
    const config = parseConfig(
      { ...env, PORT: '8080' },
      { memoryBytes: 16 * 1024 ** 3, availableParallelism: 4, tmpDir: '/tmp' },
    );
    expect(config.preload).toEqual(['linear']);
    expect(config.dynamicBatching).toBe(true);
    // Cloud Run kills an instance 10 s after SIGTERM: the drain must fit.
    expect(config.server.shutdownGraceMs).toBeLessThan(10_000);
  });

  it('probes routes the server answers, on the port it listens on', async () => {
    const yaml = await read('containers/cloudrun/service.yaml');
    expect(yaml).toMatch(/startupProbe:\n\s+httpGet:\n\s+path: \/v2\/health\/ready\n\s+port: 8080/);
    expect(yaml).toMatch(/livenessProbe:\n\s+httpGet:\n\s+path: \/v2\/health\/live\n\s+port: 8080/);
    expect(yaml).toMatch(/containerPort: 8080/);
    expect(yaml).toMatch(/run\.googleapis\.com\/accelerator: nvidia-l4/);
    const config = parseConfig(
      { ONNX_SERVE_LOG_LEVEL: 'SILENT' },
      { memoryBytes: 2 ** 30, availableParallelism: 1, tmpDir: '/tmp' },
    );
    const runtime = createRuntime(config, { store: new FakeStore(), isReady: () => false });
    for (const path of ['/v2/health/ready', '/v2/health/live']) {
      const response = await runtime.app({ method: 'GET', path, headers: {}, body: new Uint8Array(0) });
      expect([200, 503]).toContain(response.status);
    }
  });
});

describe.each(['cpu', 'gpu'])('containers/%s/Dockerfile', (variant) => {
  it('copies only paths its .dockerignore lets into the build context', async () => {
    const dockerfile = await read(`containers/${variant}/Dockerfile`);
    const kept = (await read(`containers/${variant}/Dockerfile.dockerignore`))
      .split('\n')
      .filter((line) => line.startsWith('!'))
      .map((line) => line.slice(1).replace(/\/$/, ''));
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(?:--\S+ )*(.+) \S+$/gm)].flatMap(([, sources]) =>
      (sources as string).split(' ').map((s) => s.replace(/\/$/, '')),
    );
    expect(copied).toEqual(
      expect.arrayContaining(['package-lock.json', 'shared', 'functions', 'tools/build.mjs']),
    );
    for (const source of copied) expect(kept).toContain(source);
  });

  it('runs the bundle that `node tools/build.mjs server` writes, with onnxruntime-node installed beside it', async () => {
    const dockerfile = await read(`containers/${variant}/Dockerfile`);
    expect(await read('tools/build.mjs')).toMatch(/server: 'functions\/server\/main\.ts'/);
    expect(dockerfile).toMatch(/RUN node tools\/build\.mjs server/);
    expect(dockerfile).toMatch(/CMD \["node", "dist\/server\/index\.js"\]/);
    expect(dockerfile).toContain(`ONNXRUNTIME_NODE_INSTALL=${variant === 'gpu' ? 'cuda12' : 'skip'}`);
  });
});
