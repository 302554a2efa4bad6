import type { ServingEvent, Telemetry } from '../ports';

/**
 * One {@link Telemetry} that hands every event to each of `sinks` in order (e.g. logs and Prometheus).
 * A sink that throws does not keep the event from the others, nor fail the request that emitted it.
 *
 * @example
 * const telemetry = combineTelemetry(new PowertoolsTelemetry(logger, undefined), new PrometheusTelemetry(registry));
 */
export function combineTelemetry(...sinks: readonly Telemetry[]): Telemetry {
  return {
    emit(event: ServingEvent): void {
      for (const sink of sinks) {
        try {
          sink.emit(event);
        } catch {
          // Telemetry is best effort: a failing sink must never turn a served request into an error.
        }
      }
    },
  };
}
