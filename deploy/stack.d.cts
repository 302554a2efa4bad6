/** Types of deploy/stack.cjs, for the tests. */

export type Sizing = {
  readonly memorySize?: number;
  readonly timeout?: number;
  readonly ephemeralStorageSize?: number;
  readonly reservedConcurrency?: number;
  readonly provisionedConcurrency?: number;
  readonly imageUri?: string;
  readonly description?: string;
  /** Extra environment variables (merged: defaults, entry, stage); the pinned model always wins. */
  readonly environment?: Readonly<Record<string, string>>;
};

export type SizingWithStages = Sizing & { readonly stages?: Readonly<Record<string, Sizing>> };

export interface ModelsFile {
  readonly defaults?: Sizing;
  readonly models?: readonly (Sizing & {
    readonly name: string;
    /** The precision variant the model's function serves (ONNX_SERVE_VARIANT), e.g. `int8`. */
    readonly variant?: string;
    readonly stages?: Readonly<Record<string, Sizing & { readonly variant?: string }>>;
  })[];
  readonly defaultModel?: string;
  readonly multiModel?: SizingWithStages & { readonly enabled?: boolean | string };
  readonly batch?: SizingWithStages & { readonly enabled?: boolean | string; readonly suffix?: string };
}

/** `custom.deploy` of serverless.yml. */
export interface StackSettings {
  readonly service: string;
  readonly stage: string;
  readonly auth?: string;
  readonly jwt?: { readonly issuerUrl?: string; readonly audience?: string };
  readonly bucket: string;
  readonly createBucket?: boolean | string;
  readonly modelPrefix: string;
  readonly batchInputPrefix?: string;
  readonly batchOutputPrefix?: string;
  readonly compareDeployedLayer?: boolean | string;
  readonly models: ModelsFile;
}

export interface HttpApiEvent {
  readonly httpApi: {
    readonly method: string;
    readonly path: string;
    readonly authorizer?: { readonly type?: string; readonly name?: string };
  };
}

export interface S3Event {
  readonly s3: {
    readonly bucket: string;
    readonly event: string;
    readonly rules: readonly Record<string, string>[];
    readonly existing: boolean;
  };
}

export interface FunctionDefinition {
  readonly name: string;
  readonly description?: string;
  readonly handler?: string;
  readonly image?: { readonly uri: string };
  readonly layers?: readonly unknown[];
  readonly memorySize: number;
  readonly timeout: number;
  readonly ephemeralStorageSize: number;
  readonly reservedConcurrency?: number;
  readonly provisionedConcurrency?: number;
  readonly role: string;
  readonly recursiveLoop?: 'Allow' | 'Terminate';
  readonly maximumRetryAttempts?: number;
  readonly maximumEventAge?: number;
  readonly destinations?: { readonly onFailure?: { readonly type: string; readonly arn: unknown } };
  /** Strings, and `{"Fn::Sub": ...}` for values CloudFormation resolves (the state machine's ARN). */
  readonly environment: Readonly<Record<string, string | { readonly 'Fn::Sub': string }>>;
  readonly events: readonly (HttpApiEvent | S3Event)[];
}

export interface PolicyStatement {
  readonly Effect: 'Allow';
  readonly Action: readonly string[];
  readonly Resource: unknown;
  readonly Condition?: unknown;
}

export interface CfResource {
  readonly Type: string;
  readonly DeletionPolicy?: string;
  readonly Properties: Record<string, unknown>;
}

export interface Stack {
  readonly functions: Readonly<Record<string, FunctionDefinition>>;
  readonly resources: {
    readonly Resources: Readonly<Record<string, CfResource>>;
    readonly Outputs: Readonly<Record<string, { readonly Description: string; readonly Value: unknown }>>;
  };
  readonly httpApiAuthorizers: Readonly<Record<string, Record<string, unknown>>>;
}

export function buildStack(
  settings: StackSettings,
  options?: { readonly batchSourceExists?: boolean },
): Stack;
export function bucketLogicalId(bucket: string): string;
export const MODEL_ROUTES: readonly (readonly [string, string])[];
export const SERVER_ROUTES: readonly (readonly [string, string])[];
