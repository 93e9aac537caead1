// HTTP/2 toward one upstream endpoint, on our own framing (RFC 9113) and HPACK
// (gateway/http/hpack.ts): with prior knowledge (h2c) over a plain socket, or over mesh mTLS
// (ISTIO_MUTUAL, tls/upstream.ts meshTlsSocket) with h2 chosen by ALPN.
//
// Why not node:http2: every client stream there is a native object whose JS wrapper V8 cannot free
// in a young-generation GC, so each request's objects (the stream, its listeners, and through them
// the proxy's exchange) were promoted and left to full GCs: at Istio's 1000 req/s the sidecar ran a
// mark-compact every second and spent 240 µs of CPU per request, against 100 on HTTP/1.1, which put
// the sidecar -> egress gateway p99 over its target (docs/benchmarks.md). Why not undici's HTTP/2
// client: it is built on node:http2, and reports a stream reset like a lost connection, where Envoy
// tells REFUSED_STREAM (retried) and RST_STREAM (503 UR) apart.
//
// It speaks the part of undici's Dispatcher interface the proxy uses (dispatch with a handler of
// onConnect / onHeaders / onData / onComplete / onError, close, destroy, and the pool events
// 'connect', 'disconnect', 'connectionError'), so the proxy's attempts, retries, timeouts and
// accounting stay the same for HTTP/1.1 and HTTP/2. Other TLS upstreams (SIMPLE, MUTUAL) stay on
// undici, whose ALPN can fall back to HTTP/1.1; a mesh peer always speaks h2 on an HTTP/2 port.
//
// One connection carries every request (HTTP/2 multiplexes) up to the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS; beyond it a second one opens, as Envoy's HTTP/2 pool does (the
// proxy's circuit breaker bounds the requests, so the connections). `maxRequestsPerConnection`
// retires a connection after that many streams (it finishes what it carries, new streams go to a new
// one), as does the peer's GOAWAY; an idle connection closes after `idleTimeoutMs`.
//
// What is left out, on purpose: server push (SETTINGS_ENABLE_PUSH 0, a PUSH_PROMISE is a protocol
// error), priorities (read and ignored), our own PINGs and a SETTINGS-acknowledgement timeout (TCP
// keepalive and the idle timeout bound a dead peer), and Huffman or table indexing in what we send.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import type tls from 'node:tls';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { HOP_BY_HOP } from '../gateway/http/headers';
import { HeaderListTooLarge, HpackDecoder, HpackError, hpackEncode, type HeaderList } from '../gateway/http/hpack';
import { HEADER_VALUE_BAD, IdleTimer } from '../gateway/http/wire';
import { localAddressOf, plainUpstreamSocket, takeUpstreamClaim, type SocketClaim } from './upstream-socket';
import { tlsIdentitiesOf, type TlsIdentities } from '../tls/identities';
import { meshTlsSocket, type MeshSession } from '../tls/upstream';
import { asError, isConnectCode, undiciShapedError } from '../errors';

export interface H2cPoolOptions {
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxRequestsPerConnection?: number;
  readonly localAddress?: string;
  readonly keepaliveMs?: number;
  /**
   * ISTIO_MUTUAL toward a mesh peer (the DestinationRule's connection options): HTTP/2 over mTLS,
   * offered by ALPN as Istio's clients do (`h2`, `istio-h2`). A peer that does not choose h2 is a
   * connection failure: a mesh peer (Envoy, meshgate) always speaks it on an HTTP/2 port.
   */
  readonly tls?: tls.ConnectionOptions;
}

/** What we offer by ALPN on ISTIO_MUTUAL: HTTP/2 only, with Istio's marker for mesh mTLS (either chosen is HTTP/2). */
const MESH_H2_ALPN = ['h2', 'istio-h2'];

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

// Frame types, flags, settings and error codes (RFC 9113 6, 7).
const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;
const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;
export const H2_PROTOCOL_ERROR = 0x1;
const H2_FLOW_CONTROL_ERROR = 0x3;
const H2_FRAME_SIZE_ERROR = 0x6;
export const H2_REFUSED_STREAM = 0x7;
export const H2_CANCEL = 0x8;
const H2_COMPRESSION_ERROR = 0x9;
const H2_ENHANCE_YOUR_CALM = 0xb;

/** What we read: frames up to the protocol's default size (we never raise SETTINGS_MAX_FRAME_SIZE). */
const MAX_FRAME = 16_384;
/** Receive windows we grant: per stream, and for the connection. */
const STREAM_WINDOW = 1 << 20;
const CONNECTION_WINDOW = 1 << 24;
/** A response's header block, compressed (all its frames, 9 bytes counted for each frame's own
 * header, so empty CONTINUATIONs cannot pile up) and decoded (RFC 9113 accounting). */
const MAX_HEADER_BLOCK = 65_536;
const MAX_HEADER_LIST = 65_536;
/** Request body bytes queued on a stream before its source is paused. */
const BODY_QUEUE = 65_536;
/** Bytes waiting in the socket before request bodies stop being framed into it. */
const SOCKET_QUEUE = 262_144;
const MAX_STREAM_ID = 0x7fffffff;
const MAX_WINDOW = 0x7fffffff;
/** A header name as HTTP/2 carries it: a token, in lower case (RFC 9113 8.2.1). */
const LOWER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** Headers an HTTP/2 response may not carry (RFC 9113 8.2.2): it is malformed. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** What makes a response field (head or trailer) malformed, or undefined (RFC 9113 8.2). */
function fieldProblem(name: string, value: string, what: string): string | undefined {
  if (!LOWER_TOKEN.test(name)) return `${what} name ${JSON.stringify(name)}`;
  if (HEADER_VALUE_BAD.test(value)) return `a control character in ${what} ${name}`;
  if (CONNECTION_SPECIFIC.has(name)) return `connection-specific ${what} ${name}`;
  return undefined;
}

function frameHead(out: Buffer, at: number, length: number, type: number, flags: number, id: number): void {
  out.writeUIntBE(length, at, 3);
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(id, at + 5);
}

function frame(type: number, flags: number, id: number, payload?: Buffer): Buffer {
  const length = payload ? payload.length : 0;
  const out = Buffer.allocUnsafe(9 + length);
  frameHead(out, 0, length, type, flags, id);
  if (payload) payload.copy(out, 9);
  return out;
}

function u32Frame(type: number, id: number, value: number): Buffer {
  const out = Buffer.allocUnsafe(13);
  frameHead(out, 0, 4, type, 0, id);
  out.writeUInt32BE(value, 9);
  return out;
}

/** A stream error of the upstream's making: its answer broke HTTP/2's rules (502 UPE). */
function malformed(message: string): Error {
  return undiciShapedError('ERR_H2_MALFORMED', `malformed HTTP/2 response: ${message}`);
}

/** One request and its response on a connection. */
class Stream {
  id = 0;
  /** headers: awaiting the response head; body: reading DATA; done: handler told (complete or error). */
  phase: 'headers' | 'body' | 'done' = 'headers';
  /** The request is fully sent (END_STREAM written). */
  sent = false;
  sendWindow = 0;
  recvWindow = STREAM_WINDOW;
  /** Bytes delivered and not yet given back to the peer by WINDOW_UPDATE. */
  unacked = 0;
  paused = false;
  /** Data that came while the handler was paused. */
  held: Buffer[] = [];
  /** END_STREAM came while the handler was paused: the stream is off the wire, its data held. */
  heldEnd = false;
  expected: number | undefined;
  received = 0;
  trailers: string[] = [];
  /** Request body to send: queued chunks, whether it has ended, and its source if streamed. */
  body: Buffer[] = [];
  bodyBytes = 0;
  bodyEnded = false;
  source: Readable | undefined;
  /** Told the local address of the connection when the response head comes (%UPSTREAM_LOCAL_ADDRESS%). */
  claim: SocketClaim | undefined;
  private onSourceData: ((chunk: Buffer | string) => void) | undefined;
  private onSourceEnd: (() => void) | undefined;
  private onSourceError: ((err: Error) => void) | undefined;

  constructor(
    readonly conn: Connection,
    readonly headerBlock: Buffer,
    readonly bodyless: boolean,
    readonly handler: Dispatcher.DispatchHandler,
  ) {}

  /** Take the request body: none, whole, or streamed from a Readable (paused while the queue is full). */
  setBody(body: Buffer | Readable | string | null | undefined): void {
    if (body === null || body === undefined) {
      this.bodyEnded = true;
      return;
    }
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      if (buf.length > 0) this.body.push(buf);
      this.bodyBytes = buf.length;
      this.bodyEnded = true;
      return;
    }
    this.source = body;
    this.onSourceData = (chunk) => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (buf.length === 0) return;
      this.body.push(buf);
      this.bodyBytes += buf.length;
      if (this.bodyBytes >= BODY_QUEUE) body.pause();
      this.conn.flushBody(this);
    };
    this.onSourceEnd = () => {
      this.bodyEnded = true;
      this.conn.flushBody(this);
    };
    this.onSourceError = (err) => {
      this.conn.reset(this, H2_CANCEL);
      this.fail(err);
    };
    body.on('data', this.onSourceData);
    body.once('end', this.onSourceEnd);
    body.once('error', this.onSourceError);
  }

  /** The queue has room again: let a streamed body flow. */
  drained(): void {
    if (this.source && !this.bodyEnded && this.bodyBytes < BODY_QUEUE && this.phase !== 'done') this.source.resume();
  }

  detachSource(): void {
    const s = this.source;
    if (!s) return;
    if (this.onSourceData) s.removeListener('data', this.onSourceData);
    if (this.onSourceEnd) s.removeListener('end', this.onSourceEnd);
    if (this.onSourceError) s.removeListener('error', this.onSourceError);
    // A body that failed later must not become an unhandled 'error' event.
    s.on('error', () => {});
    this.source = undefined;
  }

  /** Tell the request's record which connection carries it, once that is known (%UPSTREAM_LOCAL_ADDRESS%, principals). */
  fillClaim(): void {
    if (!this.claim || this.conn.localAddress === undefined) return;
    this.claim.upstreamLocalAddress = this.conn.localAddress;
    if (this.conn.identities) this.claim.upstreamIdentities = this.conn.identities;
  }

  /** Ended for the handler (read through a getter: a handler callback may end it). */
  get over(): boolean {
    return this.phase === 'done';
  }

  /** Run a handler callback; one that throws ends this request, never the process (as in undici). */
  guard<T>(call: () => T): T | undefined {
    try {
      return call();
    } catch (err) {
      this.conn.reset(this, H2_CANCEL);
      this.fail(asError(err));
      return undefined;
    }
  }

  fail(err: Error): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    this.conn.forget(this);
    try {
      this.handler.onError?.(err);
    } catch {
      // the handler's own failure must not escape into a socket event (it would end the process)
    }
  }

  /** A header block for this stream: the response head, an informational head, or trailers. */
  onHeaders(fields: HeaderList, endStream: boolean): void {
    if (this.phase === 'done') return;
    if (this.phase === 'body') return this.onTrailers(fields, endStream);
    let status = -1;
    const raw: string[] = [];
    let cl: string | undefined;
    for (let i = 0; i < fields.length; i++) {
      const [name, value] = fields[i]!;
      if (name.charCodeAt(0) === 58 /* : */) {
        if (name !== ':status' || status !== -1 || raw.length > 0 || !/^\d{3}$/.test(value)) return this.malformed(`pseudo-header ${name}`);
        status = Number(value);
        continue;
      }
      const problem = fieldProblem(name, value, 'header');
      if (problem) return this.malformed(problem);
      if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value) || (cl !== undefined && cl !== value)) return this.malformed('content-length');
        cl = value;
      }
      raw.push(name, value);
    }
    if (status < 100) return this.malformed('no :status');
    if (status < 200) {
      // 1xx: informational, the real answer follows (101 has no place in HTTP/2).
      if (status === 101 || endStream) return this.malformed(`status ${status}`);
      return;
    }
    const bodyless = this.bodyless || status === 204 || status === 304;
    if (!bodyless && cl !== undefined) this.expected = Number(cl);
    this.phase = 'body';
    if (this.guard(() => this.handler.onHeaders?.(status, raw as unknown as Buffer[], () => this.resume(), '')) === false) this.paused = true;
    if (this.over) return;
    if (endStream) this.end();
  }

  private onTrailers(fields: HeaderList, endStream: boolean): void {
    if (!endStream) return this.malformed('a header block after the head that does not end the stream');
    const trailers: string[] = [];
    for (const [name, value] of fields) {
      const problem = fieldProblem(name, value, 'trailer');
      if (problem) return this.malformed(problem);
      trailers.push(name, value);
    }
    this.trailers = trailers;
    this.end();
  }

  onData(data: Buffer, flowBytes: number, endStream: boolean): void {
    if (this.phase === 'done') return;
    if (this.phase !== 'body') return this.malformed('DATA before the response head');
    this.received += data.length;
    if (this.expected !== undefined ? this.received > this.expected : this.bodyless && this.received > 0) {
      this.conn.reset(this, H2_PROTOCOL_ERROR);
      return this.fail(undiciShapedError('UND_ERR_RES_CONTENT_LENGTH_MISMATCH', `response body of more than ${this.expected ?? 0} bytes`));
    }
    if (this.paused) {
      if (data.length > 0) this.held.push(data);
      this.unacked += flowBytes;
      if (endStream) this.end();
      return;
    }
    if (data.length > 0 && this.guard(() => this.handler.onData?.(data)) === false) this.paused = true;
    if (this.over) return;
    if (endStream) return this.end();
    this.unacked += flowBytes;
    if (!this.paused) this.conn.credit(this);
  }

  /** The handler may take data again: what was held first, then window for more. */
  resume(): void {
    if (!this.paused || this.phase === 'done') return;
    this.paused = false;
    while (this.held.length > 0) {
      const chunk = this.held.shift()!;
      if (this.guard(() => this.handler.onData?.(chunk)) === false) this.paused = true;
      if (this.over || this.paused) return;
    }
    if (this.heldEnd) return this.end();
    this.conn.credit(this);
  }

  /** END_STREAM from the upstream: the response is whole if its length is right. */
  private end(): void {
    if (this.over) return;
    if (this.paused) {
      // Off the wire now (its slot free, a reset or a closing connection no longer concerns it);
      // complete when the handler takes what is held.
      if (!this.heldEnd) {
        this.heldEnd = true;
        this.conn.remoteEnd(this);
      }
      return;
    }
    if (this.expected !== undefined && this.received !== this.expected) {
      this.conn.reset(this, H2_PROTOCOL_ERROR);
      return this.fail(undiciShapedError('UND_ERR_RES_CONTENT_LENGTH_MISMATCH', `response body of ${this.received} bytes, content-length ${this.expected}`));
    }
    // Answered before the request was all sent (an early 413, say): the rest is not wanted.
    if (!this.sent) this.conn.reset(this, H2_CANCEL);
    this.phase = 'done';
    this.conn.forget(this);
    const trailers = this.trailers;
    try {
      this.handler.onComplete?.(trailers);
    } catch {
      // as in fail(): nothing of the handler's escapes
    }
  }

  private malformed(message: string): void {
    this.conn.reset(this, H2_PROTOCOL_ERROR);
    this.fail(malformed(message));
  }
}

/** One TCP connection to the upstream and the streams on it. */
class Connection {
  readonly socket: net.Socket;
  connected = false;
  /** Takes no new streams: GOAWAY heard, maxRequestsPerConnection reached, or the pool is closing. */
  retired = false;
  closed = false;
  /** Why the connection could not be made (set before streams hear of it). */
  failure: Error | undefined;
  /** This end of the connection, once connected (%UPSTREAM_LOCAL_ADDRESS%). */
  localAddress: string | undefined;
  /** Over mTLS: both ends' SPIFFE identities (the metrics' principals). */
  identities: TlsIdentities | undefined;
  /** Streams opened on it, for maxRequestsPerConnection. */
  opened = 0;
  readonly streams = new Map<number, Stream>();
  /** Streams whose response has all come while their handler was paused: off the wire, not done. */
  private readonly draining = new Set<Stream>();
  /** Streams with body bytes that wait for flow-control window or a drained socket. */
  private readonly blocked = new Set<Stream>();
  private nextId = 1;
  private peerMaxStreams = 100;
  private peerInitialWindow = 65_535;
  private peerMaxFrame = 16_384;
  private sendWindow = 65_535;
  private recvWindow = CONNECTION_WINDOW;
  private connUnacked = 0;
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private pending: Buffer | undefined;
  /** A header block being read: its stream, whether it ends the stream, its fragments. */
  private block: { id: number; endStream: boolean; parts: Buffer[]; size: number } | undefined;
  private readonly idle: IdleTimer;
  private readonly connectTimer: NodeJS.Timeout;

  constructor(private readonly pool: H2cPool, private readonly opts: H2cPoolOptions, sessions: Map<string, MeshSession>) {
    let socket: net.Socket;
    try {
      socket = opts.tls
        ? meshTlsSocket(opts.tls, sessions, { host: opts.host, port: opts.port, localAddress: opts.localAddress, alpn: MESH_H2_ALPN, keepaliveMs: opts.keepaliveMs })
        : plainUpstreamSocket(opts, (chunk) => this.read(chunk));
    } catch (err) {
      // Material node refuses at once (a mesh key that does not match its certificate, mid-rotation):
      // a connection failure (503 UF) for the requests, never a throw out of dispatch.
      this.failure = undiciShapedError('ERR_TLS_CONFIG', `the mesh TLS material was refused: ${asError(err).message}`, err);
      socket = new net.Socket();
      const failure = this.failure;
      process.nextTick(() => socket.destroy(failure));
    }
    this.socket = socket;
    this.connectTimer = setTimeout(() => {
      this.failure = undiciShapedError('UND_ERR_CONNECT_TIMEOUT', `connect timeout after ${opts.connectTimeoutMs} ms`);
      socket.destroy(this.failure);
    }, opts.connectTimeoutMs);
    this.idle = new IdleTimer(opts.idleTimeoutMs, () => this.inFlight > 0, () => this.close());
    // Our preface and settings go out at once (RFC 9113 3.4); streams may follow before the peer's.
    const settings = Buffer.allocUnsafe(18);
    settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
    settings.writeUInt32BE(STREAM_WINDOW, 8);
    settings.writeUInt16BE(SETTINGS_MAX_HEADER_LIST_SIZE, 12);
    settings.writeUInt32BE(MAX_HEADER_LIST, 14);
    if (!this.failure) socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, settings), u32Frame(WINDOW_UPDATE, 0, CONNECTION_WINDOW - 65_535)]));
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      const alpn = (socket as tls.TLSSocket).alpnProtocol;
      if (opts.tls && alpn !== 'h2' && alpn !== 'istio-h2') {
        this.failure = undiciShapedError('ERR_H2_ALPN', `the mesh peer chose ${alpn ? `ALPN ${alpn}` : 'no ALPN protocol'}, not h2`);
        socket.destroy(this.failure);
        return;
      }
      this.localAddress = localAddressOf(socket);
      this.identities = tlsIdentitiesOf(socket);
      for (const stream of this.streams.values()) stream.fillClaim();
      // Over TLS 1.3 the peer may still refuse our certificate after this (its alert comes later):
      // the connection is made when its HTTP/2 preface (SETTINGS) arrives.
      if (!opts.tls) this.established();
    });
    // A TLS socket's reads come out of its TLS layer: 'data' events (plain ones read through onread).
    if (opts.tls) socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('drain', () => this.flushBlocked());
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!this.connected) {
        // A TLS alert or a reset in the handshake (EPROTO, ECONNRESET) is a connection failure too
        // (Envoy's UF, TLS_error), never a reset of a request: none was sent.
        this.failure ??= opts.tls && !isConnectCode(err.code ?? '')
          ? undiciShapedError('ERR_TLS_HANDSHAKE', `TLS handshake with the mesh peer failed: ${err.message}`, err)
          : err;
        this.pool.emit('connectionError', err);
      }
    });
    socket.once('close', () => this.onClose());
  }

  /** The connection is up: plain TCP connected, or over TLS the peer's first SETTINGS read. */
  private established(): void {
    if (this.connected) return;
    clearTimeout(this.connectTimer);
    this.connected = true;
    this.pool.emit('connect');
  }

  /** Can take a new stream now (else the pool opens another connection). */
  get usable(): boolean {
    return !this.retired && !this.closed && this.nextId <= MAX_STREAM_ID;
  }

  get inFlight(): number {
    return this.streams.size + this.draining.size;
  }

  /** Has a stream slot under the peer's SETTINGS_MAX_CONCURRENT_STREAMS (else the pool opens another connection). */
  get hasRoom(): boolean {
    return this.streams.size < this.peerMaxStreams;
  }

  open(stream: Stream): void {
    this.opened += 1;
    this.start(stream);
    if (this.opts.maxRequestsPerConnection && this.opened >= this.opts.maxRequestsPerConnection) this.pool.retire(this);
  }

  private start(stream: Stream): void {
    if (this.closed || this.failure) return stream.fail(this.failure ?? undiciShapedError('UND_ERR_SOCKET', 'upstream connection closed'));
    stream.id = this.nextId;
    this.nextId += 2;
    stream.sendWindow = this.peerInitialWindow;
    this.streams.set(stream.id, stream);
    stream.fillClaim();
    const block = stream.headerBlock;
    const endStream = stream.bodyEnded && stream.body.length === 0;
    if (block.length <= this.peerMaxFrame) {
      this.socket.write(frame(HEADERS, END_HEADERS | (endStream ? END_STREAM : 0), stream.id, block));
    } else {
      // A head larger than a frame: HEADERS, then CONTINUATION frames, with nothing between them.
      const parts: Buffer[] = [];
      for (let at = 0; at < block.length; at += this.peerMaxFrame) {
        const part = block.subarray(at, at + this.peerMaxFrame);
        const last = at + this.peerMaxFrame >= block.length;
        parts.push(frame(at === 0 ? HEADERS : CONTINUATION, (last ? END_HEADERS : 0) | (at === 0 && endStream ? END_STREAM : 0), stream.id, part));
      }
      this.socket.write(Buffer.concat(parts));
    }
    if (endStream) stream.sent = true;
    else this.flushBody(stream);
  }

  /** Frame what a stream's body has queued, as far as the windows and the socket allow. */
  flushBody(stream: Stream): void {
    if (stream.id === 0 || stream.sent || stream.phase === 'done' || this.closed) return;
    this.socket.cork();
    try {
      this.frameBody(stream);
    } finally {
      this.socket.uncork();
    }
  }

  private frameBody(stream: Stream): void {
    while (stream.body.length > 0) {
      const room = Math.min(this.sendWindow, stream.sendWindow, this.peerMaxFrame);
      if (room <= 0 || this.socket.writableLength >= SOCKET_QUEUE) {
        this.blocked.add(stream);
        return;
      }
      let chunk = stream.body[0]!;
      if (chunk.length > room) {
        stream.body[0] = chunk.subarray(room);
        chunk = chunk.subarray(0, room);
      } else stream.body.shift();
      stream.bodyBytes -= chunk.length;
      this.sendWindow -= chunk.length;
      stream.sendWindow -= chunk.length;
      const last = stream.bodyEnded && stream.body.length === 0;
      const head = Buffer.allocUnsafe(9);
      frameHead(head, 0, chunk.length, DATA, last ? END_STREAM : 0, stream.id);
      this.socket.write(head);
      this.socket.write(chunk);
      if (last) stream.sent = true;
    }
    this.blocked.delete(stream);
    if (stream.bodyEnded && !stream.sent) {
      this.socket.write(frame(DATA, END_STREAM, stream.id));
      stream.sent = true;
    }
    if (stream.sent) stream.detachSource();
    else stream.drained();
  }

  private flushBlocked(): void {
    for (const stream of [...this.blocked]) {
      this.blocked.delete(stream);
      this.flushBody(stream);
    }
  }

  /** Give the peer back the window a stream's delivered data used, once it is half spent. */
  credit(stream: Stream): void {
    if (stream.unacked < STREAM_WINDOW / 2 || stream.phase === 'done' || this.closed) return;
    this.socket.write(u32Frame(WINDOW_UPDATE, stream.id, stream.unacked));
    stream.recvWindow += stream.unacked;
    stream.unacked = 0;
  }

  /** End a stream from our side (RST_STREAM), if it is open on the wire. */
  reset(stream: Stream, code: number): void {
    if (stream.id !== 0 && this.streams.has(stream.id) && !this.closed) this.socket.write(u32Frame(RST_STREAM, stream.id, code));
  }

  /** The peer ended a stream whose handler is paused: stop sending, free its slot, hold it until done. */
  remoteEnd(stream: Stream): void {
    if (!stream.sent) this.reset(stream, H2_CANCEL);
    stream.detachSource();
    this.blocked.delete(stream);
    if (this.streams.get(stream.id) === stream) {
      this.streams.delete(stream.id);
      this.draining.add(stream);
    }
  }

  /** A stream is over for us: free its slot, close a retired connection that emptied. */
  forget(stream: Stream): void {
    stream.detachSource();
    this.blocked.delete(stream);
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
    this.draining.delete(stream);
    this.idle.touch();
    if (this.retired && this.inFlight === 0) this.close();
    this.pool.checkEmpty();
  }

  /** Close gracefully: GOAWAY (we took no streams of the peer's), then FIN. */
  close(): void {
    this.retired = true;
    if (this.closed || this.socket.destroyed) return;
    if (this.inFlight > 0) return; // forget() closes it when the last stream ends
    this.closed = true;
    this.goodbye(frame(GOAWAY, 0, 0, Buffer.alloc(8)));
  }

  /**
   * Send a last frame and close: not waiting for the peer's FIN (a node server that sent GOAWAY keeps
   * its end open), nor for ever on a peer that reads nothing.
   */
  private goodbye(last: Buffer): void {
    const socket = this.socket;
    socket.end(last, () => socket.destroy());
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.retired = true;
    this.socket.destroy();
  }

  /** A connection error (RFC 9113 5.4.1): GOAWAY with the code, then the connection is gone. */
  private connectionError(code: number, message: string): void {
    if (this.closed) return;
    const payload = Buffer.allocUnsafe(8 + Buffer.byteLength(message));
    payload.writeUInt32BE(0, 0);
    payload.writeUInt32BE(code, 4);
    payload.write(message, 8);
    this.closeWith(undiciShapedError('ERR_H2_MALFORMED', `HTTP/2 connection error ${code} from the upstream's frames: ${message}`));
    this.goodbye(frame(GOAWAY, 0, 0, payload));
  }

  /** The connection is gone: every stream still on the wire fails (held, whole responses do not). */
  private closeWith(err: Error): void {
    this.closed = true;
    this.retired = true;
    clearTimeout(this.connectTimer);
    this.idle.stop();
    for (const stream of [...this.streams.values()]) stream.fail(err);
    this.streams.clear();
  }

  private onClose(): void {
    clearTimeout(this.connectTimer);
    this.idle.stop();
    const err = !this.connected
      ? this.failure ?? undiciShapedError('ECONNREFUSED', 'upstream connection failed')
      : undiciShapedError('UND_ERR_SOCKET', 'upstream connection closed before the response ended');
    this.closeWith(err);
    this.pool.closed(this);
  }

  private read(chunk: Buffer): void {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let pos = 0;
    while (buf.length - pos >= 9 && !this.closed) {
      const length = buf.readUIntBE(pos, 3);
      if (length > MAX_FRAME) return this.connectionError(H2_FRAME_SIZE_ERROR, `a frame of ${length} bytes`);
      if (buf.length - pos - 9 < length) break;
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const id = buf.readUInt32BE(pos + 5) & MAX_STREAM_ID;
      const payload = buf.subarray(pos + 9, pos + 9 + length);
      pos += 9 + length;
      this.frame(type, flags, id, payload);
    }
    if (pos < buf.length && !this.closed) {
      buf = buf.subarray(pos);
      // Keep only the partial frame, not the whole chunk it came in.
      this.pending = buf.length < 4096 ? Buffer.from(buf) : buf;
    }
  }

  private frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.block && (type !== CONTINUATION || id !== this.block.id)) return this.connectionError(H2_PROTOCOL_ERROR, 'a header block interrupted');
    switch (type) {
      case DATA: return this.onData(flags, id, payload);
      case HEADERS: return this.onHeadersFrame(flags, id, payload);
      case CONTINUATION: return this.onContinuation(flags, id, payload);
      case PRIORITY:
        if (id === 0) return this.connectionError(H2_PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) return this.connectionError(H2_FRAME_SIZE_ERROR, 'PRIORITY of the wrong size');
        return;
      case RST_STREAM: return this.onReset(id, payload);
      case SETTINGS: return this.onSettings(flags, id, payload);
      case PUSH_PROMISE: return this.connectionError(H2_PROTOCOL_ERROR, 'PUSH_PROMISE with push disabled');
      case PING:
        if (id !== 0) return this.connectionError(H2_PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) return this.connectionError(H2_FRAME_SIZE_ERROR, 'PING of the wrong size');
        if (!(flags & ACK)) this.ack(frame(PING, ACK, 0, payload));
        return;
      case GOAWAY: return this.onGoaway(id, payload);
      case WINDOW_UPDATE: return this.onWindowUpdate(id, payload);
      default: return; // unknown frame types are ignored (RFC 9113 4.1)
    }
  }

  /**
   * Answer a PING or SETTINGS. A peer that floods them while it reads nothing of ours would grow our
   * write queue without end: past the socket bound, ENHANCE_YOUR_CALM (nghttp2 does likewise).
   */
  private ack(f: Buffer): void {
    if (this.socket.writableLength >= SOCKET_QUEUE) return this.connectionError(H2_ENHANCE_YOUR_CALM, 'acknowledgements the peer does not read');
    this.socket.write(f);
  }

  /** A frame's payload without its padding, or undefined (a connection error is raised). */
  private unpad(flags: number, payload: Buffer, extra: number): Buffer | undefined {
    if (payload.length < extra + (flags & PADDED ? 1 : 0)) return void this.connectionError(H2_FRAME_SIZE_ERROR, 'a frame shorter than its pad length and priority fields');
    if (!(flags & PADDED)) return payload.subarray(extra);
    const pad = payload[0]!;
    if (pad + 1 + extra > payload.length) return void this.connectionError(H2_PROTOCOL_ERROR, 'padding longer than the frame');
    return payload.subarray(1 + extra, payload.length - pad);
  }

  /** A stream id the peer names: ours and open, ours and closed (undefined), or never opened (error). */
  private known(id: number, what: string): Stream | undefined | false {
    if (id === 0 || id % 2 === 0 || id >= this.nextId) {
      this.connectionError(H2_PROTOCOL_ERROR, `${what} on stream ${id}, which we never opened`);
      return false;
    }
    return this.streams.get(id);
  }

  private onData(flags: number, id: number, payload: Buffer): void {
    const stream = this.known(id, 'DATA');
    if (stream === false) return;
    this.recvWindow -= payload.length;
    if (this.recvWindow < 0) return this.connectionError(H2_FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    // The connection window comes back at once: what a stream holds is bounded by its own window.
    this.connUnacked += payload.length;
    if (this.connUnacked >= CONNECTION_WINDOW / 2) {
      this.socket.write(u32Frame(WINDOW_UPDATE, 0, this.connUnacked));
      this.recvWindow += this.connUnacked;
      this.connUnacked = 0;
    }
    const data = this.unpad(flags, payload, 0);
    if (data === undefined || stream === undefined) return;
    stream.recvWindow -= payload.length;
    if (stream.recvWindow < 0) {
      this.reset(stream, H2_FLOW_CONTROL_ERROR);
      return stream.fail(malformed('DATA beyond the stream window'));
    }
    stream.onData(data, payload.length, (flags & END_STREAM) !== 0);
  }

  private onHeadersFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) return this.connectionError(H2_PROTOCOL_ERROR, 'HEADERS on stream 0');
    const fragment = this.unpad(flags, payload, flags & PRIORITY_FLAG ? 5 : 0);
    if (fragment === undefined) return;
    this.block = { id, endStream: (flags & END_STREAM) !== 0, parts: [fragment], size: 9 + fragment.length };
    if (flags & END_HEADERS) this.endBlock();
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    const block = this.block;
    if (!block || block.id !== id) return this.connectionError(H2_PROTOCOL_ERROR, 'CONTINUATION without a header block');
    block.size += 9 + payload.length;
    if (block.size > MAX_HEADER_BLOCK) return this.connectionError(H2_PROTOCOL_ERROR, `a header block over ${MAX_HEADER_BLOCK} bytes`);
    block.parts.push(payload);
    if (flags & END_HEADERS) this.endBlock();
  }

  private endBlock(): void {
    const { id, endStream, parts } = this.block!;
    this.block = undefined;
    let fields: HeaderList | undefined;
    let tooLarge: Error | undefined;
    try {
      // Decoded even for a stream we no longer want: the table must follow the peer's.
      fields = this.decoder.decode(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    } catch (err) {
      if (!(err instanceof HeaderListTooLarge)) return this.connectionError(H2_COMPRESSION_ERROR, err instanceof HpackError ? err.message : String(err));
      tooLarge = err;
    }
    const stream = this.known(id, 'HEADERS');
    if (!stream) return;
    if (fields) return stream.onHeaders(fields, endStream);
    // Too large for us, though well-formed: that stream's error (502 UPE), the others go on.
    this.reset(stream, H2_PROTOCOL_ERROR);
    stream.fail(malformed(tooLarge!.message));
  }

  private onReset(id: number, payload: Buffer): void {
    if (payload.length !== 4) return this.connectionError(H2_FRAME_SIZE_ERROR, 'RST_STREAM of the wrong size');
    const stream = this.known(id, 'RST_STREAM');
    if (!stream) return;
    const code = payload.readUInt32BE(0);
    // REFUSED_STREAM: the upstream did not process it; safe to retry (Envoy's refused-stream).
    // NO_ERROR after a whole response only asks us to stop sending (RFC 9113 8.1): done already.
    stream.fail(code === H2_REFUSED_STREAM
      ? undiciShapedError('UND_ERR_REFUSED_STREAM', 'upstream refused the stream')
      : undiciShapedError('UND_ERR_H2_RESET', `upstream reset the stream (code ${code})`));
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) return this.connectionError(H2_PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) {
      if (payload.length !== 0) this.connectionError(H2_FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) return this.connectionError(H2_FRAME_SIZE_ERROR, 'SETTINGS of the wrong size');
    this.established();
    for (let at = 0; at < payload.length; at += 6) {
      const key = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (key === SETTINGS_ENABLE_PUSH && value !== 0) return this.connectionError(H2_PROTOCOL_ERROR, 'a server may not enable push');
      if (key === SETTINGS_MAX_CONCURRENT_STREAMS) this.peerMaxStreams = value;
      else if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) return this.connectionError(H2_FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE too large');
        // The change applies to every open stream's window (RFC 9113 6.9.2).
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const stream of this.streams.values()) {
          stream.sendWindow += delta;
          if (stream.sendWindow > MAX_WINDOW) return this.connectionError(H2_FLOW_CONTROL_ERROR, 'a stream window overflowed');
        }
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < 16_384 || value > 16_777_215) return this.connectionError(H2_PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        this.peerMaxFrame = value;
      }
      // HEADER_TABLE_SIZE: our encoder never uses the peer's table; MAX_HEADER_LIST_SIZE is advisory.
    }
    this.ack(frame(SETTINGS, ACK, 0));
    this.flushBlocked();
  }

  private onGoaway(id: number, payload: Buffer): void {
    if (id !== 0) return this.connectionError(H2_PROTOCOL_ERROR, 'GOAWAY on a stream');
    if (payload.length < 8) return this.connectionError(H2_FRAME_SIZE_ERROR, 'GOAWAY of the wrong size');
    const last = payload.readUInt32BE(0) & MAX_STREAM_ID;
    // A graceful shutdown of the upstream (Envoy and node both send GOAWAY when draining): new
    // streams go to a new connection at once; streams above the last one it will process were not
    // processed and are safe to retry (refused).
    this.pool.retire(this);
    for (const stream of [...this.streams.values()]) {
      if (stream.id > last) stream.fail(undiciShapedError('UND_ERR_REFUSED_STREAM', 'upstream refused the stream (GOAWAY)'));
    }
    if (this.inFlight === 0) this.close();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) return this.connectionError(H2_FRAME_SIZE_ERROR, 'WINDOW_UPDATE of the wrong size');
    const increment = payload.readUInt32BE(0) & MAX_WINDOW;
    if (id === 0) {
      if (increment === 0) return this.connectionError(H2_PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.sendWindow += increment;
      if (this.sendWindow > MAX_WINDOW) return this.connectionError(H2_FLOW_CONTROL_ERROR, 'the connection window overflowed');
      return this.flushBlocked();
    }
    const stream = this.known(id, 'WINDOW_UPDATE');
    if (!stream) return;
    stream.sendWindow += increment;
    if (increment === 0 || stream.sendWindow > MAX_WINDOW) {
      this.reset(stream, increment === 0 ? H2_PROTOCOL_ERROR : H2_FLOW_CONTROL_ERROR);
      return stream.fail(malformed(increment === 0 ? 'WINDOW_UPDATE of 0' : 'the stream window overflowed'));
    }
    this.flushBody(stream);
  }
}

export class H2cPool extends EventEmitter {
  private live: Connection | undefined;
  private readonly all = new Set<Connection>();
  private closing = false;
  private onEmpty: (() => void)[] = [];
  /** TLS sessions to resume (ISTIO_MUTUAL), per peer. */
  private readonly sessions = new Map<string, MeshSession>();

  constructor(private readonly opts: H2cPoolOptions) {
    super();
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.closing) {
      try {
        handler.onError?.(undiciShapedError('UND_ERR_CLOSED', 'the pool is closed'));
      } catch {
        // as in Stream.fail
      }
      return false;
    }
    const fields: [string, string][] = [[':method', opts.method], [':scheme', this.opts.tls ? 'https' : 'http'], [':path', opts.path]];
    let authority: string | undefined;
    const given = (opts.headers ?? {}) as Record<string, string | string[] | undefined>;
    for (const name in given) {
      const v = given[name];
      if (v === undefined) continue;
      const lower = name.toLowerCase();
      // Connection-specific headers have no place in HTTP/2 (RFC 9113 8.2.2); `te` may only say trailers.
      if (lower === 'host') authority ??= Array.isArray(v) ? v[0] : v;
      else if (lower === 'te') { if (String(v).toLowerCase() === 'trailers') fields.push(['te', 'trailers']); }
      else if (!HOP_BY_HOP.has(lower)) {
        if (Array.isArray(v)) for (const one of v) fields.push([lower, one]);
        else fields.push([lower, String(v)]);
      }
    }
    fields.splice(3, 0, [':authority', authority ?? `${this.opts.host}:${this.opts.port}`]);
    const conn = this.connection();
    const stream = new Stream(conn, hpackEncode(fields), opts.method === 'HEAD', handler);
    stream.setBody(opts.body as Buffer | Readable | string | null | undefined);
    stream.guard(() => handler.onConnect?.((reason?: Error) => {
      if (stream.phase === 'done') return;
      stream.conn.reset(stream, H2_CANCEL);
      stream.fail(reason ?? undiciShapedError('UND_ERR_ABORTED', 'request aborted'));
    }));
    // The proxy names, in onConnect, the record that learns which connection carried the request.
    stream.claim = takeUpstreamClaim();
    if (stream.phase !== 'done') conn.open(stream);
    return true;
  }

  /** The connection new streams go on: the live one while it has a stream slot, or a new one. */
  private connection(): Connection {
    if (this.live?.usable && this.live.hasRoom) return this.live;
    const conn = new Connection(this, this.opts, this.sessions);
    this.live = conn;
    this.all.add(conn);
    return conn;
  }

  retire(conn: Connection): void {
    conn.retired = true;
    if (this.live === conn) this.live = undefined;
    if (conn.inFlight === 0) conn.close();
  }

  closed(conn: Connection): void {
    if (conn.connected) this.emit('disconnect');
    this.all.delete(conn);
    if (this.live === conn) this.live = undefined;
    this.checkEmpty();
  }

  checkEmpty(): void {
    if (!this.closing || this.all.size > 0) return;
    const waiting = this.onEmpty;
    this.onEmpty = [];
    for (const resolve of waiting) resolve();
  }

  /** Streams open now, on every connection (the registry closes an idle pool, never a busy one). */
  get inFlight(): number {
    let n = 0;
    for (const conn of this.all) n += conn.inFlight;
    return n;
  }

  /** Let in-flight streams finish, then close every connection. */
  close(): Promise<void> {
    this.closing = true;
    this.live = undefined;
    for (const conn of [...this.all]) this.retire(conn);
    if (this.all.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.onEmpty.push(resolve);
      this.checkEmpty();
    });
  }

  /** Cut every connection now. */
  destroy(): Promise<void> {
    this.closing = true;
    this.live = undefined;
    for (const conn of [...this.all]) conn.destroy();
    return new Promise((resolve) => {
      this.onEmpty.push(resolve);
      this.checkEmpty();
    });
  }
}
