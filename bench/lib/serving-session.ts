import { availableParallelism } from 'node:os';
import type * as ort from 'onnxruntime-node';
import { ortSessionOptions } from '../../shared/adapters/ort-engine';
import { DEFAULT_SESSION_CONFIG } from '../../shared/core/model-config';

/**
 * The session options the engine uses for an ORT file served in place with the model defaults of
 * config.json, so a raw baseline session runs exactly like the served one.
 */
export function servedOrtSessionOptions(): ort.InferenceSession.SessionOptions {
  const d = DEFAULT_SESSION_CONFIG;
  return ortSessionOptions(
    'ort',
    {
      graphOptimizationLevel: d.graphOptimizationLevel,
      intraOpThreads: d.intraOpThreads,
      interOpThreads: d.interOpThreads,
      executionProviders: d.executionProviders,
      useModelBytesDirectly: d.useModelBytesDirectly,
      disablePrepacking: d.disablePrepacking ?? d.useModelBytesDirectly,
    },
    availableParallelism(),
  );
}
