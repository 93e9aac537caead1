// The HTTP data path: decide (pure route match), then forward through undici with retries and
// timeouts, streaming both bodies with backpressure, and record the outcome exactly once.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ClusterDef, Snapshot, CompiledRoute, RetryPolicy } from '../../config/snapshot';
import type { HeaderOperations } from '../../config/types';
import type { PoolOptions, Registry } from '../../registry/registry';
import type { Cluster, Endpoint } from '../../registry/cluster';
import { downstreamOf } from './connection';
import type { OriginalDestination } from '../../sidecar/original-dst';
import { httpToGrpcStatus, isGrpcContentType, type Telemetry } from '../../telemetry/telemetry';
import type { AccessRecord } from '../../telemetry/access-log';
import { PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, peerWorkloadFromHeader, peerWorkloadFromRaw, type OwnPeerHeaders, type PeerWorkload } from '../../telemetry/peer-metadata';
import type { DestinationLabels } from '../../telemetry/metrics';
import { ERRORS, GatewayError, fromUpstreamError, isTlsHandshakeCode, asError, type ErrorCode } from '../../errors';
import { decide, pickDestination, routeTableFor, type ChainKeys, type HttpEntry, type RouteInput } from './route-match';
import {
  authorityOf, downstreamResponseHeaders, dropNamed, httpDate, protocolOf, validAuthority, plainAddress, rawHeaderBytes, requestIdOf, upstreamRequestHeaders,
} from './headers';
import { httpsRedirectLocation, redirectLocation } from './redirect';
import { requestTarget } from './path';
import { inboundSourceAddress } from '../../sidecar/capture';
import { hostWithoutPort } from '../../config/names';
import { applyHeaderOpsFlat, corsPreflight, corsResponseHeaders, decideFault, hashKeyOf, shadowHost, shapeUpstreamRequest } from './policy';
import { randomBytes } from 'node:crypto';
import { upstreamTlsOptions } from '../../tls/upstream';
import { claimUpstreamSocket } from '../../registry/upstream-socket';
import type { H1Request, H1Response } from './h1-lane';

export interface ProxyDeps {
  readonly store: { readonly current: Snapshot };
  readonly registry: Registry;
  readonly telemetry: Telemetry;
  /** `server` header on every response (Istio gateways: istio-envoy). */
  readonly serverName: string;
  readonly random: () => number;
  /** Istio's metadata exchange: this proxy's headers, sent to mesh services (absent: none sent). */
  readonly peerHeaders?: OwnPeerHeaders;
  /**
   * Debug lines for upstream attempts that failed or were retried (what the access log's one line
   * per request cannot show: each attempt's endpoint and error). A no-op unless the level is debug
   * (admin /logging?level=debug switches it at run time); called on those paths only.
   */
  readonly log?: { debug(obj: object, msg: string): void };
}

const NO_DESTINATION: DestinationLabels = {};
/** A destination was reached whose route and destination have no response header operations. */
const NO_RESPONSE_OPS: readonly (HeaderOperations | undefined)[] = [undefined];

/** A new consistent-hash cookie value (DestinationRule consistentHash httpCookie with a ttl). */
const freshCookieValue = () => randomBytes(8).toString('hex');

/** Does a failed attempt qualify for a retry under the route's retryOn? */
export function retryableError(code: ErrorCode, policy: RetryPolicy): boolean {
  const on = policy.retryOn;
  const spec = ERRORS[code];
  if (!spec.retryable) return false;
  if (on.includes('5xx') || on.includes('gateway-error')) return true;
  if (spec.retryOn === 'connect-failure') return on.includes('connect-failure') || on.includes('reset');
  if (spec.retryOn === 'reset') return on.includes('reset');
  if (spec.retryOn === 'refused-stream') return on.includes('refused-stream');
  return false;
}

/** gRPC retry conditions read the response's grpc-status (trailers-only responses carry it in the headers). */
export function retryableGrpc(grpcStatus: string | undefined, policy: RetryPolicy): boolean {
  if (grpcStatus === undefined) return false;
  const on = policy.retryOn;
  const name = GRPC_RETRY_CODES[grpcStatus];
  return name !== undefined && on.includes(name);
}

const GRPC_RETRY_CODES: Readonly<Record<string, string>> = {
  '1': 'cancelled', '4': 'deadline-exceeded', '8': 'resource-exhausted', '13': 'internal', '14': 'unavailable',
};

export function retryableStatus(status: number, policy: RetryPolicy): boolean {
  const on = policy.retryOn;
  if (on.includes('5xx') && status >= 500) return true;
  if (on.includes('gateway-error') && (status === 502 || status === 503 || status === 504)) return true;
  if (on.includes('retriable-4xx') && status === 409) return true;
  if (on.includes('retriable-status-codes') && policy.retriableStatusCodes.includes(status)) return true;
  return false;
}

/** Envoy's retry back-off: a random wait in [0, base * (2^n - 1)], base 25 ms, capped at 250 ms. */
export function backoffMs(retryNumber: number, rand: number): number {
  const ceiling = Math.min(250, 25 * (2 ** retryNumber - 1));
  return Math.floor(rand * ceiling);
}

/**
 * What the proxy reads of a downstream request: node:http's IncomingMessage, node:http2's
 * compatibility request, or the HTTP/1.1 lane's (h1-lane.ts).
 */
export type DownstreamRequest = Pick<IncomingMessage,
  'method' | 'url' | 'headers' | 'rawHeaders' | 'httpVersion' | 'httpVersionMajor' | 'httpVersionMinor' | 'socket' | 'complete'> & {
  /** A body read whole with the head (the lane's); node's requests stream theirs (`Exchange.node`). */
  readonly body?: Buffer | undefined;
};

/** What the proxy does with a downstream response: node's (HTTP/1 and HTTP/2) or the HTTP/1.1 lane's. */
export interface DownstreamResponse {
  readonly shouldKeepAlive: boolean;
  readonly destroyed: boolean;
  writeHead(status: number, headers: string[]): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: string): unknown;
  destroy(err?: Error): unknown;
  addTrailers(trailers: Record<string, string | string[]>): void;
  removeHeader(name: string): void;
  on(event: 'close', fn: () => void): unknown;
  once(event: 'close' | 'drain', fn: () => void): unknown;
}

/** node's own request and response, for what only they do: bodies, and HTTP/2's stream. */
interface NodeIo {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}

/** State of one downstream request while it is in flight. */
class Exchange {
  readonly startTime = Date.now();
  readonly t0 = performance.now();
  readonly rec: AccessRecord;
  private recorded = false;
  private destination: DestinationLabels = NO_DESTINATION;
  private responseHeaderBytes = 0;
  private requestBodyBytes = 0;
  /** Something reads the body (and counts it): a streamed or replayable upload, or localReply. */
  private bodyRead = false;
  /** localReply reads a body nobody takes: the line waits for its end (record()). */
  private drainingBody = false;
  private readonly requestHeaderBytes: number;
  headersSent = false;
  finished = false;
  /** A gRPC request (content-type application/grpc or application/grpc+...). */
  readonly grpc: boolean;
  /** The response's grpc-status (headers, then trailers), for istio_requests_total. */
  grpcStatus: string | undefined;
  /** Set by the forwarder: abort the upstream attempt when the client goes away. */
  onDownstreamClose: (() => void) | undefined;
  upstreamHeaders: Record<string, string | string[]>;
  route: CompiledRoute | undefined;
  entry: HttpEntry | undefined;
  /** Consistent-hash key for the cluster's ring (DestinationRule consistentHash). */
  hashKey: string | undefined;
  /** Added to the upstream's response (a consistent-hash cookie). */
  readonly extraResponseHeaders: string[] = [];
  /** The endpoint of the latest attempt (its workload names the destination in metrics). */
  endpoint: Endpoint | undefined;
  /** A sidecar's inbound request: the calling workload, from its peer metadata. */
  source: PeerWorkload | undefined;
  /** Where a sidecar's captured connection was going (passthrough and original-destination clusters). */
  readonly dst: OriginalDestination | undefined;
  /** The client's address (X-Forwarded-For, source-IP hashing). */
  readonly remoteIp: string;
  /** A mesh service's answer to the metadata exchange: the workload that served (destination_* in metrics). */
  upstreamPeer: PeerWorkload | undefined;
  /** Response header operations of the route and the destination, applied to the upstream's response. */
  responseOps: readonly (HeaderOperations | undefined)[] = [];

  constructor(
    readonly req: DownstreamRequest,
    readonly res: DownstreamResponse,
    /** Set when node:http or node:http2 parsed the request (absent: the HTTP/1.1 lane's, whose body is `req.body`). */
    readonly node: NodeIo | undefined,
    readonly deps: ProxyDeps,
    scheme: 'http' | 'https',
  ) {
    const sock = req.socket;
    const requestId = requestIdOf(req.headers);
    const down = downstreamOf(req);
    this.dst = down.dst;
    this.remoteIp = down.remoteIp;
    this.upstreamHeaders = upstreamRequestHeaders(req.headers, {
      remoteAddress: down.remoteIp, scheme, requestId, outbound: down.dst !== undefined, clientCert: down.clientCert,
    });
    this.requestHeaderBytes = rawHeaderBytes(req.rawHeaders) + (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12;
    // Body bytes as they are read (Envoy's %BYTES_RECEIVED%), not as Content-Length announces them: an
    // upload the client abandons is logged and measured with what it sent. The lane's come whole;
    // a streamed body counts what the upstream took of it.
    this.requestBodyBytes = req.body?.length ?? 0;
    this.grpc = isGrpcContentType(req.headers['content-type']);
    // Every field named here, set or not, so that each request's record has one shape from the start
    // (no property added later: one allocation, and monomorphic loads in the access-log getters).
    this.rec = {
      startTime: this.startTime,
      method: req.method,
      path: req.url,
      protocol: protocolOf(req.httpVersion),
      responseCode: 0,
      responseFlags: [],
      responseCodeDetails: undefined,
      connectionTerminationDetails: undefined,
      upstreamTransportFailureReason: undefined,
      bytesReceived: this.requestBodyBytes,
      bytesSent: 0,
      durationMs: 0,
      upstreamServiceTimeMs: undefined,
      responseDurationMs: undefined,
      requestHeaders: this.upstreamHeaders,
      responseHeaders: undefined,
      authority: authorityOf(req.headers),
      upstreamHost: undefined,
      upstreamCluster: undefined,
      upstreamLocalAddress: undefined,
      upstreamIdentities: undefined,
      downstreamIdentities: down.identities,
      downstreamLocalAddress: down.localAddress,
      downstreamRemoteAddress: down.remoteAddress,
      requestedServerName: (sock as { servername?: string | false }).servername || undefined,
      routeName: undefined,
    };
  }

  setDestination(cluster: Cluster): void {
    this.rec.upstreamCluster = cluster.name;
    this.destination = cluster.def.service;
  }

  addRequestBody(bytes: number): void {
    this.bodyRead = true;
    if (this.recorded) return; // the line and the metric are made: they must say the same
    this.requestBodyBytes += bytes;
    this.rec.bytesReceived = this.requestBodyBytes;
  }

  /** Answer locally (404 NR, 503 UH, ...). */
  localReply(status: number, body: string, extra?: Readonly<Record<string, string>>): void {
    if (this.headersSent || this.res.destroyed) return;
    if (this.grpc && extra?.['grpc-status'] === undefined) {
      // A gRPC client gets Envoy's gRPC form of a local reply: 200, trailers-only, the status mapped
      // (503 -> 14 UNAVAILABLE, 404 -> 12 UNIMPLEMENTED, ...), the text in grpc-message.
      const grpcStatus = String(httpToGrpcStatus(status));
      this.grpcStatus = grpcStatus;
      return this.localReply(200, '', { ...extra, 'content-type': 'application/grpc', 'grpc-status': grpcStatus, ...(body ? { 'grpc-message': grpcMessage(body) } : {}) });
    }
    this.headersSent = true;
    const headers: Record<string, string | number> = { server: this.deps.serverName, 'content-length': Buffer.byteLength(body) };
    if (body) headers['content-type'] = 'text/plain';
    if (extra) Object.assign(headers, extra);
    if (this.req.httpVersionMajor === 2) delete headers['connection']; // not an HTTP/2 header
    const list: string[] = [];
    for (const [k, v] of Object.entries(headers)) list.push(k, String(v));
    // A reply the router makes itself for a routed request (503 UF, 504 UT, a redirect...) gets the
    // route's response header operations and the CORS headers too, as Envoy's do: a browser can read it.
    this.writeHead(status, this.route ? this.routeResponseHeaders(list) : list, body.length > 0, false);
    // A body node reads and nobody takes (the reply is made without it) is read here and counted
    // (node would discard it anyway), so the line says what the lane's says: its bodies come whole.
    const req = this.node?.req;
    if (req && !this.bodyRead) {
      this.bodyRead = true;
      this.drainingBody = true;
      req.on('data', (c: Buffer) => this.addRequestBody(c.length)).resume();
    }
    if (body) this.res.end(body);
    else this.res.end(); // (end('') would send the head before the end: a separate empty DATA frame on HTTP/2)
    this.rec.responseCode = status;
    this.rec.bytesSent = Buffer.byteLength(body);
    this.responseHeaderBytes = 64;
  }

  fail(code: ErrorCode, extraFlags: string[] = [], body?: string): void {
    const spec = ERRORS[code];
    this.rec.responseFlags.push(spec.flag, ...extraFlags);
    const transport = this.rec.upstreamTransportFailureReason;
    // Envoy appends the transport failure to the details: `{remote_connection_failure,delayed_connect_error:_111}`.
    this.rec.responseCodeDetails = transport && spec.flag === 'UF'
      ? spec.details.replace(/\}$/, `,${transport.replace(/ /g, '_')}}`)
      : spec.details;
    this.localReply(spec.status, body ?? spec.body, spec.headers);
    this.deps.telemetry.metrics.localReplies.inc({ code: String(spec.status) });
    this.record();
  }

  /** The client went away before the response was complete (Envoy's DC), or reset its stream before it was served. */
  disconnected(): void {
    this.rec.responseFlags.push(ERRORS.DOWNSTREAM_DISCONNECT.flag);
    this.rec.responseCodeDetails ??= ERRORS.DOWNSTREAM_DISCONNECT.details;
    this.record();
  }

  /** A VirtualService fault.abort: the configured status (or grpc-status for gRPC requests), flag FI. */
  faultAbort(status: number, grpc: number | undefined): void {
    const spec = ERRORS.FAULT_ABORT;
    this.rec.responseFlags.push(spec.flag);
    this.rec.responseCodeDetails = spec.details;
    if (grpc !== undefined && this.grpc) {
      this.grpcStatus = String(grpc);
      this.localReply(200, '', { 'content-type': 'application/grpc', 'grpc-status': this.grpcStatus, 'grpc-message': spec.body });
    } else {
      this.localReply(status, spec.body);
    }
    this.deps.telemetry.metrics.localReplies.inc({ code: String(this.rec.responseCode) });
    this.record();
  }

  /** `trailersMayFollow`: false when the upstream's framing rules trailers out (HTTP/1.1 with a Content-Length). */
  writeUpstreamHead(status: number, raw: Buffer[], serviceTimeMs: number, trailersMayFollow: boolean): void {
    this.headersSent = true;
    let headers = this.routeResponseHeaders(downstreamResponseHeaders(raw, this.deps.serverName, serviceTimeMs));
    headers.push(...this.extraResponseHeaders);
    if (status === 204) headers = dropNamed(headers, CONTENT_LENGTH); // RFC 9110 8.6: never on a 204
    this.rec.responseCode = status;
    this.rec.responseCodeDetails = 'via_upstream';
    this.rec.upstreamServiceTimeMs = serviceTimeMs;
    this.rec.responseDurationMs = Math.round(performance.now() - this.t0); // %RESPONSE_DURATION%: to the response's first byte
    this.rec.responseHeaders = { 'x-envoy-upstream-service-time': String(serviceTimeMs) };
    this.responseHeaderBytes = rawHeaderBytes(headers) + 17;
    this.writeHead(status, headers, status !== 204 && status !== 304 && this.req.method !== 'HEAD', trailersMayFollow);
  }

  /**
   * The head as Envoy writes it (names lower-case in `list`): a `date` when the upstream sent none,
   * and on HTTP/1.1 no `Connection: keep-alive` / `Keep-Alive` on a connection that stays open (Node
   * adds both; HTTP/1.0 gets `connection: keep-alive`), `connection: close` on one that does not, and
   * `transfer-encoding: chunked` in lower case when a body without a length follows.
   */
  private writeHead(status: number, list: string[], body: boolean, trailersMayFollow: boolean): void {
    let date = false;
    let connection = false;
    let length = false;
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i]!;
      if (name === 'date') date = true;
      else if (name === 'connection') connection = true;
      else if (name === 'content-length' || name === 'transfer-encoding') length = true;
    }
    if (!date) list.push('date', httpDate());
    const { req, res } = this;
    if (req.httpVersionMajor === 1) {
      // HTTP/1.0 keeps a connection open only when the response says so.
      if (!connection) {
        if (!res.shouldKeepAlive) list.push('connection', 'close');
        else if (req.httpVersionMinor === 0) list.push('connection', 'keep-alive');
        else res.removeHeader('connection');
      }
      if (!length && body && req.httpVersionMinor === 1) list.push('transfer-encoding', 'chunked');
    } else if (!body && !trailersMayFollow && this.node) {
      // HTTP/2 with nothing to follow: the head waits for end() (the same turn: a local reply, or an
      // HTTP/1.1 upstream's bodiless answer, complete with its head) and goes out as one HEADERS
      // frame that ends the stream, as Envoy sends it (not HEADERS, then an empty DATA frame).
      const h2 = this.node.res;
      h2.statusCode = status;
      for (let i = 0; i + 1 < list.length; i += 2) {
        const [name, value] = [list[i]!, list[i + 1]!];
        const had = h2.getHeader(name);
        h2.setHeader(name, had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value]);
      }
      return;
    } else if (!trailersMayFollow && this.node) {
      withoutTrailers(this.node.res);
    }
    res.writeHead(status, list);
  }

  /**
   * The route's and the destination's response header operations (the route's alone when no
   * destination was reached), then the CORS filter's headers, which replace any the upstream sent
   * (two allow-origin values make browsers refuse the response).
   */
  private routeResponseHeaders(list: string[]): string[] {
    const route = this.route;
    if (!route) return list;
    if (this.responseOps.length > 0) for (const o of this.responseOps) list = applyHeaderOpsFlat(list, o);
    else list = applyHeaderOpsFlat(list, route.headers?.response);
    const cors = corsResponseHeaders(route.cors, this.req.headers['origin']);
    if (cors.length === 0) return list;
    const names = new Set<string>();
    for (let i = 0; i < cors.length; i += 2) names.add(cors[i]!);
    return [...dropNamed(list, names), ...cors];
  }

  record(): void {
    if (this.recorded) return;
    this.finished = true;
    const req = this.node?.req;
    if (this.drainingBody && req && !req.complete) {
      // The rest of a body nobody takes is still coming: the line waits for it (or for the
      // connection's end), as Envoy logs a stream once it has ended both ways.
      this.drainingBody = false;
      const done = () => this.record();
      req.once('end', done).once('close', done);
      return;
    }
    this.recorded = true;
    this.rec.durationMs = Math.round(performance.now() - this.t0);
    this.deps.telemetry.recordHttp(
      this.rec, this.destination,
      this.requestHeaderBytes + this.requestBodyBytes, this.responseHeaderBytes + this.rec.bytesSent,
      { grpc: this.grpc, grpcStatus: this.grpcStatus, inbound: this.entry?.inboundCluster !== undefined, endpoint: this.endpoint, source: this.source, upstreamPeer: this.upstreamPeer },
    );
  }
}

/** Wrap a streamed request body so its bytes are counted as undici reads it. */
async function* counted(req: IncomingMessage, ex: Exchange): AsyncGenerator<Buffer> {
  for await (const chunk of req) {
    ex.addRequestBody((chunk as Buffer).length);
    yield chunk as Buffer;
  }
}

/** grpc-status among raw response headers (Buffers from undici, strings from the h2c pool). */
function grpcStatusOf(raw: readonly (Buffer | string)[]): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length === 11 && raw[i]!.toString('latin1').toLowerCase() === 'grpc-status') return raw[i + 1]!.toString('latin1');
  }
  return undefined;
}

/** gRPC's percent-encoding of grpc-message: bytes outside printable ASCII, and '%', as %XX. */
function grpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

const CONTENT_LENGTH: ReadonlySet<string> = new Set(['content-length']);

/**
 * Node's HTTP/2 compatibility response always opens the stream waiting for trailers, so the end of
 * the stream goes in a frame of its own, sent a loop turn after the body: a second write, and a
 * second wake-up of the client, for every response (measured on the sidecar -> egress gateway hop).
 * Where no trailers can follow, the stream is opened without that wait and the last DATA frame
 * carries END_STREAM. (HTTP/2 responses only: `res.stream` is the compatibility layer's stream.)
 */
function withoutTrailers(res: ServerResponse): void {
  const stream = (res as unknown as { stream?: { respond: (headers: object, options?: object) => void; headersSent: boolean } }).stream;
  if (!stream || stream.headersSent) return;
  const respond = stream.respond;
  stream.respond = (headers, options) => {
    stream.respond = respond;
    respond.call(stream, headers, { ...options, waitForTrailers: false });
  };
}

/**
 * How a response's body is framed, from its raw headers: `coded` when its Transfer-Encoding is more
 * than plain chunked (a coding before it, or chunked twice), `chunked`, `length` (a Content-Length
 * and no Transfer-Encoding: on HTTP/1.1 no trailers can follow), or `none`.
 */
function framingOf(raw: readonly (Buffer | string)[]): 'coded' | 'chunked' | 'length' | 'none' {
  let framing: 'chunked' | 'length' | 'none' = 'none';
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!.length;
    if (n !== 17 && n !== 14) continue; // "transfer-encoding", "content-length"
    const name = raw[i]!.toString().toLowerCase();
    if (name === 'transfer-encoding') {
      if (raw[i + 1]!.toString().trim().toLowerCase() !== 'chunked') return 'coded';
      framing = 'chunked';
    } else if (name === 'content-length' && framing === 'none') {
      framing = 'length';
    }
  }
  return framing;
}

/**
 * Response trailers (undici's raw list of Buffers, the h2c pool's of strings, or an object), as the object both
 * ServerResponse.addTrailers and its HTTP/2 counterpart take; undefined when there are none.
 */
function trailerObject(trailers: unknown): Record<string, string | string[]> | undefined {
  if (trailers == null || (Array.isArray(trailers) && trailers.length === 0)) return undefined; // the usual case: none
  const out: Record<string, string | string[]> = {};
  const add = (name: string, value: string) => {
    const key = name.toLowerCase();
    const old = out[key];
    out[key] = old === undefined ? value : [...(Array.isArray(old) ? old : [old]), value];
  };
  if (Array.isArray(trailers)) {
    for (let i = 0; i + 1 < trailers.length; i += 2) add(String(trailers[i]), String(trailers[i + 1]));
  } else if (typeof trailers === 'object') {
    for (const [k, v] of Object.entries(trailers as Record<string, unknown>)) for (const one of Array.isArray(v) ? v : [v]) add(k, String(one));
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Request bodies up to this size (by content-length) are read whole before they go upstream, so
 * retries and mirrors can send them again; larger or chunked bodies stream once (no retry, no mirror).
 */
export const REPLAYABLE_BODY_BYTES = 64 * 1024;

function readBody(req: IncomingMessage, cap: number, received: (bytes: number) => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      received(c.length);
      if (size > cap) return req.destroy(new Error('request body larger than its content-length'));
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
    req.once('close', () => { if (!req.complete) reject(new Error('request aborted')); });
  });
}

/** SNI and local address of a terminated TLS connection, to find its filter chain again after a reload. */
export function chainKeysOf(socket: IncomingMessage['socket']): ChainKeys {
  const servername = (socket as { servername?: string | false }).servername;
  return { sni: servername || undefined, localAddress: plainAddress(socket.localAddress) };
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  if (cl !== undefined) return cl !== '0';
  if (req.headers['transfer-encoding'] !== undefined) return true;
  // HTTP/2 frames its body in DATA frames, with or without content-length: one is coming unless the
  // HEADERS frame ended the stream.
  const stream = (req as unknown as { stream?: { endAfterHeaders?: boolean } }).stream;
  return req.httpVersionMajor === 2 && stream?.endAfterHeaders === false;
}

/**
 * HTTP/0.9 (no headers, no Host) is not served; an HTTP/1.0 request with Transfer-Encoding has
 * faulty framing (RFC 9112 6.1: a 1.0 hop before us may have read its body differently).
 */
function soundFraming(req: DownstreamRequest): boolean {
  if (req.httpVersionMajor === 0) return false;
  return !(req.httpVersionMajor === 1 && req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined);
}

export class HttpProxy {
  constructor(private readonly deps: ProxyDeps) {}

  /** The request listener for one entry (listen port, and the TLS filter chain when terminated). */
  handler(entry: HttpEntry): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      try {
        this.serve(req, res, { req, res }, entry);
      } catch (err) {
        // A bug must cost one request, never the process.
        res.destroy(asError(err));
      }
    };
  }

  /**
   * An HTTP/2 stream the client reset before it was served (the request is skipped, see the listener
   * manager): still one access-log line and one request in the metrics, code 0 and flag DC, as Envoy
   * logs every stream it saw.
   */
  abandoned(entry: HttpEntry): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      try {
        const ex = new Exchange(req, res, { req, res }, this.deps, entry.scheme);
        ex.entry = entry;
        ex.disconnected();
      } catch {
        // nothing to record from a stream whose connection is gone
      }
    };
  }

  /** The request listener of the HTTP/1.1 lane for one entry. */
  laneHandler(entry: HttpEntry): (req: H1Request, res: H1Response) => void {
    return (req, res) => {
      try {
        this.serve(req, res, undefined, entry);
      } catch (err) {
        res.destroy(asError(err)); // a bug must cost one request, never the process
      }
    };
  }

  routeInput(req: DownstreamRequest, scheme: 'http' | 'https'): RouteInput {
    return { authority: authorityOf(req.headers) ?? '', path: req.url ?? '/', method: req.method ?? 'GET', scheme, headers: req.headers };
  }

  private serve(req: DownstreamRequest, res: DownstreamResponse, node: NodeIo | undefined, entry: HttpEntry): void {
    const scheme = entry.scheme;
    // Routing, the upstream and the access log see the normalized path (and an absolute-form target's authority).
    const target = requestTarget(req.url ?? '/');
    if (target.error === undefined) {
      req.url = target.path;
      if (target.authority !== undefined) req.headers.host = target.authority;
    }
    const ex = new Exchange(req, res, node, this.deps, scheme);
    ex.entry = entry;
    if (entry.inboundCluster !== undefined) {
      // The caller's peer metadata names it in metrics; the application never sees it (Envoy's
      // metadata-exchange filter consumes it).
      ex.source = peerWorkloadFromHeader(req.headers[PEER_METADATA_HEADER]);
      delete ex.upstreamHeaders[PEER_METADATA_HEADER];
      delete ex.upstreamHeaders[PEER_METADATA_ID_HEADER];
      // The exchange's answer, to a caller that took part in it (never to one outside the mesh):
      // who served it, for the caller's destination_* labels.
      const own = this.deps.peerHeaders;
      if (ex.source && own) ex.extraResponseHeaders.push(PEER_METADATA_HEADER, own.metadata, PEER_METADATA_ID_HEADER, own.id);
    }
    res.on('close', () => {
      if (!ex.finished) {
        ex.onDownstreamClose?.();
        ex.disconnected();
      }
    });
    if (target.error !== undefined || !validAuthority(authorityOf(req.headers)) || !soundFraming(req)) return ex.fail('DOWNSTREAM_PROTOCOL_ERROR');
    // Codings before the final chunked (gzip, chunked; chunked twice) pass the parser, which decodes
    // only the chunks: refused as Envoy does (other values the parser itself refuses with 400).
    const te = req.headers['transfer-encoding'];
    if (te !== undefined && te.includes(',')) return ex.fail('UNSUPPORTED_TRANSFER_ENCODING');
    const snapshot = this.deps.store.current;
    const decision = decide(routeTableFor(snapshot, entry, entry.chain === undefined ? undefined : chainKeysOf(req.socket)), this.routeInput(req, scheme));
    if (!decision) return ex.fail('NO_ROUTE');
    if (decision.requireTls) {
      ex.rec.responseCodeDetails = 'direct_response';
      ex.localReply(301, '', { location: httpsRedirectLocation(authorityOf(req.headers) ?? '', req.url ?? '/') });
      return ex.record();
    }
    const { route } = decision;
    ex.rec.routeName = route.name;
    ex.route = route;
    const preflight = corsPreflight(route.cors, req.method ?? '', req.headers);
    if (preflight) {
      ex.rec.responseCodeDetails = 'cors_response';
      ex.localReply(200, '', preflight);
      return ex.record();
    }
    const fault = decideFault(route.fault, this.deps.random(), this.deps.random());
    // Envoy's fault filter delays first, then aborts (logged DI,FI when both apply).
    const after = () => {
      if (ex.finished) return;
      if (fault.abort) return ex.faultAbort(fault.abort.status, fault.abort.grpc);
      this.act(ex, route, scheme);
    };
    if (fault.delayMs === undefined) return after();
    ex.rec.responseFlags.push('DI');
    const timer = setTimeout(after, fault.delayMs);
    res.once('close', () => clearTimeout(timer));
  }

  /** The route's action, once faults have had their say. */
  private act(ex: Exchange, route: CompiledRoute, scheme: 'http' | 'https'): void {
    const req = ex.req;
    const action = route.action;
    if (action.type === 'redirect') {
      ex.rec.responseCodeDetails = 'direct_response';
      ex.localReply(action.redirect.redirectCode ?? 301, '', { location: redirectLocation(action.redirect, authorityOf(req.headers) ?? '', req.url ?? '/', scheme) });
      return ex.record();
    }
    if (action.type === 'direct') {
      ex.rec.responseCodeDetails = 'direct_response';
      ex.localReply(action.status, action.body);
      return ex.record();
    }
    if (action.type === 'passthrough') {
      // Sidecar allow_any: straight to where the application was connecting (PassthroughCluster).
      const dst = ex.dst;
      if (!dst) return ex.fail('NO_ROUTE');
      const passthrough = this.deps.registry.passthrough(ex.entry?.inboundCluster);
      ex.setDestination(passthrough);
      if (dst.address) return this.forward(ex, route, passthrough, req.url ?? '/', this.deps.registry.endpointFor(dst.address, dst.port));
      // Per-port capture: the address is unknown, the Host names it.
      return this.forwardResolved(ex, route, passthrough, req.url ?? '/', dst.port);
    }
    const dest = pickDestination(action.destinations, action.totalWeight, this.deps.random());
    const cluster = dest && this.deps.registry.get(dest.cluster);
    if (!cluster) return ex.fail('CLUSTER_NOT_FOUND');
    ex.setDestination(cluster);
    const peer = this.deps.peerHeaders;
    if (peer && cluster.def.meshInternal) {
      // Istio's metadata exchange: an Istio sidecar in front of the service names us in its metrics.
      ex.upstreamHeaders[PEER_METADATA_HEADER] = peer.metadata;
      ex.upstreamHeaders[PEER_METADATA_ID_HEADER] = peer.id;
    }
    // Original-destination clusters: a sidecar goes where the application dialled; without endpoints
    // a gateway (or per-port capture) resolves the request's own host.
    const dialled = cluster.def.originalDstPort !== undefined ? ex.dst : undefined;
    const toDialled = dialled !== undefined && dialled.address !== '';
    const resolveHost = !toDialled && cluster.def.originalDstPort !== undefined && cluster.endpoints.length === 0;
    if (cluster.endpoints.length === 0 && !toDialled && !resolveHost) return ex.fail('NO_HEALTHY_UPSTREAM');
    // Request headers as the route and the chosen destination say, then the rewrites.
    const path = shapeUpstreamRequest(ex.upstreamHeaders, route, dest, req.url ?? '/');
    ex.responseOps = route.headers?.response || dest.headers?.response ? [route.headers?.response, dest.headers?.response] : NO_RESPONSE_OPS;
    if (cluster.def.hash) {
      const hash = hashKeyOf(cluster.def.hash, req.headers, ex.remoteIp, req.url ?? '/', freshCookieValue);
      ex.hashKey = hash.key;
      if (hash.setCookie) ex.extraResponseHeaders.push('set-cookie', hash.setCookie);
    }
    if (toDialled) return this.forward(ex, route, cluster, path, this.deps.registry.endpointFor(dialled.address, dialled.port));
    if (resolveHost) return this.forwardResolved(ex, route, cluster, path, dialled ? dialled.port : cluster.def.originalDstPort!);
    this.forward(ex, route, cluster, path, undefined);
  }

  /** Forward to the request's own Host, resolved now, on `port`. */
  private forwardResolved(ex: Exchange, route: CompiledRoute, cluster: Cluster, path: string, port: number): void {
    const host = typeof ex.upstreamHeaders['host'] === 'string' ? hostWithoutPort(ex.upstreamHeaders['host']).replace(/^\[|\]$/g, '') : '';
    this.deps.registry.resolveEndpoint(host, port).then((endpoint) => {
      if (ex.finished) return;
      if (!endpoint) return ex.fail('DNS_RESOLUTION_FAILED');
      this.forward(ex, route, cluster, path, endpoint);
    }, () => {
      if (!ex.finished) ex.fail('DNS_RESOLUTION_FAILED');
    });
  }

  private forward(ex: Exchange, route: CompiledRoute, cluster: Cluster, path: string, endpoint: Endpoint | undefined): void {
    // The HTTP/1.1 lane's requests come whole (a small body read with the head); node's stream theirs.
    const req = ex.node?.req;
    if (!req) return new Forwarder(this.deps, ex, route, cluster, ex.req.body ?? null, path, endpoint).start();
    if (!hasBody(req)) return new Forwarder(this.deps, ex, route, cluster, null, path, endpoint).start();
    const length = Number(req.headers['content-length']);
    if (!(length <= REPLAYABLE_BODY_BYTES)) return new Forwarder(this.deps, ex, route, cluster, req, path, endpoint).start();
    // A small body is read whole first, so a retry or a mirror can send it again.
    readBody(req, REPLAYABLE_BODY_BYTES, (n) => ex.addRequestBody(n)).then((body) => {
      if (ex.finished) return;
      new Forwarder(this.deps, ex, route, cluster, body, path, endpoint).start();
    }, () => {
      if (!ex.finished) ex.fail('DOWNSTREAM_PROTOCOL_ERROR');
    });
  }
}

/** Pool options of a cluster, built once per (immutable) cluster definition and address family: not per request. */
const poolOptionsMemo = new WeakMap<ClusterDef, PoolOptions | Error>();
const poolOptionsMemo6 = new WeakMap<ClusterDef, PoolOptions | Error>();

function poolOptionsOf(def: ClusterDef, endpoint: Endpoint): PoolOptions | Error {
  const v6 = endpoint.address.includes(':');
  const memo = v6 ? poolOptionsMemo6 : poolOptionsMemo;
  let o = memo.get(def);
  if (o) return o;
  const tls = def.upstreamTls ? upstreamTlsOptions(def.upstreamTls, def.host) : undefined;
  const localAddress = inboundSourceAddress(def.name, endpoint.address);
  o = tls instanceof Error ? tls : {
    connectTimeoutMs: def.connectTimeoutMs,
    maxConnections: def.policy.connectionPool?.tcp?.maxConnections,
    maxRequestsPerConnection: def.breaker.maxRequestsPerConnection,
    idleTimeoutMs: def.breaker.idleTimeoutMs,
    ...(def.keepaliveMs !== undefined ? { keepaliveMs: def.keepaliveMs } : {}),
    ...(localAddress ? { localAddress } : {}),
    ...(tls ? { tls } : {}),
    ...(def.http2 ? { http2: true } : {}),
  };
  memo.set(def, o);
  return o;
}

/** Attempts, retries and timeouts for one routed request. */
class Forwarder {
  private attempts = 0;
  /** The first attempt's endpoint; the Set of every tried one is made only when a retry needs it. */
  private firstTried: Endpoint | undefined;
  private moreTried: Set<Endpoint> | undefined;
  private abortAttempt: ((err?: Error) => void) | undefined;
  private routeTimer: NodeJS.Timeout | undefined;
  private tryTimer: NodeJS.Timeout | undefined;
  private current = 0; // id of the attempt whose callbacks count
  private readonly policy: RetryPolicy;
  private readonly path: string;
  /** A small body, read whole: sent again by a retry or a mirror. */
  private readonly replayable: Buffer | null;
  /** The request whose body streams upstream once (never retried, never mirrored). */
  private readonly streamed: IncomingMessage | undefined;

  constructor(
    private readonly deps: ProxyDeps,
    private readonly ex: Exchange,
    private readonly route: CompiledRoute,
    private readonly cluster: Cluster,
    /** null: no body; a Buffer: small, read whole (replayable); the request itself: streamed once, never retried. */
    body: Buffer | IncomingMessage | null,
    path: string,
    /** An original-destination endpoint, used for every attempt instead of the load balancer. */
    private readonly fixed?: Endpoint,
  ) {
    this.policy = route.retry;
    this.path = path;
    const whole = body === null || Buffer.isBuffer(body);
    this.replayable = whole ? body : null;
    this.streamed = whole ? undefined : body;
  }

  start(): void {
    this.ex.onDownstreamClose = () => {
      this.stopTimers();
      this.current = -1;
      this.abortAttempt?.(new Error('downstream closed'));
    };
    if (this.route.timeoutMs > 0) {
      this.whenRequestComplete(() => {
        if (!this.ex.finished) this.routeTimer = setTimeout(() => this.onRouteTimeout(), this.route.timeoutMs);
      });
    }
    this.attempt();
    this.mirror();
  }

  /**
   * Run `fn` once the client has sent its whole request: Envoy starts the route and per-try timeouts
   * there, so a slow upload of a large (streamed) body does not count against them. Small bodies are
   * read whole before forwarding starts.
   */
  private whenRequestComplete(fn: () => void): void {
    const req = this.streamed;
    if (!req || req.complete) fn();
    else req.once('end', fn);
  }

  /** Copies to the mirror destinations: fire and forget, never touching the main request. */
  private mirror(): void {
    const mirrors = this.route.mirrors;
    if (!mirrors || this.streamed) return; // a streamed body cannot be sent twice
    for (const m of mirrors) {
      if (this.deps.random() >= m.fraction) continue;
      const cluster = this.deps.registry.get(m.cluster);
      const endpoint = cluster?.pick();
      if (!cluster || !endpoint) continue;
      const headers = { ...this.ex.upstreamHeaders };
      const host = typeof headers['host'] === 'string' ? headers['host'] : '';
      if (!this.deps.store.current.mesh.disableShadowHostSuffix) headers['host'] = shadowHost(host);
      delete headers['x-envoy-attempt-count'];
      try {
        const poolOptions = poolOptionsOf(cluster.def, endpoint);
        if (poolOptions instanceof Error) continue;
        // A mirror gets the route's timeout (Envoy's shadow requests do): one that never answers is
        // aborted then, not left holding its connection for ever.
        const timeoutMs = this.route.timeoutMs;
        let timer: NodeJS.Timeout | undefined;
        this.deps.registry.pool(endpoint, poolOptions).dispatch(
          { path: this.path, method: this.ex.req.method ?? 'GET', headers, body: this.replayable, upgrade: null, headersTimeout: 0, bodyTimeout: 0 },
          {
            onConnect: (abort) => {
              if (timeoutMs > 0) timer = setTimeout(() => abort(new GatewayError('UPSTREAM_TIMEOUT')), timeoutMs);
            },
            onHeaders: () => true,
            onData: () => true,
            onComplete: () => clearTimeout(timer),
            onError: () => clearTimeout(timer),
          },
        );
        cluster.stats.inc('upstream_rq_total');
      } catch {
        // a mirror can never fail the main request
      }
    }
  }

  private stopTimers(): void {
    if (this.routeTimer) clearTimeout(this.routeTimer);
    if (this.tryTimer) clearTimeout(this.tryTimer);
    this.routeTimer = this.tryTimer = undefined;
  }

  private onRouteTimeout(): void {
    this.routeTimer = undefined;
    if (this.ex.finished) return;
    this.cluster.stats.inc('upstream_rq_timeout');
    this.current = -1;
    this.abortAttempt?.(new GatewayError('UPSTREAM_TIMEOUT'));
    if (this.ex.headersSent) {
      this.ex.rec.responseFlags.push('UT');
      this.ex.res.destroy();
      this.ex.record();
    } else {
      this.ex.fail('UPSTREAM_TIMEOUT');
    }
  }

  private attempt(): void {
    // A retry holds one of the cluster's maxRetries slots for as long as its attempt runs.
    let holdsRetrySlot = this.retrySlot;
    this.retrySlot = false;
    const releaseSlot = () => {
      if (holdsRetrySlot) this.cluster.releaseRetry();
      holdsRetrySlot = false;
    };
    const tried = this.firstTried && (this.moreTried ??= new Set([this.firstTried]));
    const endpoint = this.fixed ?? this.cluster.pick(tried, this.ex.hashKey);
    if (!endpoint) {
      releaseSlot();
      return this.ex.fail('NO_HEALTHY_UPSTREAM');
    }
    // Unusable TLS material fails the request before it takes a circuit-breaker slot.
    const poolOptions = poolOptionsOf(this.cluster.def, endpoint);
    if (poolOptions instanceof Error) {
      releaseSlot();
      this.stopTimers();
      this.ex.rec.upstreamHost = endpoint.hostPort;
      this.ex.rec.upstreamTransportFailureReason = poolOptions.message;
      return this.ex.fail('CONNECT_FAILURE');
    }
    if (this.cluster.admit() === 'overflow') {
      releaseSlot();
      this.stopTimers();
      return this.ex.fail('OVERFLOW');
    }
    if (tried) tried.add(endpoint);
    else this.firstTried = endpoint;
    this.attempts += 1;
    const id = ++this.current;
    const { ex, cluster } = this;
    ex.upstreamHeaders['x-envoy-attempt-count'] = String(this.attempts);
    ex.rec.upstreamHost = endpoint.hostPort;
    ex.endpoint = endpoint;
    const pool = this.deps.registry.pool(endpoint, poolOptions);
    endpoint.active += 1;
    endpoint.rqTotal += 1;
    cluster.stats.inc('upstream_rq_total');
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      endpoint.active -= 1;
      cluster.release();
      releaseSlot();
      return true;
    };
    if (this.policy.perTryTimeoutMs > 0) {
      if (this.tryTimer) clearTimeout(this.tryTimer);
      this.whenRequestComplete(() => {
        if (id !== this.current || ex.finished) return;
        this.tryTimer = setTimeout(() => {
          if (id !== this.current || ex.headersSent) return;
          cluster.stats.inc('upstream_rq_per_try_timeout');
          this.abortAttempt?.(new GatewayError('UPSTREAM_PER_TRY_TIMEOUT'));
        }, this.policy.perTryTimeoutMs);
      });
    }
    const started = performance.now();
    const streamed = this.streamed;
    const body = streamed ? Readable.from(counted(streamed, ex), { objectMode: false }) : this.replayable;
    let resume: (() => void) | undefined;
    const onDrain = () => resume?.();
    /** The answer has no body (204, 304): undici's complaint about its Content-Length is no error. */
    let bodiless = false;
    const complete = (trailers: Buffer[] | string[] | null): void => {
      this.stopTimers();
      cluster.stats.inc('upstream_rq_completed');
      // The upstream's trailers go on to the client (gRPC's grpc-status lives there): HTTP/2, or
      // HTTP/1.1 with a chunked response (Node drops them otherwise, as there is nowhere to put them).
      const tail = trailerObject(trailers);
      if (tail) {
        const status = tail['grpc-status'];
        if (ex.grpc && status !== undefined) ex.grpcStatus = Array.isArray(status) ? status[0] : status;
      }
      try {
        if (tail) ex.res.addTrailers(tail);
        ex.res.end();
      } catch {
        // An HTTP/2 head held for end() that node:http2 refuses there (a single-value header the
        // upstream sent twice), or trailers node refuses (a control character in a value): reset the
        // client, as when a head is refused at once (UC). Never a response left without its end.
        ex.rec.responseFlags.push('UC');
        ex.res.destroy();
      }
      ex.record();
    };
    const handler: Dispatcher.DispatchHandler = {
      onConnect: (abort) => {
        if (id !== this.current) return abort(new Error('superseded'));
        this.abortAttempt = abort;
        claimUpstreamSocket(ex.rec);
      },
      onHeaders: (status, raw, res, _text) => {
        if (id !== this.current) return false;
        if (status < 200) return true;
        const framing = framingOf(raw);
        if (framing === 'coded') {
          // gzip, chunked (or chunked twice): the parser removes only the chunking, so the body would
          // reach the client still coded, with nothing saying so. Envoy answers 502 UPE.
          this.abortAttempt?.(new GatewayError('UPSTREAM_PROTOCOL_ERROR', 'unsupported transfer-encoding'));
          return false;
        }
        cluster.recordOutcome(endpoint, status < 500 ? 'success' : status >= 502 && status <= 504 ? 'gateway-error' : '5xx');
        cluster.stats.inc(`upstream_rq_${status}`);
        cluster.stats.inc(`upstream_rq_${Math.floor(status / 100)}xx`);
        if (retryableStatus(status, this.policy) || retryableGrpc(grpcStatusOf(raw), this.policy)) {
          const verdict = this.retryVerdict();
          this.debugAttempt(endpoint.hostPort, `answered ${status}`, verdict === 'taken' ? 'retrying' : `not retried (${verdict})`);
          if (verdict === 'taken') {
            settle();
            this.abortAttempt?.(new Error('retrying'));
            this.retry();
            return false;
          }
          // No retry left for a retriable answer: Envoy passes it on flagged URX (retries used up)
          // or UO (the cluster's maxRetries budget refused one).
          if (verdict === 'budget') ex.rec.responseFlags.push('UO');
          else if (verdict === 'attempts' && this.attempts > 1) ex.rec.responseFlags.push('URX');
        }
        if (this.tryTimer) clearTimeout(this.tryTimer);
        if (cluster.def.meshInternal) ex.upstreamPeer = peerWorkloadFromRaw(raw);
        resume = res;
        if (ex.grpc) ex.grpcStatus = grpcStatusOf(raw); // a trailers-only response's
        bodiless = status === 204 || status === 304;
        ex.writeUpstreamHead(status, raw, Math.round(performance.now() - started), cluster.def.http2 === true || framing !== 'length');
        return true;
      },
      onData: (chunk) => {
        if (id !== this.current) return false;
        ex.rec.bytesSent += chunk.length;
        if (ex.res.write(chunk)) return true;
        ex.res.once('drain', onDrain);
        return false;
      },
      onComplete: (trailers) => {
        if (id !== this.current || !settle()) return;
        complete(trailers);
      },
      onError: (err) => {
        if (!settle() || id !== this.current) return;
        // undici refuses a 304 that names the representation's Content-Length (RFC 9110 8.6 allows
        // it) and a 204 with one; neither has a body, so the answer is whole.
        if (bodiless && (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return complete(null);
        if (this.tryTimer) clearTimeout(this.tryTimer);
        const gerr = fromUpstreamError(err);
        if (ERRORS[gerr.code].party === 'upstream') cluster.recordOutcome(endpoint, 'local-origin');
        if (gerr.code === 'CONNECT_FAILURE' || gerr.code === 'CONNECT_TIMEOUT') {
          cluster.stats.inc('upstream_cx_connect_fail');
          ex.rec.upstreamTransportFailureReason = transportFailureReason(err);
        }
        if (ex.headersSent) {
          // The response already started: all we can do is reset the client, as Envoy does.
          this.stopTimers();
          const flag = ERRORS[gerr.code].flag;
          ex.rec.responseFlags.push(flag === 'UT' || flag === 'UPE' ? flag : 'UC');
          ex.res.destroy();
          ex.record();
          return;
        }
        const again = retryableError(gerr.code, this.policy) && this.takeRetrySlot();
        this.debugAttempt(endpoint.hostPort, `${gerr.code}: ${asError(err).message}`, again ? 'retrying' : 'giving up');
        if (again) return this.retry();
        this.stopTimers();
        const retried = this.attempts > 1;
        const flags = retried && retryableError(gerr.code, this.policy) ? ['URX'] : [];
        ex.fail(gerr.code, flags, replyBody(gerr, retried, ex.rec.upstreamTransportFailureReason));
      },
    };
    pool.dispatch({
      path: this.path,
      method: ex.req.method ?? 'GET',
      headers: ex.upstreamHeaders,
      body,
      upgrade: null,
      headersTimeout: 0,
      bodyTimeout: 0,
    }, handler);
  }

  /** A debug line for an attempt that failed or will be retried. */
  private debugAttempt(endpoint: string, outcome: string, next: string): void {
    this.deps.log?.debug({
      cluster: this.cluster.name, endpoint, attempt: this.attempts, of: this.policy.attempts + 1,
      requestId: this.ex.upstreamHeaders['x-request-id'], authority: this.ex.rec.authority,
    }, `upstream attempt ${this.attempts} to ${endpoint} in ${this.cluster.name}: ${outcome}; ${next}`);
  }

  /** A maxRetries slot taken for the next attempt (handed to it by attempt()). */
  private retrySlot = false;

  /** May this request be retried (body replayable, attempts left, the cluster's retry budget)? Takes the slot. */
  private takeRetrySlot(): boolean {
    return this.retryVerdict() === 'taken';
  }

  /** takeRetrySlot, saying why not: the attempts are used up, the maxRetries budget refused, or the body or request rule it out. */
  private retryVerdict(): 'taken' | 'attempts' | 'budget' | 'other' {
    if (this.attempts > this.policy.attempts) return 'attempts';
    if (this.streamed || this.ex.finished) return 'other';
    if (!this.cluster.admitRetry()) return 'budget';
    this.retrySlot = true;
    return 'taken';
  }

  private retry(): void {
    this.cluster.stats.inc('upstream_rq_retry');
    const wait = backoffMs(this.attempts, this.deps.random());
    const id = this.current;
    setTimeout(() => {
      if (id !== this.current || this.ex.finished) {
        if (this.retrySlot) this.cluster.releaseRetry();
        this.retrySlot = false;
        return;
      }
      this.attempt();
    }, wait);
  }
}

/** Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON% for connect failures: `delayed connect error: 111`. */
export function transportFailureReason(err: unknown): string | undefined {
  const e = err as { errno?: number; code?: string; cause?: { errno?: number } };
  if (e?.code && isTlsHandshakeCode(e.code)) return `TLS_error: ${e.code}`; // Envoy: TLS_error:|...:CERTIFICATE_VERIFY_FAILED
  const errno = e?.errno ?? e?.cause?.errno;
  if (typeof errno === 'number') return `delayed connect error: ${Math.abs(errno)}`;
  if (e?.code === 'UND_ERR_CONNECT_TIMEOUT') return 'connect timeout';
  return undefined;
}

/** Envoy's reset reasons in reply bodies (a connect timeout reads as a connection failure there). */
const REPLY_REASONS: Partial<Record<ErrorCode, string>> = {
  CONNECT_FAILURE: 'remote connection failure',
  CONNECT_TIMEOUT: 'remote connection failure',
  UPSTREAM_RESET: 'connection termination',
  UPSTREAM_REMOTE_RESET: 'remote reset',
  UPSTREAM_REFUSED_STREAM: 'remote refused stream reset',
};

/** Current Envoy wording for connection failures, with the retry and transport reason. */
function replyBody(err: GatewayError, retried: boolean, transport: string | undefined): string | undefined {
  const reason = REPLY_REASONS[err.code];
  if (reason === undefined) return undefined;
  const lead = retried ? 'retried and the latest reset reason' : 'reset reason';
  const tail = transport && (err.code === 'CONNECT_FAILURE' || err.code === 'CONNECT_TIMEOUT') ? `, transport failure reason: ${transport}` : '';
  return `upstream connect error or disconnect/reset before headers. ${lead}: ${reason}${tail}`;
}
