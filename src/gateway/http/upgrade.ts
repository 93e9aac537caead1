// HTTP Upgrade (WebSocket and friends): route and shape the request like any other (header
// operations, rewrites), open a raw connection to the chosen endpoint as a TCP route would (TLS
// when the DestinationRule originates it), replay the request head, and pipe bytes both ways. The
// upstream's answer (101 or anything else) reaches the client unchanged; the access log reads its
// status line. A reset on either side resets the other (as a TCP route does), a close closes it.

import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, fromUpstreamError, type ErrorCode } from '../../errors';
import { transportFailureReason, type ProxyDeps } from './proxy';
import { decide, pickDestination, routeTableFor, type HttpEntry } from './route-match';
import { joinHostPort, plainAddress, requestIdOf, upstreamRequestHeaders } from './headers';
import type { AccessRecord } from '../../telemetry/access-log';
import type { DestinationLabels } from '../../telemetry/metrics';
import { shapeUpstreamRequest } from './policy';
import { connectUpstream, reset } from '../tcp/proxy';

export class UpgradeProxy {
  constructor(private readonly deps: ProxyDeps) {}

  handler(entry: HttpEntry): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
    return (req, socket, head) => {
      socket.on('error', () => socket.destroy());
      try {
        this.serve(req, socket, head, entry);
      } catch {
        socket.destroy();
      }
    };
  }

  private serve(req: IncomingMessage, socket: Duplex, head: Buffer, entry: HttpEntry): void {
    const scheme = entry.scheme;
    const start = Date.now();
    const sock = req.socket;
    const headers = upstreamRequestHeaders(req.headers, {
      remoteAddress: plainAddress(sock.remoteAddress), scheme, requestId: requestIdOf(req.headers),
    });
    const rec: AccessRecord = {
      startTime: start, method: req.method, path: req.url, protocol: `HTTP/${req.httpVersion}`,
      responseCode: 0, responseFlags: [], bytesReceived: 0, bytesSent: 0, durationMs: 0,
      requestHeaders: headers, authority: req.headers.host,
      downstreamLocalAddress: joinHostPort(sock.localAddress, sock.localPort),
      downstreamRemoteAddress: joinHostPort(sock.remoteAddress, sock.remotePort),
    };
    let destination: DestinationLabels = {};
    let recorded = false;
    const record = () => {
      if (recorded) return;
      recorded = true;
      rec.durationMs = Date.now() - start;
      this.deps.telemetry.recordHttp(rec, destination, rec.bytesReceived, rec.bytesSent);
    };
    const reply = (code: ErrorCode) => {
      const spec = ERRORS[code];
      rec.responseCode = spec.status;
      rec.responseFlags.push(spec.flag);
      rec.responseCodeDetails = spec.details;
      socket.end(`HTTP/1.1 ${spec.status} ${statusText(spec.status)}\r\nserver: ${this.deps.serverName}\r\ncontent-length: ${Buffer.byteLength(spec.body)}\r\n${spec.body ? 'content-type: text/plain\r\n' : ''}connection: close\r\n\r\n${spec.body}`);
      record();
    };

    const decision = decide(routeTableFor(this.deps.store.current, entry), {
      authority: req.headers.host ?? '', path: req.url ?? '/', method: req.method ?? 'GET', scheme, headers: req.headers,
    });
    if (!decision || decision.requireTls) return reply('NO_ROUTE');
    rec.routeName = decision.route.name;
    const action = decision.route.action;
    if (action.type !== 'route') return reply('NO_ROUTE');
    const dest = pickDestination(action.destinations, action.totalWeight, this.deps.random());
    const cluster = dest && this.deps.registry.get(dest.cluster);
    if (!cluster) return reply('CLUSTER_NOT_FOUND');
    rec.upstreamCluster = cluster.name;
    destination = cluster.def.service;
    const endpoint = cluster.pick();
    if (!endpoint) return reply('NO_HEALTHY_UPSTREAM');
    rec.upstreamHost = endpoint.hostPort;

    const path = shapeUpstreamRequest(headers, decision.route, dest, req.url ?? '/');
    headers['connection'] = 'Upgrade';
    headers['upgrade'] = String(req.headers.upgrade ?? '');
    headers['x-envoy-attempt-count'] = '1';
    let head1 = `${req.method} ${path} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) head1 += `${k}: ${one}\r\n`;
    head1 += '\r\n';

    const { socket: upstream, ready } = connectUpstream(endpoint, cluster);
    const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), cluster.def.connectTimeoutMs);
    let connected = false;
    upstream.once(ready, () => {
      connected = true;
      clearTimeout(connectTimer);
      rec.upstreamLocalAddress = joinHostPort(upstream.localAddress, upstream.localPort);
      upstream.write(head1);
      if (head.length > 0) upstream.write(head);
      upstream.once('data', (first: Buffer) => {
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(first.subarray(0, 16).toString('latin1'));
        rec.responseCode = m ? Number(m[1]) : 0;
        rec.responseCodeDetails = 'via_upstream';
      });
      upstream.on('data', (c: Buffer) => { rec.bytesSent += c.length; });
      socket.on('data', (c: Buffer) => { rec.bytesReceived += c.length; });
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', (err) => {
      clearTimeout(connectTimer);
      if (!connected) {
        rec.upstreamTransportFailureReason = transportFailureReason(err) ?? err.message;
        return reply(fromUpstreamError(err, 'connect').code);
      }
      rec.responseFlags.push('UC');
      reset(socket);
    });
    // A client that resets (rather than closes) resets the upstream too: it sees what the client did.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') reset(upstream);
    });
    upstream.on('close', () => {
      socket.destroy();
      if (connected) record();
    });
    socket.on('close', () => {
      clearTimeout(connectTimer);
      upstream.destroy();
      // The client left before the upstream answered the connect: logged DC, as a TCP route does.
      if (!connected && !recorded) {
        rec.responseFlags.push(ERRORS.DOWNSTREAM_DISCONNECT.flag);
        rec.responseCodeDetails = ERRORS.DOWNSTREAM_DISCONNECT.details;
      }
      record();
    });
  }
}

function statusText(status: number): string {
  return STATUS_CODES[status] ?? '';
}
