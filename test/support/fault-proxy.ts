/**
 * A fault-injecting reverse proxy for tests: it sits on loopback between an S3 client and s3rver and breaks
 * chosen responses the way a bad network or a misbehaving object store does: error statuses, connections
 * reset or closed mid-body, bodies truncated with a Content-Length that agrees (a lie no transport can
 * see), headers that lie (ETag, Content-Length on HEAD), another object's bytes, stalls.
 *
 * Requests are forwarded unchanged (the Host header included, so SigV4 signatures still verify); responses
 * are buffered whole, then written back as the matching rule says.
 *
 * @example
 * const proxy = await startFaultProxy(s3.endpoint);
 * proxy.inject({ method: 'GET', key: 'linear/1/model.onnx', ranged: true, fault: { kind: 'reset', after: 0.5 } });
 * const store = new S3ModelStore({ client: proxy.client, bucket: 'models' });
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../shared/adapters/s3-client';
import { countRequests, type RequestLog, S3RVER_CREDENTIALS } from './s3-server';

/** Where in a body a fault strikes: a byte count, or a fraction of the body (`{ fraction: 0.5 }`). */
export type Cut = number | { readonly fraction: number };

export type Fault =
  /** Answer this status with an S3 XML error body, without forwarding the request. */
  | { readonly kind: 'status'; readonly status: number; readonly code?: string }
  /** Send the headers and the body up to `after`, then reset the connection (TCP RST). */
  | { readonly kind: 'reset'; readonly after: Cut }
  /** Send the headers (Content-Length unchanged) and the body up to `after`, then close cleanly (FIN). */
  | { readonly kind: 'close'; readonly after: Cut }
  /** Cut the body at `to` and make Content-Length agree: the transport sees a complete, shorter response. */
  | { readonly kind: 'truncate'; readonly to: Cut }
  /** Replace the body with `bytes` (Content-Length follows; every other header, ETag included, stays). */
  | { readonly kind: 'body'; readonly bytes: Uint8Array }
  /** Set response headers (lower-case names; `undefined` removes one), e.g. a wrong ETag or Content-Length. */
  | { readonly kind: 'headers'; readonly set: Readonly<Record<string, string | undefined>> }
  /** Hold the response for `ms`: before the headers, or after `after` bytes of the body. */
  | { readonly kind: 'stall'; readonly ms: number; readonly after?: Cut };

/** Which requests a fault hits. Every field given must match. */
export interface FaultRule {
  /** HTTP method, e.g. `GET` or `HEAD`. */
  readonly method?: string;
  /** Object key (path-style, after the bucket), exactly or by pattern. */
  readonly key?: string | RegExp;
  /** Only requests with a `Range` header (`true`) or only those without (`false`). */
  readonly ranged?: boolean;
  /** Only requests whose `Range` header is this (e.g. `bytes=524288-786431`: one part of a download). */
  readonly range?: string;
  /** Matching requests let through untouched before the fault starts. Default 0. */
  readonly skip?: number;
  /** Matching requests the fault hits, after `skip`. Default 1; `Infinity` for every one. */
  readonly times?: number;
  readonly fault: Fault;
}

/** A rule in force; `hits` counts the requests it broke. */
export interface InjectedFault {
  readonly hits: number;
  /** Stops the rule from matching further requests. */
  remove(): void;
}

/** One request the proxy saw, with the status it answered and the fault it applied, if any. */
export interface ProxiedRequest {
  readonly method: string;
  readonly key: string | undefined;
  readonly range: string | undefined;
  readonly status: number;
  readonly fault: Fault['kind'] | undefined;
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: point S3 clients here instead of at s3rver. */
  readonly endpoint: string;
  /** An S3 client through the proxy with s3rver's credentials; its requests (retries too) are counted. */
  readonly client: S3Client;
  readonly requests: RequestLog;
  /** Every request the proxy forwarded or answered, in arrival order. */
  readonly log: readonly ProxiedRequest[];
  /** Adds a rule; rules are tried in the order they were added, and the first that matches applies. */
  inject(rule: FaultRule): InjectedFault;
  /** Removes every rule. */
  clear(): void;
  close(): Promise<void>;
}

interface ActiveRule {
  readonly rule: FaultRule;
  seen: number;
  hits: number;
  removed: boolean;
}

/** Starts the proxy on a free loopback port, forwarding to `upstream` (s3rver's endpoint). */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const rules: ActiveRule[] = [];
  const log: ProxiedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });

  const pick = (method: string, key: string | undefined, range: string | undefined): Fault | undefined => {
    for (const active of rules) {
      const { rule } = active;
      if (active.removed) continue;
      if (rule.method !== undefined && rule.method !== method) continue;
      if (rule.ranged !== undefined && rule.ranged !== (range !== undefined)) continue;
      if (rule.range !== undefined && rule.range !== range) continue;
      if (rule.key !== undefined) {
        if (key === undefined) continue;
        if (typeof rule.key === 'string' ? rule.key !== key : !rule.key.test(key)) continue;
      }
      active.seen += 1;
      if (active.seen <= (rule.skip ?? 0)) continue;
      if (active.hits >= (rule.times ?? 1)) continue;
      active.hits += 1;
      return rule.fault;
    }
    return undefined;
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const key = keyOf(req.url ?? '/');
      const range = req.headers.range;
      const fault = pick(method, key, range);
      const record = (status: number) => log.push({ method, key, range, status, fault: fault?.kind });
      if (fault?.kind === 'status') {
        record(fault.status);
        const code = fault.code ?? (fault.status === 503 ? 'SlowDown' : 'InternalError');
        const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected fault</Message></Error>`;
        res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': body.length });
        res.end(method === 'HEAD' ? undefined : body);
        return;
      }
      const forward = httpRequest(
        {
          host: target.hostname,
          port: target.port,
          method,
          path: req.url,
          headers: req.headers,
        },
        (upstreamRes) => {
          const parts: Buffer[] = [];
          upstreamRes.on('data', (chunk: Buffer) => parts.push(chunk));
          upstreamRes.on('end', () => {
            const status = upstreamRes.statusCode ?? 502;
            record(status);
            void respond(res, status, upstreamRes.headers, Buffer.concat(parts), fault, sleep);
          });
        },
      );
      forward.on('error', () => res.destroy());
      forward.end(Buffer.concat(chunks));
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = createS3Client({ endpoint, credentials: S3RVER_CREDENTIALS });
  const requests = countRequests(client);

  return {
    endpoint,
    client,
    requests,
    log,
    inject(rule) {
      const active: ActiveRule = { rule, seen: 0, hits: 0, removed: false };
      rules.push(active);
      return {
        get hits() {
          return active.hits;
        },
        remove: () => {
          active.removed = true;
        },
      };
    },
    clear() {
      for (const active of rules) active.removed = true;
      rules.length = 0;
    },
    async close() {
      client.destroy();
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function respond(
  res: import('node:http').ServerResponse,
  status: number,
  upstreamHeaders: IncomingHttpHeaders,
  body: Buffer,
  fault: Fault | undefined,
  sleep: (ms: number) => Promise<void>,
): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(upstreamHeaders)) {
    if (value !== undefined && name !== 'transfer-encoding' && name !== 'connection') headers[name] = value;
  }
  // A HEAD answer carries the object's length with no body: keep it; otherwise the body we send decides.
  if (body.length > 0 || headers['content-length'] === undefined)
    headers['content-length'] = String(body.length);
  const socket = res.socket;
  switch (fault?.kind) {
    case undefined:
      res.writeHead(status, headers);
      res.end(body);
      return;
    case 'reset':
    case 'close': {
      res.writeHead(status, headers);
      res.write(body.subarray(0, at(fault.after, body.length)));
      // Give the bytes a moment to leave before the connection goes.
      await sleep(10);
      if (fault.kind === 'reset') socket?.resetAndDestroy();
      else socket?.end();
      return;
    }
    case 'truncate': {
      const cut = body.subarray(0, at(fault.to, body.length));
      res.writeHead(status, { ...headers, 'content-length': String(cut.length) });
      res.end(cut);
      return;
    }
    case 'body':
      res.writeHead(status, { ...headers, 'content-length': String(fault.bytes.length) });
      res.end(fault.bytes);
      return;
    case 'headers': {
      const changed = { ...headers };
      for (const [name, value] of Object.entries(fault.set)) {
        if (value === undefined) delete changed[name];
        else changed[name] = value;
      }
      res.writeHead(status, changed);
      // A Content-Length set longer than the body leaves the client waiting for bytes that never come:
      // end the connection after the body, as a server that lied and then hung up would.
      res.end(body, () => {
        if (changed['content-length'] !== String(body.length)) socket?.end();
      });
      return;
    }
    case 'stall': {
      if (fault.after === undefined) {
        await sleep(fault.ms);
        if (res.destroyed) return;
        res.writeHead(status, headers);
        res.end(body);
        return;
      }
      const cut = at(fault.after, body.length);
      res.writeHead(status, headers);
      res.write(body.subarray(0, cut));
      await sleep(fault.ms);
      if (res.destroyed) return;
      res.end(body.subarray(cut));
      return;
    }
    case 'status':
      throw new Error('unreachable: status faults are answered before forwarding');
  }
}

function at(cut: Cut, length: number): number {
  const n = typeof cut === 'number' ? cut : Math.floor(length * cut.fraction);
  return Math.max(0, Math.min(length, n));
}

/** The object key of a path-style URL (`/bucket/key?query`), or `undefined` for bucket-level requests. */
function keyOf(url: string): string | undefined {
  const path = url.split('?')[0] ?? '';
  const slash = path.indexOf('/', 1);
  if (slash < 0 || slash === path.length - 1) return undefined;
  return decodeURIComponent(path.slice(slash + 1));
}
