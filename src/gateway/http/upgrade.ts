// HTTP Upgrade requests, as Istio's Envoy takes them (its HTTP connection manager enables the
// `websocket` upgrade only):
//
// - `Upgrade: h2c` is not an upgrade the gateway makes: the h2c headers are dropped and the request
//   is served as the HTTP/1.1 request it also is (Envoy's codec does the same). Node hands every
//   upgrade request over as a raw socket, so the request head is written again without them and the
//   socket goes back to the HTTP server.
// - `Upgrade: websocket` is routed and shaped like any request (header operations, rewrites, TLS
//   origination), sent upstream, and becomes a tunnel only if the upstream answers 101. Any other
//   answer reaches the client as a plain response and the connection is closed after it: nothing the
//   client sends next can go to the upstream unrouted.
// - Any other upgrade: 403, `upgrade_failed`.
//
// In the tunnel a FIN is a half-close and passes through; a reset on either side resets the other.

import http, { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, fromUpstreamError, type ErrorCode } from '../../errors';
import { chainKeysOf, transportFailureReason, type ProxyDeps } from './proxy';
import { decide, pickDestination, routeTableFor, type HttpEntry } from './route-match';
import { downstreamResponseHeaders, joinHostPort, rawLocalReply, requestIdOf, upstreamRequestHeaders, validAuthority } from './headers';
import type { AccessRecord } from '../../telemetry/access-log';
import type { DestinationLabels } from '../../telemetry/metrics';
import { applyHeaderOpsFlat, shapeUpstreamRequest } from './policy';
import type { HeaderOperations } from '../../config/types';
import { requestTarget } from './path';
import type { Cluster, Endpoint } from '../../registry/cluster';
import { downstreamOf, type Downstream } from './connection';
import { connectUpstream, reset } from '../tcp/proxy';

export type UpgradeKind = 'websocket' | 'h2c' | 'other';

/** Which upgrade a request asks for (the Upgrade header, case-insensitive). */
export function upgradeKind(upgrade: string | string[] | undefined): UpgradeKind {
  const v = (Array.isArray(upgrade) ? upgrade.join(',') : upgrade ?? '').trim().toLowerCase();
  return v === 'websocket' ? 'websocket' : v === 'h2c' ? 'h2c' : 'other';
}

/** The request head as received, minus the h2c upgrade: Upgrade, HTTP2-Settings and their Connection tokens. */
export function headWithoutH2cUpgrade(method: string, url: string, httpVersion: string, rawHeaders: readonly string[]): string {
  let head = `${method} ${url} HTTP/${httpVersion}\r\n`;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (lower === 'upgrade' || lower === 'http2-settings') continue;
    let value = rawHeaders[i + 1]!;
    if (lower === 'connection') {
      value = value.split(',').map((t) => t.trim()).filter((t) => t !== '' && !/^(upgrade|http2-settings)$/i.test(t)).join(', ');
      if (value === '') continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  return `${head}\r\n`;
}

export class UpgradeProxy {
  constructor(private readonly deps: ProxyDeps) {}

  /** The 'upgrade' listener for an HTTP server; `reparse` gives a socket back to that server. */
  handler(entry: HttpEntry, reparse: (socket: Duplex) => void): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
    return (req, socket, head) => {
      try {
        if (upgradeKind(req.headers.upgrade) === 'h2c') {
          socket.unshift(Buffer.concat([Buffer.from(headWithoutH2cUpgrade(req.method ?? 'GET', req.url ?? '/', req.httpVersion, req.rawHeaders), 'latin1'), head]));
          return reparse(socket);
        }
        socket.on('error', () => socket.destroy());
        new UpgradeExchange(this.deps, entry, req, socket, head).start();
      } catch {
        socket.destroy();
      }
    };
  }
}

/** One upgrade request: routed, sent upstream, then a tunnel (101) or one plain response. Records itself once. */
class UpgradeExchange {
  private readonly rec: AccessRecord;
  private readonly start0 = Date.now();
  private destination: DestinationLabels = {};
  private recorded = false;
  /** The upstream answered (101 or otherwise): the client's connection now belongs to that answer. */
  private answered = false;
  /** Response header operations of the route and the destination. */
  private responseOps: readonly (HeaderOperations | undefined)[] = [];
  private readonly down: Downstream;

  constructor(
    private readonly deps: ProxyDeps,
    private readonly entry: HttpEntry,
    private readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
  ) {
    this.down = downstreamOf(req);
    this.rec = {
      startTime: this.start0, method: req.method, path: req.url, protocol: `HTTP/${req.httpVersion}`,
      responseCode: 0, responseFlags: [], bytesReceived: 0, bytesSent: 0, durationMs: 0,
      requestHeaders: {}, authority: req.headers.host,
      downstreamLocalAddress: this.down.localAddress,
      downstreamRemoteAddress: this.down.remoteAddress,
    };
  }

  private record(): void {
    if (this.recorded) return;
    this.recorded = true;
    this.rec.durationMs = Date.now() - this.start0;
    this.deps.telemetry.recordHttp(this.rec, this.destination, this.rec.bytesReceived, this.rec.bytesSent);
  }

  /** A local reply; the connection is closed after it. */
  private reply(code: ErrorCode): void {
    const spec = ERRORS[code];
    const rec = this.rec;
    rec.responseCode = spec.status;
    if (spec.flag !== '-') rec.responseFlags.push(spec.flag);
    rec.responseCodeDetails = spec.details;
    if (!this.socket.destroyed) this.socket.end(rawLocalReply(spec.status, spec.body, this.deps.serverName));
    this.record();
  }

  start(): void {
    const { req, socket, rec, deps } = this;
    const scheme = this.entry.scheme;
    const target = requestTarget(req.url ?? '/');
    if (target.error !== undefined) return this.reply('DOWNSTREAM_PROTOCOL_ERROR');
    if (target.authority !== undefined) req.headers.host = target.authority;
    rec.path = target.path;
    rec.authority = req.headers.host;
    if (!validAuthority(req.headers.host)) return this.reply('DOWNSTREAM_PROTOCOL_ERROR');
    if (upgradeKind(req.headers.upgrade) !== 'websocket') return this.reply('UPGRADE_FAILED');
    // As proxy.ts: a sidecar's connections (captured, with an original destination) keep the
    // sidecar's header rules; a terminated TLS connection names its client and identities.
    const { dst, clientCert, identities } = this.down;
    const headers = upstreamRequestHeaders(req.headers, {
      remoteAddress: this.down.remoteIp, scheme, requestId: requestIdOf(req.headers), outbound: dst !== undefined, clientCert,
    });
    if (identities) rec.downstreamIdentities = identities;
    rec.requestHeaders = headers;
    const decision = decide(routeTableFor(deps.store.current, this.entry, this.entry.chain === undefined ? undefined : chainKeysOf(req.socket)), {
      authority: req.headers.host ?? '', path: target.path, method: req.method ?? 'GET', scheme, headers: req.headers,
    });
    if (!decision || decision.requireTls) return this.reply('NO_ROUTE');
    rec.routeName = decision.route.name;
    const action = decision.route.action;
    let cluster: Cluster | undefined;
    let endpoint: Endpoint | undefined;
    let path = target.path;
    if (action.type === 'passthrough') {
      // A sidecar's allow_any, or its inbound side: to where the connection was going. Per-port
      // capture (no address known) has no passthrough for upgrades.
      if (!dst?.address) return this.reply('NO_ROUTE');
      cluster = deps.registry.passthrough(this.entry.inboundCluster);
      endpoint = deps.registry.endpointFor(dst.address, dst.port);
      this.responseOps = [decision.route.headers?.response];
    } else {
      if (action.type !== 'route') return this.reply('NO_ROUTE');
      const dest = pickDestination(action.destinations, action.totalWeight, deps.random());
      cluster = dest && deps.registry.get(dest.cluster);
      if (!dest || !cluster) return this.reply('CLUSTER_NOT_FOUND');
      endpoint = cluster.pick();
      if (endpoint) path = shapeUpstreamRequest(headers, decision.route, dest, target.path);
      this.responseOps = [decision.route.headers?.response, dest.headers?.response];
    }
    rec.upstreamCluster = cluster.name;
    this.destination = cluster.def.service;
    if (!endpoint) return this.reply('NO_HEALTHY_UPSTREAM');
    rec.upstreamHost = endpoint.hostPort;

    headers['connection'] = 'Upgrade';
    headers['upgrade'] = String(req.headers.upgrade);
    headers['x-envoy-attempt-count'] = '1';

    const { socket: upstream, ready } = connectUpstream(endpoint, cluster);
    let connected = false;
    const started = Date.now();
    const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), cluster.def.connectTimeoutMs);
    upstream.once(ready, () => {
      connected = true;
      clearTimeout(connectTimer);
      rec.upstreamLocalAddress = joinHostPort(upstream.localAddress, upstream.localPort);
    });
    const upReq = http.request({ method: req.method, path, headers, setHost: false, createConnection: () => upstream });
    upReq.on('upgrade', (res: IncomingMessage, up: Duplex, upHead: Buffer) => {
      this.answered = true;
      this.tunnel(res, up, upHead, Date.now() - started);
    });
    upReq.on('response', (res: IncomingMessage) => {
      this.answered = true;
      this.plainResponse(res, upstream, Date.now() - started);
    });
    upReq.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer);
      if (this.answered || this.recorded || socket.destroyed) return;
      if (!connected) rec.upstreamTransportFailureReason = transportFailureReason(err) ?? err.message;
      this.reply(fromUpstreamError(err, connected ? 'request' : 'connect').code);
    });
    // A client that resets resets the upstream too; one that leaves before the answer is logged DC.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') reset(upstream);
    });
    socket.on('close', () => {
      clearTimeout(connectTimer);
      upstream.destroy();
      if (!this.answered && !this.recorded) {
        rec.responseFlags.push(ERRORS.DOWNSTREAM_DISCONNECT.flag);
        rec.responseCodeDetails = ERRORS.DOWNSTREAM_DISCONNECT.details;
      }
      this.record();
    });
    upReq.end();
  }

  /** The status line and headers for the client: Envoy's reason phrase, server and service time, hop-by-hop dropped. */
  private responseHead(res: IncomingMessage, serviceTimeMs: number, extra: readonly string[]): string {
    const status = res.statusCode ?? 502;
    this.rec.responseCode = status;
    this.rec.responseCodeDetails = 'via_upstream';
    this.rec.upstreamServiceTimeMs = serviceTimeMs;
    let list = downstreamResponseHeaders(res.rawHeaders, this.deps.serverName, serviceTimeMs);
    for (const ops of this.responseOps) list = applyHeaderOpsFlat(list, ops);
    list.push(...extra);
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
    for (let i = 0; i + 1 < list.length; i += 2) head += `${list[i]}: ${list[i + 1]}\r\n`;
    return `${head}\r\n`;
  }

  /** 101: write the switch to the client, then bytes both ways until both sides are done. */
  private tunnel(res: IncomingMessage, up: Duplex, upHead: Buffer, serviceTimeMs: number): void {
    const { socket, rec } = this;
    socket.write(this.responseHead(res, serviceTimeMs, ['connection', 'upgrade', 'upgrade', String(res.headers.upgrade ?? '')]));
    const count = (c: Buffer) => { rec.bytesSent += c.length; };
    if (upHead.length > 0) {
      count(upHead);
      socket.write(upHead);
    }
    if (this.head.length > 0) {
      rec.bytesReceived += this.head.length;
      up.write(this.head);
    }
    up.on('data', count);
    socket.on('data', (c: Buffer) => { rec.bytesReceived += c.length; });
    up.on('error', () => {
      rec.responseFlags.push('UC');
      reset(socket);
    });
    up.on('close', () => {
      socket.destroy();
      this.record();
    });
    up.pipe(socket);
    socket.pipe(up);
  }

  /** Anything but 101: the response goes to the client as it is, then the connection closes. */
  private plainResponse(res: IncomingMessage, upstream: Duplex, serviceTimeMs: number): void {
    const { socket, rec } = this;
    socket.write(this.responseHead(res, serviceTimeMs, ['connection', 'close']));
    res.on('data', (c: Buffer) => {
      rec.bytesSent += c.length;
      if (!socket.write(c)) res.pause();
    });
    socket.on('drain', () => res.resume());
    res.once('end', () => {
      socket.end();
      upstream.destroy();
    });
    // The upstream went away mid-body: the client's response is cut short the same way.
    let cut = false;
    const onCut = () => {
      if (cut || res.complete) return;
      cut = true;
      rec.responseFlags.push('UC');
      reset(socket);
    };
    res.once('aborted', onCut);
    res.on('error', onCut);
  }
}
