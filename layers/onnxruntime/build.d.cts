/** Types of layers/onnxruntime/build.cjs. */

export type LambdaArchitecture = 'x86_64' | 'arm64';

export interface BuiltLayer {
  readonly arch: LambdaArchitecture;
  /** `process.arch` of the binaries: `x64` or `arm64`. */
  readonly nodeArch: string;
  /** The folder that becomes `/opt`: it holds `nodejs/node_modules`. */
  readonly dir: string;
  /** Paths relative to `dir`. */
  readonly files: readonly string[];
  readonly bytes: number;
  readonly onnxruntimeVersion: string;
}

export function buildLayer(options?: {
  readonly arch?: LambdaArchitecture;
  readonly outDir?: string;
  readonly nodeModules?: string;
}): Promise<BuiltLayer>;

export const NODE_ARCH: Readonly<Record<LambdaArchitecture, string>>;
export const DEFAULT_OUT: string;
