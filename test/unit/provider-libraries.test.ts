import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingProviderLibrary } from '../../shared/adapters/provider-libraries';

describe('missingProviderLibrary', () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), 'provider-libraries-'));
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it('names the first library a shared-library provider lacks, and nothing once they are there', async () => {
    expect(missingProviderLibrary('cuda', folder, 'linux')).toBe('libonnxruntime_providers_shared.so');
    await writeFile(join(folder, 'libonnxruntime_providers_shared.so'), '');
    expect(missingProviderLibrary('cuda', folder, 'linux')).toBe('libonnxruntime_providers_cuda.so');
    expect(missingProviderLibrary('tensorrt', folder, 'linux')).toBe('libonnxruntime_providers_tensorrt.so');
    await writeFile(join(folder, 'libonnxruntime_providers_cuda.so'), '');
    expect(missingProviderLibrary('cuda', folder, 'linux')).toBeUndefined();
  });

  it('leaves every other provider, platform, or an unknown folder to onnxruntime', () => {
    expect(missingProviderLibrary('cpu', folder, 'linux')).toBeUndefined();
    expect(missingProviderLibrary('constructor', folder, 'linux')).toBeUndefined();
    expect(missingProviderLibrary('tensorrt', folder, 'win32')).toBeUndefined();
    expect(missingProviderLibrary('tensorrt', undefined, 'linux')).toBeUndefined();
  });
});
