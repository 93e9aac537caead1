// Owns the listening sockets. After each snapshot swap `reconcile` binds new ports, leaves unchanged
// ones alone (their handlers read the newest snapshot per request) and drains removed ones: stop
// accepting, let in-flight requests finish, close idle keep-alive connections.

import http from 'node:http';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ListenerDef, ListenerFamily, Snapshot } from '../config/snapshot';
import type { HttpProxy } from './http/proxy';
import type { Telemetry } from '../telemetry/telemetry';
import { ERRORS, type ErrorCode } from '../errors';
import { joinHostPort } from './http/headers';
import { UpgradeProxy } from './http/upgrade';
import { sniffPlaintext } from './sniff';

/** Limits for downstream HTTP connections (Envoy-like defaults, settable from the CLI). */
export interface HttpLimits {
  /** Max request header bytes; larger gets 431 (Envoy: 60 KiB). */
  readonly maxHeaderBytes: number;
  /** Time to receive the request headers (slowloris guard). */
  readonly headersTimeoutMs: number;
  /** Time to receive the whole request. 0 disables. */
  readonly requestTimeoutMs: number;
  /** Idle keep-alive connections are closed after this. */
  readonly keepAliveTimeoutMs: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeaderBytes: 60 * 1024,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 300_000,
};

interface Live {
  readonly def: ListenerDef;
  readonly family: ListenerFamily;
  /** The listening socket; connections go to `http` or `h2` by their first bytes. */
  readonly server: net.Server;
  readonly http: http.Server;
  readonly h2: http2.Http2Server;
  readonly sockets: Set<Socket>;
  readonly sessions: Set<http2.ServerHttp2Session>;
  bound: boolean;
}

export interface ListenerManagerDeps {
  readonly proxy: HttpProxy;
  readonly upgrade: UpgradeProxy;
  readonly telemetry: Telemetry;
  readonly log: Logger;
  readonly limits: HttpLimits;
  readonly serverName: string;
}

export class ListenerManager {
  private readonly live = new Map<number, Live>();
  /** Listeners being drained, with the promise that settles when their last connection is gone. */
  private readonly draining = new Map<Live, Promise<void>>();

  constructor(private readonly deps: ListenerManagerDeps) {}

  /** Ports currently listening. */
  ports(): number[] {
    return [...this.live.values()].filter((l) => l.bound).map((l) => l.def.port);
  }

  listeners(): readonly ListenerDef[] {
    return [...this.live.values()].map((l) => l.def);
  }

  /** Bind what is new, drain what is gone. Resolves once every new port is bound (or failed). */
  async reconcile(snapshot: Snapshot): Promise<{ bound: number[]; failed: { port: number; error: string }[] }> {
    const bound: number[] = [];
    const failed: { port: number; error: string }[] = [];
    for (const [port, l] of [...this.live]) {
      const next = snapshot.listeners.get(port);
      if (!next || next.family !== l.family || next.bind !== l.def.bind) {
        this.live.delete(port);
        this.drain(l);
      }
    }
    const binds: Promise<void>[] = [];
    for (const def of snapshot.listeners.values()) {
      const existing = this.live.get(def.port);
      if (existing) {
        this.live.set(def.port, { ...existing, def });
        continue;
      }
      if (def.family !== 'HTTP') {
        this.deps.log.warn({ listener: def.name, family: def.family }, `${def.family} listeners are not served yet; port ${def.port} skipped`);
        continue;
      }
      const l = this.createHttp(def);
      this.live.set(def.port, l);
      binds.push(new Promise<void>((resolve) => {
        const onError = (err: Error) => {
          failed.push({ port: def.port, error: err.message });
          this.live.delete(def.port);
          this.deps.log.error({ listener: def.name, err: err.message }, `cannot listen on ${def.bind}:${def.port}`);
          resolve();
        };
        l.server.once('error', onError);
        l.server.listen({ port: def.port, host: def.bind }, () => {
          l.server.off('error', onError);
          l.server.on('error', (err) => this.deps.log.error({ listener: def.name, err: err.message }, 'listener error'));
          l.bound = true;
          bound.push(def.port);
          this.deps.log.info({ listener: def.name }, `listening on ${def.bind}:${def.port}`);
          resolve();
        });
      }));
    }
    await Promise.all(binds);
    return { bound, failed };
  }

  private createHttp(def: ListenerDef): Live {
    const { limits } = this.deps;
    const server = http.createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: 1000,
      noDelay: true,
      joinDuplicateHeaders: false,
    });
    const sockets = new Set<Socket>();
    const sessions = new Set<http2.ServerHttp2Session>();
    const handler = this.deps.proxy.handler(def.port, 'http');
    server.on('request', handler);
    server.on('upgrade', this.deps.upgrade.handler(def.port, 'http'));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket));
    server.requestTimeout = limits.requestTimeoutMs;
    // This server never listens itself (the sniffing listener below feeds it), so start the
    // connection tracking that 'listening' would: header/request timeouts and closeIdleConnections
    // depend on it. Closed with the listener.
    server.emit('listening');
    // h2c with prior knowledge (gRPC and HTTP/2 clients on plaintext ports), same routing.
    const h2 = http2.createServer({ maxSessionMemory: 16, settings: { maxHeaderListSize: limits.maxHeaderBytes } });
    h2.on('request', handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
    h2.on('session', (session: http2.ServerHttp2Session) => {
      sessions.add(session);
      session.on('error', () => {});
      session.once('close', () => sessions.delete(session));
    });
    h2.on('sessionError', () => {});
    const listener = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.on('error', () => {}); // reported through the request that was using it
      socket.once('close', () => sockets.delete(socket));
      sniffPlaintext(socket, limits.headersTimeoutMs, (protocol) => {
        if (protocol === 'h2c') return void h2.emit('connection', socket); // reads what is buffered itself
        server.emit('connection', socket);
        socket.resume(); // the HTTP/1 parser takes the sniffed bytes as the first 'data' event
      });
    });
    listener.once('close', () => server.close());
    return { def, family: def.family, server: listener, http: server, h2, sockets, sessions, bound: false };
  }

  /** Malformed requests, oversized headers, slow clients: answer as Envoy would, log it, close. */
  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW'
      ? 'HEADERS_TOO_LARGE'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 'REQUEST_TIMEOUT' : 'DOWNSTREAM_PROTOCOL_ERROR';
    const spec = ERRORS[code];
    const quiet = err.code === 'ECONNRESET' || !socket.writable;
    if (!quiet) {
      const body = spec.body;
      socket.end(`HTTP/1.1 ${spec.status} ${http.STATUS_CODES[spec.status]}\r\nserver: ${this.deps.serverName}\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${body}`);
    }
    socket.destroySoon?.();
    setTimeout(() => socket.destroy(), 1000).unref();
    if (err.code === 'ECONNRESET') return;
    this.deps.telemetry.recordHttp({
      startTime: Date.now(),
      responseCode: quiet ? 0 : spec.status,
      responseFlags: [quiet ? 'DC' : spec.flag],
      responseCodeDetails: spec.details,
      bytesReceived: 0,
      bytesSent: quiet ? 0 : Buffer.byteLength(spec.body),
      durationMs: 0,
      downstreamLocalAddress: joinHostPort(socket.localAddress, socket.localPort),
      downstreamRemoteAddress: joinHostPort(socket.remoteAddress, socket.remotePort),
    }, {}, 0, quiet ? 0 : spec.body.length);
  }

  private drain(l: Live): void {
    this.deps.log.info({ listener: l.def.name }, `draining port ${l.def.port}`);
    this.draining.set(l, new Promise<void>((resolve) => l.server.close(() => {
      this.draining.delete(l);
      resolve();
    })));
    l.http.closeIdleConnections();
    for (const s of l.sessions) s.close(); // GOAWAY: streams in flight finish, no new ones
    // Connections kept alive after their last response are closed as they become idle.
    const t = setInterval(() => {
      if (!this.draining.has(l)) return clearInterval(t);
      l.http.closeIdleConnections();
    }, 500);
    t.unref();
  }

  /** Stop accepting everywhere and wait for in-flight work, up to the deadline; then cut the rest. */
  async shutdown(deadlineMs: number): Promise<void> {
    for (const [port, l] of [...this.live]) {
      this.live.delete(port);
      this.drain(l);
    }
    const all = [...this.draining.keys()];
    const done = Promise.all(this.draining.values());
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => { timer = setTimeout(resolve, deadlineMs); });
    await Promise.race([done, expired]);
    if (timer) clearTimeout(timer);
    for (const l of all) {
      l.http.closeAllConnections();
      for (const s of l.sessions) s.destroy();
      for (const s of l.sockets) s.destroy();
    }
  }
}
