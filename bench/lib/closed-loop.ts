/**
 * A closed-loop load generator for the overload benchmark: `connections` clients, each on its own
 * keep-alive connection, each sending its next request as soon as the previous one is answered.
 *
 * Unlike a fixed-duration run (autocannon), it counts every request that *started* in a measurement
 * window after a warm-up, and keeps the load on until each of them is answered (or a drain limit passes):
 * a request the server leaves waiting is counted with the time it waited, not dropped at the end of the
 * run, and the first wave of a cold queue is left out. It also tells how many connections got any answer
 * from the window on, which a server that starves some clients fails.
 */
import { Agent, request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ClosedLoopOptions {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
  readonly connections: number;
  /** Load before the window; its requests are not counted (the queue fills, code warms up). */
  readonly warmupMs: number;
  /**
   * How much longer than `warmupMs` the window may wait for every connection's first answer (the first
   * wave through a cold queue); past it the window opens anyway.
   */
  readonly warmupLimitMs: number;
  /** Requests that start within this window are counted. */
  readonly windowMs: number;
  /** After the window, how long its requests may still take; those still open then are unanswered. */
  readonly drainLimitMs: number;
  /** Whether a client refused with 503 waits `Retry-After` seconds before its next request. */
  readonly honourRetryAfter: boolean;
  /** Checks the body of a 200 answer; a failed check counts as an error. */
  readonly check?: (body: Buffer) => boolean;
}

export interface ClosedLoopResult {
  /** When the window opened, from the start of the load. */
  readonly warmupMs: number;
  readonly windowMs: number;
  /** Latency (ms) of each counted request answered 200. */
  readonly okMs: number[];
  /** Latency (ms) of each counted request answered 503 (shed). */
  readonly shedMs: number[];
  /** Counted requests answered otherwise, failed on the connection, or failing `check`. */
  readonly errors: number;
  /** The first few errors, for the log. */
  readonly errorSamples: string[];
  /** Counted requests still unanswered at the drain limit: how long each had waited by then (ms). */
  readonly unansweredMs: number[];
  /** 200 answers that completed within the window, per second. */
  readonly okPerSecond: number;
  /**
   * Connections that got at least one answer (any status) from the start of the window to the end of the
   * run: a connection the server starves has none.
   */
  readonly connectionsAnswered: number;
}

interface Answer {
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly body: Buffer;
}

/** Runs the load; resolves once every counted request is answered or the drain limit passed. */
export async function runClosedLoop(options: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const url = new URL(options.url);
  const headers = { ...options.headers, 'content-length': String(options.body.byteLength) };
  const body = Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength);
  const started = performance.now();
  // The window opens once every connection has had an answer (the first wave of a cold queue is over)
  // and the warm-up has passed, or when the warm-up limit passes whatever the answers.
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  let drainEnd = Number.POSITIVE_INFINITY;

  const okMs: number[] = [];
  const shedMs: number[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  let okInWindow = 0;
  let counting = 0;
  let stopped = false;
  const open = new Map<number, number>(); // connection -> start of its counted request in flight
  const answered = new Set<number>();
  const warmed = new Set<number>();
  const agents = Array.from(
    { length: options.connections },
    () => new Agent({ keepAlive: true, maxSockets: 1 }),
  );

  let finish = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const stop = () => {
    if (stopped) return;
    stopped = true;
    finish();
  };
  const maybeFinish = () => {
    if (performance.now() >= windowEnd && counting === 0) stop();
  };
  const timers: NodeJS.Timeout[] = [];
  const openWindow = () => {
    if (windowStart !== Number.POSITIVE_INFINITY) return;
    windowStart = performance.now();
    windowEnd = windowStart + options.windowMs;
    drainEnd = windowEnd + options.drainLimitMs;
    timers.push(setTimeout(maybeFinish, options.windowMs));
    timers.push(setTimeout(stop, options.windowMs + options.drainLimitMs));
  };
  timers.push(
    setTimeout(() => {
      if (warmed.size === options.connections) openWindow();
    }, options.warmupMs),
  );
  timers.push(setTimeout(openWindow, options.warmupMs + options.warmupLimitMs));

  const send = (agent: Agent): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const retryAfter = res.headers['retry-after'];
            resolve({ status: res.statusCode ?? 0, retryAfter, body: Buffer.concat(chunks) });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  const client = async (id: number): Promise<void> => {
    const agent = agents[id] as Agent;
    while (!stopped) {
      const at = performance.now();
      const counted = at >= windowStart && at < windowEnd;
      if (counted) {
        counting += 1;
        open.set(id, at);
      }
      let answer: Answer | undefined;
      let failure: string | undefined;
      try {
        answer = await send(agent);
      } catch (error) {
        failure = error instanceof Error ? error.message : String(error);
      }
      const end = performance.now();
      if (stopped && open.has(id) && end >= drainEnd) return; // cut at the drain limit: unanswered
      if (answer !== undefined && !warmed.has(id)) {
        warmed.add(id);
        if (warmed.size === options.connections && end >= started + options.warmupMs) openWindow();
      }
      if (answer !== undefined && end >= windowStart) {
        answered.add(id);
        if (answer.status === 200 && end <= windowEnd) okInWindow += 1;
      }
      if (counted) {
        open.delete(id);
        counting -= 1;
        if (answer?.status === 200 && (options.check?.(answer.body) ?? true)) okMs.push(end - at);
        else if (answer?.status === 503) shedMs.push(end - at);
        else {
          errors += 1;
          if (errorSamples.length < 5) {
            errorSamples.push(failure ?? `${answer?.status}: ${answer?.body.toString('utf8').slice(0, 200)}`);
          }
        }
        maybeFinish();
      }
      if (answer?.status === 503 && options.honourRetryAfter && !stopped) {
        await sleep(Number(answer.retryAfter ?? '1') * 1000);
      }
    }
  };

  const clients = Array.from({ length: options.connections }, (_, id) => client(id));
  await finished;
  for (const timer of timers) clearTimeout(timer);
  const cutAt = performance.now();
  const unansweredMs = [...open.values()].map((at) => cutAt - at);
  // Requests still open (uncounted ones after the window, or those past the drain limit) are cut.
  for (const agent of agents) agent.destroy();
  await Promise.allSettled(clients);
  return {
    warmupMs: windowStart - started,
    windowMs: options.windowMs,
    okMs,
    shedMs,
    errors,
    errorSamples,
    unansweredMs,
    okPerSecond: okInWindow / (options.windowMs / 1000),
    connectionsAnswered: answered.size,
  };
}
