/** Types of tools/lambda-runtime.cjs, for the tests. */

export interface Node22 {
  /** The unpacked package: `bin/node`, `include/node`. */
  readonly dir: string;
  readonly bin: string;
  readonly version: string;
}

export interface RuntimeInterfaceClient {
  /** The `aws-lambda-ric` package folder. */
  readonly dir: string;
  /** Its entry, `index.mjs`, which Lambda's bootstrap runs. */
  readonly entry: string;
}

export const NODE22: { readonly package: string; readonly version: string; readonly integrity: string };
export function ensureNode22(): Node22;
export function ensureRic(node22: Node22): RuntimeInterfaceClient;
export function ensureLambdaRuntime(): { readonly node22: Node22; readonly ric: RuntimeInterfaceClient };
