// Owns the listening sockets. After each snapshot swap `reconcile` binds new ports, leaves unchanged
// ones alone (their handlers read the newest snapshot per request) and drains removed ones: stop
// accepting, let in-flight requests finish, close idle keep-alive connections.

import http from 'node:http';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerDef, ListenerFamily, OutboundDef, OutboundDestination, Snapshot } from '../config/snapshot';
import { endsOf, keepEnds } from './addresses';
import type { HttpProxy } from './http/proxy';
import type { Telemetry } from '../telemetry/telemetry';
import { ERRORS, asError, type ErrorCode } from '../errors';
import { rawLocalReply } from './http/headers';
import { UpgradeProxy } from './http/upgrade';
import { sniffPlaintext } from './sniff';
import { bindSession, serveH2Socket } from './http/connection';
import type { HttpEntry } from './http/route-match';
import type { TcpProxy } from './tcp/proxy';
import { selectChain, selectTcpRoute } from './tcp/match';
import { BLACKHOLE_ROUTE, PASSTHROUGH_ROUTE } from './tcp/proxy';
import { readClientHello } from '../tls/client-hello';
import { DEFAULT_PROTOCOL_DETECTION_MS } from '../config/compile';
import type { ServerCredentialSource } from '../tls/secrets';
import { isMeshHello } from './tls-listener';
import { isOwnListener, originalDestination, type OriginalDestination } from '../sidecar/original-dst';
import { looksLikeHttp, rememberOriginalDst } from '../sidecar/capture';
import { H1Connection } from './http/h1-lane';

/**
 * On a captured port whose protocol no service declares, how long to wait for the client's first
 * bytes (HTTP, TLS) before treating the connection as opaque TCP (server-first protocols).
 */
/** The start of HTTP/2's connection preface (h2c with prior knowledge, or h2 inside mesh mTLS without ALPN). */
const H2_PREFACE_START = Buffer.from('PRI * HTTP/2.0', 'latin1');

/** The service port that owns an original destination: the exact address first, then the longest CIDR. */
export function outboundDestinationFor(out: OutboundDef, address: string, port: number): OutboundDestination | undefined {
  if (!address) return undefined;
  const exact = out.vips.get(`${address}|${port}`);
  if (exact) return exact;
  const plain = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  if (plain !== address) {
    const mapped = out.vips.get(`${plain}|${port}`);
    if (mapped) return mapped;
  }
  return out.cidrs.find((c) => c.port === port && c.subnet.re?.check(plain))?.destination;
}

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
  /** Serve plain HTTP/1.1 requests on the lean lane (h1-lane.ts); false: node:http serves every one. */
  readonly http1Lane: boolean;
  /** The lane reads connections (plain, and TLS once secure) through gateway/direct-reads.ts (where proven on this node). */
  readonly directReads: boolean;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeaderBytes: 60 * 1024,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 300_000,
  http1Lane: true,
  directReads: true,
};

const H2_MAX_CONCURRENT_STREAMS = 100;

/**
 * Envoy's premature-reset check: once a connection has had 100 streams, if more than half of them
 * were reset (by either side) within a second of opening, it is an abuse of stream resets (rapid
 * reset, CVE-2023-44487, and resets provoked from the server): the session is closed with
 * ENHANCE_YOUR_CALM.
 */
function watchPrematureResets(session: http2.ServerHttp2Session): void {
  let streams = 0;
  let premature = 0;
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    streams += 1;
    const opened = Date.now();
    stream.once('close', () => {
      if (stream.rstCode !== 0 && Date.now() - opened < 1000) premature += 1;
      if (streams < 100 || premature * 2 <= streams || session.destroyed) return;
      try {
        session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      } catch {
        // a session already closing takes no GOAWAY: destroyed all the same
      }
      session.destroy();
    });
  });
}

/**
 * Hand a socket to the HTTP/2 server. Half-open is off for it: the listener keeps half-open
 * connections for TCP and HTTP/1, but node:http2 ignores a client's FIN, and a client that closed
 * its side would hold the session (and its streams) open for ever.
 */
function serveH2(stack: HttpStack, socket: Socket): void {
  socket.allowHalfOpen = false;
  serveH2Socket(stack.h2, socket);
}

/**
 * One HTTP/1 and one HTTP/2 server fed sockets by a listener (they never listen themselves), and
 * the HTTP/1.1 lane in front of the former.
 */
interface HttpStack {
  readonly http: http.Server;
  /** Serve an HTTP/1 connection: on the lane, which hands it to `http` at a request it leaves to node. */
  readonly serveHttp1: (socket: Socket) => void;
  /** Connections on the lane now. */
  readonly lane: Set<H1Connection>;
  readonly h2: http2.Http2Server;
  readonly sessions: Set<http2.ServerHttp2Session>;
}

interface Live {
  /** Replaced on reload; connection handlers read it when a connection arrives. */
  def: ListenerDef;
  readonly family: ListenerFamily;
  /** The listening socket; its connections go to an HTTP stack, the TCP proxy or TLS dispatch. */
  readonly server: net.Server;
  readonly sockets: Set<Socket>;
  /** HTTP stacks by entry: '' for plaintext HTTP, the filter chain name for terminated TLS. */
  readonly stacks: Map<string, HttpStack>;
  bound: boolean;
}

export interface ListenerManagerDeps {
  readonly proxy: HttpProxy;
  readonly upgrade: UpgradeProxy;
  readonly tcp: TcpProxy;
  /** TLS listeners: ClientHello inspection, passthrough and termination. */
  readonly tls?: TlsDispatcher;
  readonly telemetry: Telemetry;
  readonly log: Logger;
  readonly limits: HttpLimits;
  readonly serverName: string;
}

/** Hands a TLS listener's connection on once its ClientHello is read (gateway/tls-listener.ts). */
export interface TlsDispatcher {
  dispatch(socket: Socket, def: () => ListenerDef, http: (chain: string) => HttpStackEntry): void;
  /** A sidecar's inbound mTLS from a mesh peer: terminate with the mesh identity, then `onSecure`. */
  acceptMesh(socket: Socket, credentials: ServerCredentialSource, sni: string | undefined, onSecure: (tlsSocket: tls.TLSSocket) => void): void;
}

/** What TLS termination needs of an HTTP stack: where to hand a decrypted socket. */
export interface HttpStackEntry {
  connection(socket: Socket, alpn: string | false | null | undefined): void;
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
  /** The mesh config's protocolDetectionTimeout (1 s unless set), for the capture and inbound listeners. */
  private protocolDetectionMs = DEFAULT_PROTOCOL_DETECTION_MS;

  async reconcile(snapshot: Snapshot): Promise<{ bound: number[]; failed: { port: number; error: string }[] }> {
    this.protocolDetectionMs = snapshot.mesh.protocolDetectionMs;
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
        existing.def = def;
        continue;
      }
      if (def.family === 'TLS' && !this.deps.tls) {
        this.deps.log.warn({ listener: def.name }, `TLS listeners are not served by this build; port ${def.port} skipped`);
        continue;
      }
      const l = this.create(def);
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

  private create(def: ListenerDef): Live {
    const l: Live = { def, family: def.family, server: undefined as unknown as net.Server, sockets: new Set(), stacks: new Map(), bound: false };
    // allowHalfOpen: a client's FIN must not close our side before the reply (TCP half-close,
    // and Node's HTTP server decides itself what a FIN means for a request).
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      l.sockets.add(socket);
      socket.on('error', () => {}); // each protocol handler reports what it was doing
      socket.once('close', () => l.sockets.delete(socket));
      // The client's end and ours, kept from now on (addresses.ts): plain HTTP reads them for every
      // request anyway (X-Forwarded-For); the other listeners kept them only for the access log, and
      // without one a TCP or TLS passthrough connection never asks (two system calls of its ~28).
      if (l.family === 'HTTP' || this.deps.telemetry.accessLog.enabled) keepEnds(socket);
      try {
        this.accept(l, socket);
      } catch (err) {
        this.deps.log.error({ listener: l.def.name, err: asError(err).message }, 'connection setup failed; closed');
        socket.destroy();
      }
    });
    server.once('close', () => {
      for (const stack of l.stacks.values()) stack.http.close();
    });
    (l as { server: net.Server }).server = server;
    return l;
  }

  private accept(l: Live, socket: Socket): void {
    switch (l.family) {
      case 'HTTP':
        return sniffPlaintext(socket, this.deps.limits.headersTimeoutMs, (protocol) => {
          const stack = this.stack(l, '');
          if (protocol === 'h2c') return serveH2(stack, socket); // reads what is buffered itself
          stack.serveHttp1(socket);
          socket.resume(); // the HTTP/1 parser takes the sniffed bytes as the first 'data' event
        });
      case 'TCP':
        return this.deps.tcp.handle(socket, { route: selectTcpRoute(l.def.tcpRoutes, () => socket.localAddress ?? '') });
      case 'CAPTURE':
        return this.capture(l, socket);
      case 'INBOUND':
        return this.captureInbound(l, socket);
      case 'TLS':
        return this.deps.tls!.dispatch(socket, () => l.def, (chain) => {
          const stack = this.stack(l, chain);
          return {
            connection: (tlsSocket, alpn) => {
              if (alpn === 'h2') serveH2(stack, tlsSocket);
              else stack.serveHttp1(tlsSocket);
            },
          };
        });
    }
  }

  /**
   * Sidecar capture: the original destination (SO_ORIGINAL_DST), the loop guard, then the service
   * that owns that address and port (exact VIP, else the longest CIDR) decides the protocol, as
   * Istio's per-VIP listeners: HTTP is parsed (h2c or HTTP/1), TCP proxied at once whatever the
   * bytes, TLS routed by SNI and otherwise to the service. Addresses no service owns: HTTP on ports
   * whose services speak it, TCP at once on ports only opaque services use, else sniffed; what
   * matches nothing goes to the original destination (allow_any) or nowhere (block_all).
   */
  private capture(l: Live, socket: Socket): void {
    // Per-port fallback: the listener says the port; the address stays unknown ('').
    const fallback = l.def.fallbackPort;
    const dst = fallback !== undefined ? { address: '', port: fallback, family: 4 as const } : originalDestination(socket);
    if (dst instanceof Error) {
      this.deps.log.warn({ err: dst.message }, 'captured connection without an original destination; closed');
      return void socket.destroy();
    }
    if (fallback === undefined && isOwnListener(dst, socket, new Set([l.def.port]))) return void socket.destroy(); // loop guard
    rememberOriginalDst(socket, dst);
    const out = l.def.outbound!;
    const http = () => {
      sniffPlaintext(socket, this.deps.limits.headersTimeoutMs, (protocol) => {
        const stack = this.stack(l, `out:${dst.port}`, { port: dst.port, scheme: 'http', capturePort: l.def.port });
        if (protocol === 'h2c') return serveH2(stack, socket); // reads what is buffered itself
        stack.serveHttp1(socket);
        socket.resume();
      });
      socket.resume(); // paused after a ClientHello read: the sniffer needs the (unshifted) bytes flowing
    };
    const passthrough = out.policy === 'ALLOW_ANY' ? PASSTHROUGH_ROUTE : BLACKHOLE_ROUTE;
    const known = outboundDestinationFor(out, dst.address, dst.port);
    if (known?.protocol === 'HTTP') return http();
    if (known?.protocol === 'TCP') {
      return this.deps.tcp.handle(socket, { route: selectTcpRoute(known.tcpRoutes, dst.address) ?? passthrough, originalDst: dst });
    }
    if (!known && out.httpPorts.has(dst.port)) return http();
    if (!known && out.tcpPorts.has(dst.port)) {
      const cluster = dst.address ? undefined : out.tcpByPort.get(dst.port);
      const route = cluster ? { ...PASSTHROUGH_ROUTE, name: cluster, destinations: [{ cluster, host: cluster, port: dst.port, weight: 100 }] } : passthrough;
      return this.deps.tcp.handle(socket, { route, originalDst: dst });
    }
    void readClientHello(socket, { timeoutMs: this.protocolDetectionMs }).then((hello) => {
      try {
        if (hello.status === 'closed' && hello.bytes.length === 0) return void socket.destroy();
        if (hello.status === 'hello') {
          const chain = selectChain(known ? known.chains : out.tls.get(dst.port), hello.sni, dst.address);
          const route = chain?.action.type === 'passthrough' ? chain.action.route : passthrough;
          return this.deps.tcp.handle(socket, { route, sni: hello.sni, replay: hello.bytes, originalDst: dst });
        }
        // A TLS service's port: what is not a ClientHello still goes to the service (no SNI to match).
        if (known?.protocol !== 'TLS' && looksLikeHttp(hello.bytes)) {
          socket.unshift(hello.bytes);
          return http();
        }
        if (known) {
          const route = known.protocol === 'TLS' ? selectChain(known.chains, undefined, dst.address) : undefined;
          const l4 = route?.action.type === 'passthrough' ? route.action.route : selectTcpRoute(known.tcpRoutes, dst.address) ?? passthrough;
          return this.deps.tcp.handle(socket, { route: l4, replay: hello.bytes, originalDst: dst });
        }
        const cluster = dst.address ? undefined : out.tcpByPort.get(dst.port);
        const route = cluster ? { ...PASSTHROUGH_ROUTE, name: cluster, destinations: [{ cluster, host: cluster, port: dst.port, weight: 100 }] } : passthrough;
        this.deps.tcp.handle(socket, { route, replay: hello.bytes, originalDst: dst });
      } catch (err) {
        this.deps.log.error({ err: asError(err).message }, 'capture dispatch failed; connection closed');
        socket.destroy();
      }
    });
  }

  /**
   * Sidecar inbound (15006): connections to this pod's ports, delivered to the application at the
   * original destination from 127.0.0.6; ports of the proxy's Services are `inbound|PORT||`, the
   * rest InboundPassthroughCluster. HTTP is parsed (and logged per request), the rest proxied as TCP.
   */
  private captureInbound(l: Live, socket: Socket): void {
    const dst = originalDestination(socket);
    if (dst instanceof Error) return void socket.destroy();
    if (isOwnListener(dst, socket, new Set([l.def.port]))) return void socket.destroy();
    rememberOriginalDst(socket, dst);
    this.inbound(l, socket, dst, l.def.inbound?.mtls);
  }

  /**
   * Route an inbound connection (or, after mesh mTLS, its decrypted stream): HTTP to the port's
   * stack, anything else to the application as TCP. `mtls`: the mesh identity, while a mesh peer's
   * ClientHello may still come (Istio's PERMISSIVE: plaintext and the application's own TLS pass too).
   */
  private inbound(l: Live, socket: Socket, dst: OriginalDestination, mtls: ServerCredentialSource | undefined): void {
    const known = l.def.inbound?.ports.get(dst.port);
    const cluster = known ? `inbound|${dst.port}||` : 'InboundPassthroughCluster';
    const http = (h2: boolean) => {
      const stack = this.stack(l, `in:${dst.port}`, { port: dst.port, scheme: 'http', inboundCluster: cluster });
      if (h2) {
        // node:http2 refuses a TLS socket whose ALPN chose nothing (or an Istio protocol name it does
        // not know as HTTP/2): what it carries was established as HTTP/2 here.
        if (socket instanceof tls.TLSSocket && socket.alpnProtocol !== 'h2') (socket as { alpnProtocol: string | false | null }).alpnProtocol = 'h2';
        return serveH2(stack, socket);
      }
      stack.serveHttp1(socket);
      socket.resume();
    };
    const route = () => ({ ...PASSTHROUGH_ROUTE, name: cluster, destinations: [{ cluster, host: cluster, port: dst.port, weight: 100 }] });
    const alpn = socket instanceof tls.TLSSocket ? socket.alpnProtocol : undefined;
    // Mesh mTLS negotiated the protocol: HTTP/2, or Istio's TCP (no detection wait: a server-first
    // protocol such as MySQL would stall on it, and Istio picks its TCP chain by ALPN alone).
    if (alpn === 'h2' || alpn === 'istio-h2') return http(true);
    if (alpn === 'istio') return this.deps.tcp.handle(socket, { route: route(), originalDst: dst });
    if (known?.http && !mtls) {
      // h2c with prior knowledge or HTTP/1, from the first bytes (gRPC callers speak the former).
      return sniffPlaintext(socket, this.deps.limits.headersTimeoutMs, (protocol) => http(protocol === 'h2c'));
    }
    void readClientHello(socket, { timeoutMs: this.protocolDetectionMs }).then((hello) => {
      try {
        if (hello.status === 'closed' && hello.bytes.length === 0) return void socket.destroy();
        if (mtls && hello.status === 'hello' && isMeshHello(hello.sni, hello.alpn)) {
          socket.unshift(hello.bytes); // the TLS layer reads the ClientHello again
          return this.deps.tls!.acceptMesh(socket, mtls, hello.sni, (tlsSocket) => {
            rememberOriginalDst(tlsSocket, dst);
            this.inbound(l, tlsSocket, dst, undefined);
          });
        }
        if (hello.status !== 'hello' && (known?.http || looksLikeHttp(hello.bytes))) {
          socket.unshift(hello.bytes);
          return http(hello.bytes.subarray(0, H2_PREFACE_START.length).equals(H2_PREFACE_START));
        }
        this.deps.tcp.handle(socket, { route: route(), replay: hello.bytes, originalDst: dst, ...(hello.status === 'hello' && hello.sni ? { sni: hello.sni } : {}) });
      } catch (err) {
        this.deps.log.error({ err: asError(err).message }, 'inbound dispatch failed; connection closed');
        socket.destroy();
      }
    });
  }

  /** The HTTP stack for an entry, created on first use. */
  private stack(l: Live, key: string, entry?: HttpEntry): HttpStack {
    let s = l.stacks.get(key);
    if (!s) {
      s = this.createHttpStack(entry ?? (key === '' ? { port: l.def.port, scheme: 'http' } : { port: l.def.port, scheme: 'https', chain: key }));
      l.stacks.set(key, s);
    }
    return s;
  }

  private createHttpStack(entry: HttpEntry): HttpStack {
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
    const sessions = new Set<http2.ServerHttp2Session>();
    const handler = this.deps.proxy.handler(entry);
    server.on('request', handler);
    server.on('upgrade', this.deps.upgrade.handler(entry, (socket) => server.emit('connection', socket)));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket, entry.inboundCluster !== undefined));
    server.requestTimeout = limits.requestTimeoutMs;
    // This server never listens itself (the listener feeds it), so start the connection tracking
    // that 'listening' would: header/request timeouts and closeIdleConnections depend on it.
    server.emit('listening');
    // HTTP/2: h2c with prior knowledge on plaintext ports, ALPN h2 on terminated TLS. Same routing.
    // At most 100 streams at once per connection (Envoy's edge recommendation; a client that keeps
    // opening more is cut off), and a connection idle for the keep-alive time is closed (Envoy's
    // stream idle timeout is 5 min): without them one connection held thousands of upstream requests,
    // or nothing at all for ever.
    const h2 = http2.createServer({
      maxSessionMemory: 16, maxSessionRejectedStreams: 100,
      settings: { maxHeaderListSize: limits.maxHeaderBytes, maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS },
    });
    h2.setTimeout(limits.keepAliveTimeoutMs);
    // A request is served a turn later, and not at all if its stream is gone by then: a client that
    // opens and at once resets streams (rapid reset) has the reset read in that turn, and costs no
    // upstream request. Such a stream still gets its access-log line (code 0, DC).
    const abandoned = this.deps.proxy.abandoned(entry);
    type H2Handler = (q: http2.Http2ServerRequest, r: http2.Http2ServerResponse) => void;
    h2.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => setImmediate(() => {
      (req.stream.destroyed ? abandoned as unknown as H2Handler : handler as unknown as H2Handler)(req, res);
    }));
    h2.on('session', (session: http2.ServerHttp2Session) => {
      bindSession(session);
      sessions.add(session);
      session.on('error', () => {});
      session.once('close', () => sessions.delete(session));
      watchPrematureResets(session);
    });
    h2.on('sessionError', () => {});
    const lane = new Set<H1Connection>();
    const toNode = (socket: Socket) => server.emit('connection', socket);
    const laneHandler = this.deps.proxy.laneHandler(entry);
    const inbound = entry.inboundCluster !== undefined;
    const hooks = {
      serve: laneHandler,
      handOff: toNode,
      headTimeout: (socket: Socket) => this.clientError(Object.assign(new Error('headers timeout'), { code: 'ERR_HTTP_HEADERS_TIMEOUT' }), socket, inbound),
    };
    const serveHttp1 = limits.http1Lane ? (socket: Socket) => void new H1Connection(socket, limits, hooks, lane) : toNode;
    return { http: server, h2, sessions, serveHttp1, lane };
  }

  /**
   * Malformed requests, oversized headers, slow clients: answer as Envoy would, log it, close. On a
   * sidecar's inbound side the metrics are reported by the destination, as its other requests.
   */
  private clientError(err: NodeJS.ErrnoException, socket: Socket, inbound: boolean): void {
    const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW'
      ? 'HEADERS_TOO_LARGE'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 'REQUEST_TIMEOUT' : 'DOWNSTREAM_PROTOCOL_ERROR';
    const spec = ERRORS[code];
    // The client's FIN in the middle of a request (HPE_INVALID_EOF_STATE): the client is gone, as
    // after a reset. No 400 after it, and no line of its own: a request already being served is
    // logged once, DC, by its exchange; half a head is not a request (Envoy logs neither).
    const gone = err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE';
    const quiet = gone || !socket.writable;
    if (!quiet) socket.end(rawLocalReply(spec.status, spec.body, this.deps.serverName));
    socket.destroySoon?.();
    setTimeout(() => socket.destroy(), 1000).unref();
    if (gone) return;
    const ends = endsOf(socket);
    this.deps.telemetry.recordHttp({
      startTime: Date.now(),
      responseCode: quiet ? 0 : spec.status,
      responseFlags: [quiet ? 'DC' : spec.flag],
      responseCodeDetails: spec.details,
      bytesReceived: 0,
      bytesSent: quiet ? 0 : Buffer.byteLength(spec.body),
      durationMs: 0,
      downstreamLocalAddress: ends.local,
      downstreamRemoteAddress: ends.remote,
    }, {}, 0, quiet ? 0 : spec.body.length, { inbound });
  }

  private drain(l: Live): void {
    this.deps.log.info({ listener: l.def.name }, `draining port ${l.def.port}`);
    this.draining.set(l, new Promise<void>((resolve) => l.server.close(() => {
      this.draining.delete(l);
      resolve();
    })));
    const closeIdle = () => {
      for (const stack of l.stacks.values()) {
        stack.http.closeIdleConnections();
        for (const c of stack.lane) if (c.idle) c.destroy();
      }
    };
    closeIdle();
    for (const stack of l.stacks.values()) for (const s of stack.sessions) s.close(); // GOAWAY: streams in flight finish
    // Connections kept alive after their last response are closed as they become idle.
    const t = setInterval(() => {
      if (!this.draining.has(l)) return clearInterval(t);
      closeIdle();
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
      for (const stack of l.stacks.values()) {
        stack.http.closeAllConnections();
        for (const c of stack.lane) c.destroy();
        for (const s of stack.sessions) s.destroy();
      }
      for (const s of l.sockets) s.destroy();
    }
  }
}
