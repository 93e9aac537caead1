// Envoy's tcp_proxy: one upstream connection per downstream connection, the destination chosen once
// (weighted) when the connection starts, bytes piped both ways with backpressure. Half-close is
// passed through (FIN one way does not stop the other), a reset on one side resets the other, an
// idle connection is closed after the idle timeout, and one access-log line is written per
// connection when both sides are gone. Connections keep the route they started with across reloads.

import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { endsOf } from '../addresses';
import type { L4Route } from '../../config/snapshot';
import { asError, ERRORS, fromUpstreamError, type ErrorCode } from '../../errors';
import type { Registry } from '../../registry/registry';
import type { Endpoint, Cluster } from '../../registry/cluster';
import type { AccessRecord } from '../../telemetry/access-log';
import { isInboundCluster, type TcpSeries } from '../../telemetry/metrics';
import type { Telemetry } from '../../telemetry/telemetry';
import { joinHostPort } from '../http/headers';
import { tlsIdentitiesOf } from '../../tls/identities';
import { pickDestination } from '../http/route-match';
import { meshAlpn, upstreamTlsOptions } from '../../tls/upstream';
import { inboundSourceAddress, isOriginalDstCluster } from '../../sidecar/capture';
import { ReadBuffers, userReads, type UserReads } from './read-buffers';
import { readThrough, TLS_READ_BYTES } from '../direct-reads';

export interface TcpProxyDeps {
  readonly registry: Registry;
  readonly telemetry: Telemetry;
  readonly log: Logger;
  readonly random: () => number;
  /** Envoy's tcp_proxy idle_timeout: no bytes either way for this long closes both sides (default 1 h). */
  readonly idleTimeoutMs: number;
  /** Read client connections (plain, and TLS terminated here) through gateway/direct-reads.ts (where proven on this node). */
  readonly directReads?: boolean;
}

/** What the listener learned before handing the connection over. */
export interface TcpConnectionInfo {
  /** The route that takes the connection; undefined closes it with NR. */
  readonly route: L4Route | undefined;
  /** SNI, for %REQUESTED_SERVER_NAME% (passthrough and terminated TLS). */
  readonly sni?: string;
  /** Bytes already read from the client (a ClientHello) to send upstream first, byte for byte. */
  readonly replay?: Buffer;
  readonly startTime?: number;
  /** Sidecar: where the application was connecting (PassthroughCluster goes there). */
  readonly originalDst?: { readonly address: string; readonly port: number };
}

/** The route of sidecar allow_any for TCP and TLS: the original destination, as Envoy's PassthroughCluster. */
export const PASSTHROUGH_ROUTE: L4Route = {
  name: 'allow_any', destinationSubnets: { cidrs: [] }, totalWeight: 100,
  destinations: [{ cluster: 'PassthroughCluster', host: 'PassthroughCluster', port: 0, weight: 100 }],
  origin: { resource: 'MeshConfig istio-system/istio', file: '', line: 0, path: 'outboundTrafficPolicy' },
};

/** Sidecar block_all for TCP and TLS: Envoy's BlackHoleCluster, a cluster without endpoints (UH). */
export const BLACKHOLE_ROUTE: L4Route = {
  ...PASSTHROUGH_ROUTE, name: 'block_all',
  destinations: [{ cluster: 'BlackHoleCluster', host: 'BlackHoleCluster', port: 0, weight: 100 }],
};

/**
 * Where upstream bytes come from: a plain TCP connection, or (TLS origination) a TLS one. A connector
 * that gives the socket `reads` as its `onread` says so with `readsTaken`; the session then gets the
 * upstream's bytes through them instead of 'data' events.
 */
export type UpstreamConnector = (endpoint: Endpoint, cluster: Cluster, reads: UserReads) => {
  readonly socket: Socket;
  readonly ready: 'connect' | 'secureConnect';
  readonly readsTaken?: boolean;
};

export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

/** Client bytes read directly and held while the upstream connects; past this, reading stops until it is there. */
const HOLD_BYTES = 64 * 1024;

export class TcpProxy {
  /** Read buffers shared by every session (read-buffers.ts): upstream and plain client reads. */
  readonly readBuffers = new ReadBuffers();
  /** Client reads of TLS connections terminated here: a TLS read is at most 16 KiB of plaintext. */
  readonly tlsReadBuffers = new ReadBuffers(TLS_READ_BYTES);

  constructor(private readonly deps: TcpProxyDeps, private readonly connect: UpstreamConnector = connectUpstream) {}

  /** Take over a downstream connection (already past any ClientHello inspection). Never throws. */
  handle(downstream: Socket, info: TcpConnectionInfo): void {
    try {
      new TcpSession(this.deps, this.connect, this.readBuffers, this.tlsReadBuffers, downstream, info).start();
    } catch (err) {
      this.deps.log.error({ err: asError(err).message }, 'tcp proxy: unexpected error; connection closed');
      downstream.destroy();
    }
  }

  /** A connection no chain or route takes: closed at once, logged as Envoy does. */
  reject(downstream: Socket, info: { sni?: string; bytesReceived?: number; startTime?: number }): void {
    const rec = baseRecord(downstream, info.startTime ?? Date.now(), info.sni, this.deps.telemetry.accessLog.enabled);
    const spec = ERRORS.FILTER_CHAIN_NOT_FOUND;
    rec.responseFlags.push(spec.flag);
    rec.responseCodeDetails = spec.details;
    rec.bytesReceived = info.bytesReceived ?? 0;
    downstream.destroy();
    rec.durationMs = Date.now() - rec.startTime;
    this.deps.telemetry.accessLog.write(rec);
  }
}

/**
 * A raw connection to an endpoint (TCP routes, and HTTP upgrades once routed): plain TCP, or TLS when
 * the cluster's DestinationRule originates it; the sidecar's inbound source address and the
 * cluster's keepalive apply either way. Given `reads`, a plain socket reads through them.
 */
export function connectUpstream(endpoint: Endpoint, cluster: Cluster, reads?: UserReads): ReturnType<UpstreamConnector> {
  const source = inboundSourceAddress(cluster.name, endpoint.address);
  const base = {
    host: endpoint.address, port: endpoint.port, allowHalfOpen: true, noDelay: true,
    ...(source ? { localAddress: source } : {}),
    ...(cluster.def.keepaliveMs !== undefined ? { keepAlive: true, keepAliveInitialDelay: cluster.def.keepaliveMs } : {}),
  };
  const t = cluster.def.upstreamTls;
  if (!t) return reads ? { socket: net.connect({ ...base, onread: reads }), ready: 'connect', readsTaken: true } : { socket: net.connect(base), ready: 'connect' };
  const opts = upstreamTlsOptions(t, cluster.def.host);
  if (opts instanceof Error) {
    const failed = new net.Socket();
    process.nextTick(() => failed.destroy(opts));
    return { socket: failed, ready: 'connect' };
  }
  return { socket: tls.connect({ ...base, ...opts.connect, ...(opts.mesh ? { ALPNProtocols: meshAlpn('tcp') } : {}) }), ready: 'secureConnect' };
}

/** Reset (RST) where the socket can, else close: a TLS socket has no TCP handle of its own to reset. */
export function reset(socket: Duplex | undefined): void {
  if (!socket) return;
  try {
    if (socket instanceof net.Socket) socket.resetAndDestroy();
    else socket.destroy();
  } catch {
    socket.destroy();
  }
}

/** When `from` has ended (now, if it already has: a client may send its FIN with its first bytes), FIN `to`. */
function passEnd(from: Socket, to: Socket): void {
  const fin = () => {
    if (!to.destroyed) to.end();
  };
  if (from.readableEnded) process.nextTick(fin);
  else from.once('end', fin);
}

/**
 * A connection's access record. Its addresses are asked of the kernel (getsockname, getpeername)
 * only when an access log will print them (`addresses`): nothing else reads them, and the three
 * calls with their strings were ~6 µs of a new connection's ~110 (docs/benchmarks.md, "Addresses
 * only for the access log"). The listener asked for the client's end and ours when it accepted the
 * connection (addresses.ts), while the kernel could still tell. A connection that starts while the
 * log is off and ends after it was turned on logs `-` for them.
 */
function baseRecord(socket: Socket, startTime: number, sni: string | undefined, addresses: boolean): AccessRecord {
  const identities = tlsIdentitiesOf(socket); // a terminated TLS connection (gateway TLS servers, sidecar inbound mTLS)
  const ends = addresses ? endsOf(socket) : undefined;
  return {
    ...(identities ? { downstreamIdentities: identities } : {}),
    startTime,
    responseCode: 0,
    responseFlags: [],
    bytesReceived: 0,
    bytesSent: 0,
    durationMs: 0,
    downstreamLocalAddress: ends?.local,
    downstreamRemoteAddress: ends?.remote,
    requestedServerName: sni,
  };
}

/** One proxied connection. Owns both sockets and records itself exactly once. */
class TcpSession {
  private readonly rec: AccessRecord;
  /** The access log is on: the record carries the connection's addresses (see baseRecord). */
  private readonly addresses: boolean;
  private upstream: Socket | undefined;
  private endpoint: Endpoint | undefined;
  private cluster: Cluster | undefined;
  private series: TcpSeries | undefined;
  private connected = false;
  private recorded = false;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private downstreamClosed = false;
  private upstreamClosed = true; // until there is one
  /** The upstream's bytes come through read-buffers.ts (`onread`), not 'data' events. */
  private readsTaken = false;
  /** The client's bytes come through direct-reads.ts (from connectTo on), not 'data' events. */
  private directReads = false;
  /** Client bytes read directly before the upstream was there, bounded by HOLD_BYTES. */
  private held: { chunk: Buffer; release: ((written: boolean) => void) | undefined }[] = [];
  private heldBytes = 0;

  constructor(
    private readonly deps: TcpProxyDeps,
    private readonly connector: UpstreamConnector,
    private readonly readBuffers: ReadBuffers,
    private readonly tlsReadBuffers: ReadBuffers,
    private readonly downstream: Socket,
    private readonly info: TcpConnectionInfo,
  ) {
    this.addresses = deps.telemetry.accessLog.enabled;
    this.rec = baseRecord(downstream, info.startTime ?? Date.now(), info.sni, this.addresses);
    if (info.originalDst?.address) this.rec.downstreamLocalAddress = joinHostPort(info.originalDst.address, info.originalDst.port);
  }

  start(): void {
    const down = this.downstream;
    down.on('error', (err: NodeJS.ErrnoException) => this.onDownstreamError(err));
    down.once('close', () => {
      this.downstreamClosed = true;
      // The client left while we were still connecting: give up on the upstream too.
      if (!this.connected && this.upstream && this.rec.responseFlags.length === 0) {
        this.rec.responseFlags.push(ERRORS.DOWNSTREAM_DISCONNECT.flag);
        clearTimeout(this.connectTimer);
        this.upstream.destroy();
        // Counted as Istio counts it at a gateway: opened and closed, response_flags DC.
        if (!this.series && this.cluster) {
          this.series = this.deps.telemetry.metrics.tcpSeries(this.cluster.def.service, ERRORS.DOWNSTREAM_DISCONNECT.flag, false, this.endpoint);
          this.series.opened += 1;
        }
      }
      this.maybeFinish();
    });
    const route = this.info.route;
    if (!route) return this.fail('FILTER_CHAIN_NOT_FOUND', true);
    const dest = pickDestination(route.destinations, route.totalWeight, this.deps.random());
    this.rec.upstreamCluster = dest?.cluster;
    if (dest?.cluster === 'BlackHoleCluster') return this.fail('NO_HEALTHY_UPSTREAM');
    if (dest && isOriginalDstCluster(dest.cluster) && this.info.originalDst) {
      const passthrough = this.deps.registry.passthrough(dest.cluster);
      this.cluster = passthrough;
      const { address, port } = this.info.originalDst;
      // Per-port capture knows no address: the SNI names the destination.
      if (!address) return this.connectOriginal(passthrough, port);
      return this.connectTo(passthrough, this.deps.registry.endpointFor(address, port));
    }
    const cluster = dest && this.deps.registry.get(dest.cluster);
    if (!cluster) return this.fail('CLUSTER_NOT_FOUND');
    this.cluster = cluster;
    if (cluster.def.originalDstPort !== undefined) {
      // Original-destination clusters (NONE, headless): a sidecar goes where the application was
      // connecting; without endpoints a gateway (or per-port capture, which knows no address)
      // resolves the SNI; with endpoints a gateway load balances.
      const od = this.info.originalDst;
      if (od?.address) return this.connectTo(cluster, this.deps.registry.endpointFor(od.address, od.port));
      if (cluster.endpoints.length === 0) return this.connectOriginal(cluster, od ? od.port : cluster.def.originalDstPort);
    }
    const endpoint = cluster.pick();
    if (!endpoint) {
      cluster.stats.inc('upstream_cx_none_healthy');
      return this.fail('NO_HEALTHY_UPSTREAM');
    }
    this.connectTo(cluster, endpoint);
  }

  /** resolution NONE at a gateway, or per-port capture: connect to the SNI's address on `port`. */
  private connectOriginal(cluster: Cluster, port: number): void {
    const sni = this.info.sni;
    if (!sni) return this.fail(this.info.originalDst && !this.info.originalDst.address ? 'ORIGINAL_DST_UNKNOWN' : 'DNS_RESOLUTION_FAILED');
    this.downstream.pause();
    this.deps.registry.resolveEndpoint(sni, port).then((endpoint) => {
      if (this.downstreamClosed || this.recorded) return;
      if (!endpoint) return this.fail('DNS_RESOLUTION_FAILED');
      this.connectTo(cluster, endpoint);
    }, () => this.fail('DNS_RESOLUTION_FAILED'));
  }

  private connectTo(cluster: Cluster, endpoint: Endpoint): void {
    this.endpoint = endpoint;
    this.rec.upstreamHost = endpoint.hostPort;
    endpoint.active += 1;
    cluster.stats.inc('upstream_cx_total');
    const cx = this.deps.registry.connectionStats(endpoint.key);
    cx.cxTotal += 1;
    // Hold the client's bytes until the upstream is there: read directly, into `held` (bounded, then
    // reading stops), else the socket's stream buffers them (bounded by TCP).
    this.downstream.pause();
    this.readDownstreamDirectly();
    // A full client socket pauses the upstream (Socket.pause stops an `onread` socket's reads; its
    // resume on 'drain' starts them again).
    const reads = userReads(this.readBuffers, (chunk, release) => this.fromUpstream(chunk, release) || this.pauseUpstream(), (err) => {
      this.deps.log.error({ err: asError(err).message }, 'tcp proxy: unexpected error reading the upstream; connection reset');
      this.onUpstreamError();
    });
    const { socket: up, ready, readsTaken } = this.connector(endpoint, cluster, reads);
    this.upstream = up;
    this.readsTaken = readsTaken === true;
    if (this.readsTaken) up.once('close', reads.close);
    this.upstreamClosed = false;
    this.connectTimer = setTimeout(() => {
      cluster.stats.inc('upstream_cx_connect_timeout');
      this.upstreamFailed('CONNECT_TIMEOUT', 'connection timeout');
    }, cluster.def.connectTimeoutMs);
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (!this.connected) return this.upstreamFailed(fromUpstreamError(err, 'connect').code, err.code ?? err.message);
      this.onUpstreamError();
    });
    up.once('close', () => {
      this.upstreamClosed = true;
      if (this.connected) {
        cx.cxActive = Math.max(0, cx.cxActive - 1);
        cluster.stats.inc('upstream_cx_active', -1);
      }
      this.maybeFinish();
    });
    up.once(ready, () => {
      clearTimeout(this.connectTimer);
      if (this.downstreamClosed) return up.destroy();
      this.connected = true;
      cx.cxActive += 1;
      cluster.stats.inc('upstream_cx_active');
      if (this.addresses) this.rec.upstreamLocalAddress = joinHostPort(up.localAddress, up.localPort);
      const identities = tlsIdentitiesOf(up);
      if (identities) this.rec.upstreamIdentities = identities;
      // A sidecar's inbound side names the peers by its downstream's certificates (mesh mTLS); the
      // client side by the upstream connection's.
      const inbound = isInboundCluster(cluster.name);
      const downstream = this.rec.downstreamIdentities;
      this.series = this.deps.telemetry.metrics.tcpSeries(cluster.def.service, '-', inbound, endpoint, inbound ? downstream : identities);
      this.series.opened += 1;
      this.pipe();
    });
  }

  /** Both directions, with backpressure, counting bytes and activity. */
  private pipe(): void {
    const down = this.downstream;
    const up = this.upstream!;
    const series = this.series!;
    const rec = this.rec;
    if (this.info.replay && this.info.replay.length > 0) {
      up.write(this.info.replay);
      rec.bytesReceived += this.info.replay.length;
      series.received += this.info.replay.length;
    }
    // One handler per direction forwards, counts and notes activity; a full socket pauses its source
    // until it drains; a FIN is passed on and the other direction goes on (half-close). stream.pipe()
    // would add half a dozen listeners per side to every connection for the same.
    let full = false;
    for (const { chunk, release } of this.held) full = !this.toUpstream(chunk, release);
    this.held = [];
    this.heldBytes = 0;
    if (!this.directReads) {
      down.on('data', (chunk: Buffer) => {
        if (!this.toUpstream(chunk, undefined)) down.pause();
      });
    }
    if (!this.readsTaken) {
      up.on('data', (chunk: Buffer) => {
        if (!this.fromUpstream(chunk, undefined)) up.pause();
      });
    }
    up.on('drain', () => down.resume());
    down.on('drain', () => up.resume());
    passEnd(down, up);
    passEnd(up, down);
    if (full) down.pause();
    else down.resume();
    this.armIdleTimer();
  }

  /**
   * From here on the client's bytes skip its stream (direct-reads.ts) and come through the pooled
   * read buffers the upstream's use (a large read is lent to the upstream's write, not copied).
   */
  private readDownstreamDirectly(): void {
    if (!this.deps.directReads) return;
    const down = this.downstream;
    const pool = down instanceof tls.TLSSocket ? this.tlsReadBuffers : this.readBuffers;
    const reads = userReads(pool, (chunk, release) => this.fromDownstream(chunk, release), (err) => {
      this.deps.log.error({ err: asError(err).message }, 'tcp proxy: unexpected error reading the client; connection reset');
      reset(this.upstream);
      this.downstream.destroy();
    });
    const taken = readThrough(down, reads);
    if (!taken) return;
    this.directReads = true;
    down.once('close', () => {
      reads.close();
      this.dropHeld();
    });
    if (taken.waiting && !this.fromDownstream(taken.waiting, undefined)) down.pause();
  }

  /** A chunk read directly: held until the upstream is there (false past HOLD_BYTES: stop reading), then sent. */
  private fromDownstream(chunk: Buffer, release: ((written: boolean) => void) | undefined): boolean {
    if (this.connected) return this.toUpstream(chunk, release);
    this.held.push({ chunk, release });
    this.heldBytes += chunk.length;
    return this.heldBytes < HOLD_BYTES;
  }

  /** Held chunks that will not be sent: their pool buffers go back. */
  private dropHeld(): void {
    for (const { release } of this.held) release?.(true);
    this.held = [];
    this.heldBytes = 0;
  }

  /** Client bytes on their way to the upstream (counted, and noted as activity); false when it is full. */
  private toUpstream(chunk: Buffer, release: ((written: boolean) => void) | undefined): boolean {
    const up = this.upstream!;
    this.rec.bytesReceived += chunk.length;
    this.series!.received += chunk.length;
    this.lastActivity = Date.now();
    if (up.destroyed) {
      release?.(true);
      return true;
    }
    return release ? up.write(chunk, (err) => release(!err)) : up.write(chunk);
  }

  /**
   * Bytes from the upstream, on their way to the client; false when the client's socket is full (the
   * caller pauses the upstream until it drains). `release` hands the chunk's buffer back once written.
   */
  private fromUpstream(chunk: Buffer, release: ((written: boolean) => void) | undefined): boolean {
    const down = this.downstream;
    if (down.destroyed) {
      // The client is gone: these bytes are dropped, not sent (nor counted as sent).
      release?.(true);
      return true;
    }
    this.rec.bytesSent += chunk.length;
    if (this.series) this.series.sent += chunk.length;
    this.lastActivity = Date.now();
    if (!release) return down.write(chunk);
    // Only a completed write gives the buffer back; after an error it is left to the GC.
    return down.write(chunk, (err) => release(!err));
  }

  private pauseUpstream(): false {
    this.upstream?.pause();
    return false;
  }

  private armIdleTimer(): void {
    const idle = this.cluster?.def.idleTimeoutMs ?? this.deps.idleTimeoutMs;
    if (idle <= 0) return;
    const check = () => {
      const quiet = Date.now() - this.lastActivity;
      if (quiet >= idle) {
        this.rec.connectionTerminationDetails = 'idle_timeout';
        this.downstream.destroy();
        this.upstream?.destroy();
        return;
      }
      this.idleTimer = setTimeout(check, idle - quiet);
      this.idleTimer.unref();
    };
    this.idleTimer = setTimeout(check, idle);
    this.idleTimer.unref();
  }

  private onDownstreamError(err: NodeJS.ErrnoException): void {
    // A reset from the client resets the upstream too (Envoy closes with RST, not FIN).
    if (err.code === 'ECONNRESET') reset(this.upstream);
    else this.upstream?.destroy();
    this.downstream.destroy();
  }

  private onUpstreamError(): void {
    reset(this.downstream);
    this.upstream?.destroy();
  }

  private upstreamFailed(code: ErrorCode, reason: string): void {
    clearTimeout(this.connectTimer);
    if (this.recorded || this.connected) return;
    const cx = this.endpoint && this.deps.registry.connectionStats(this.endpoint.key);
    if (cx) cx.cxConnectFail += 1;
    this.cluster?.stats.inc('upstream_cx_connect_fail');
    if (this.endpoint) this.endpoint.rqError += 1;
    this.rec.upstreamTransportFailureReason = reason;
    this.upstream?.destroy();
    this.fail(code);
  }

  /** Close a connection that never reached an upstream, with the catalogue's flag. */
  private fail(code: ErrorCode, noRoute = false): void {
    const spec = ERRORS[code];
    this.rec.responseFlags.push(spec.flag);
    if (noRoute) this.rec.responseCodeDetails = spec.details;
    else {
      // Envoy's istio_stats filter runs before tcp_proxy: routed failures are counted too.
      const series = this.deps.telemetry.metrics.tcpSeries(this.cluster?.def.service ?? {}, spec.flag, isInboundCluster(this.cluster?.name), this.endpoint);
      series.opened += 1;
      this.series = series;
    }
    this.downstream.destroy();
  }

  private maybeFinish(): void {
    if (this.recorded || !this.downstreamClosed || !this.upstreamClosed) return;
    this.recorded = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.connectTimer);
    if (this.endpoint) this.endpoint.active = Math.max(0, this.endpoint.active - 1);
    if (this.series) this.series.closed += 1;
    this.rec.durationMs = Date.now() - this.rec.startTime;
    this.deps.telemetry.accessLog.write(this.rec);
  }
}
