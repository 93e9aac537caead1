// Plain HTTP/1.1 toward one upstream endpoint, on net sockets: the pool of keep-alive connections
// behind most routes. undici's client did the same for ~6 µs more CPU per request (a Request object
// and its validation, a WebAssembly parser with a callback per header, its own timers); on the
// proxy's path that was a sixth of a request (docs/benchmarks.md).
//
// It speaks the part of undici's Dispatcher interface the proxy uses (dispatch with a handler of
// onConnect / onHeaders / onData / onComplete / onError, close, destroy, the pool events 'connect',
// 'disconnect', 'connectionError'), as the h2c pool does, and writes the request as undici did (the
// upstream sees the same bytes). A request whose body streams (a large or chunked upload) goes to an
// undici Pool for the same endpoint, made on first need: the upload path keeps undici's handling.
// TLS upstreams stay on undici.
//
// Responses are parsed strictly (what undici's llhttp refuses is refused here: a bad status line,
// header or chunk, Content-Length with Transfer-Encoding, two different lengths) and bounded (head
// 64 KiB, chunk-size line 1 KiB, trailers 64 KiB). A parse error fails the request and closes the
// connection; it never throws out of a socket event.

import { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { Pool, Dispatcher } from 'undici';
import { localAddressOf, plainUpstreamSocket, takeUpstreamClaim, type SocketClaim } from './upstream-socket';
import { BAD_HEAD_BYTES, CHUNKED_LAST, CRLFCRLF, HEADER_VALUE_BAD, IdleTimer, TOKEN, contentLengthDigits, trimOws } from '../gateway/http/wire';
import { asError, undiciShapedError } from '../errors';
import { endpointKey } from './cluster';

export interface H1PoolOptions {
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Connections at most (undefined: no limit); requests beyond wait, in order. */
  readonly maxConnections?: number;
  readonly maxRequestsPerConnection?: number;
  readonly localAddress?: string;
  readonly keepaliveMs?: number;
  /** The undici Pool for requests whose body streams. */
  readonly streamingPool: () => Pool;
}

const protocolError = (message: string) => undiciShapedError('HPE_INVALID', `upstream response: ${message}`);

const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 1024;
const MAX_TRAILERS = 64 * 1024;
const CRLF = Buffer.from('\r\n', 'latin1');
/** A response's Content-Length has at most 15 digits (a safe integer). */
const MAX_LENGTH_DIGITS = 15;
/**
 * A chunk-size line as llhttp takes it (strict): hex digits (at most 12), then extensions `;name` or
 * `;name=value` (a token or a quoted string) with no whitespace anywhere. What RFC 9112 also allows
 * (whitespace around `;`) llhttp refuses, so node and undici refuse it: so does the pool.
 */
const CHUNK_EXT_TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const CHUNK_EXT_QUOTED = '"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"';
const CHUNK_SIZE_LINE = new RegExp(`^([0-9a-fA-F]{1,12})(?:;${CHUNK_EXT_TOKEN}(?:=(?:${CHUNK_EXT_TOKEN}|${CHUNK_EXT_QUOTED}))?)*$`);
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/;
/** Never written from the given headers: the pool writes its own framing and connection headers. */
const NOT_WRITTEN: ReadonlySet<string> = new Set(['host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect']);
/** undici sends Content-Length: 0 for these without a body (RFC 9110 8.6: they expect content). */
const EXPECTS_BODY: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH']);

/** The request head as undici writes it: host first, then connection, the headers, the length. */
export function requestHead(method: string, path: string, headers: Readonly<Record<string, unknown>>, bodyLength: number | undefined, defaultHost: string): string | Error {
  if (!TOKEN.test(method) || /[^\x21-\xff]/.test(path)) return undiciShapedError('UND_ERR_INVALID_ARG', 'invalid request line');
  let host = defaultHost;
  let rest = '';
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || v === null) continue;
    const lower = name.toLowerCase();
    if (lower === 'host') {
      host = String(Array.isArray(v) ? v[0] : v);
      continue;
    }
    if (NOT_WRITTEN.has(lower)) continue;
    if (!TOKEN.test(name)) return undiciShapedError('UND_ERR_INVALID_ARG', `invalid header name ${JSON.stringify(name)}`);
    for (const one of Array.isArray(v) ? v : [v]) {
      const value = String(one);
      if (HEADER_VALUE_BAD.test(value)) return undiciShapedError('UND_ERR_INVALID_ARG', `invalid ${name} header`);
      rest += `${name}: ${value}\r\n`;
    }
  }
  if (HEADER_VALUE_BAD.test(host)) return undiciShapedError('UND_ERR_INVALID_ARG', 'invalid host header');
  const length = bodyLength !== undefined ? `content-length: ${bodyLength}\r\n` : EXPECTS_BODY.has(method) ? 'content-length: 0\r\n' : '';
  return `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: keep-alive\r\n${rest}${length}\r\n`;
}

/** The size a chunk-size line (without its CRLF) gives, or undefined when llhttp would refuse it. */
export function chunkSizeOf(line: string): number | undefined {
  const m = CHUNK_SIZE_LINE.exec(line);
  return m ? parseInt(m[1]!, 16) : undefined;
}

/** A final response head, as the pool reads it. */
export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  /** Names and values, in order (values without surrounding SP and HTAB). */
  readonly rawHeaders: string[];
  /** How the body is framed: none, chunks, until the upstream closes, or a length. */
  readonly body: 'none' | 'chunked' | 'close' | number;
  /** The connection is not reused after this response. */
  readonly close: boolean;
  /** The upstream's Keep-Alive `timeout=` in seconds, when it sent one. */
  readonly keepAliveTimeoutS?: number;
}

/**
 * A response head (the text before its blank line), strictly: what llhttp refuses is refused, and
 * anything accepted reads to llhttp the same way (test/unit/gateway/h1-differential.test.ts).
 * 'interim' for a 1xx other than 101, which the pool skips. Pure.
 */
export function parseResponseHead(text: string, requestMethod: string): ResponseHead | 'interim' | Error {
  if (BAD_HEAD_BYTES.test(text)) return protocolError('invalid character in the head');
  const lines = text.split('\r\n');
  const m = STATUS_LINE.exec(lines[0]!);
  if (!m) return protocolError('invalid status line');
  const status = Number(m[2]);
  if (status === 101) return protocolError('101 without an upgrade');
  const raw: string[] = [];
  let length: string | undefined;
  let chunked = false;
  let coded = false;
  let closeToken = false;
  let keepAliveToken = false;
  let keepAliveTimeoutS: number | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) return protocolError('invalid header line');
    const value = trimOws(line.slice(colon + 1));
    const n = name.length;
    if (n === 14 || n === 17 || n === 10) {
      const lower = name.toLowerCase();
      if (lower === 'content-length') {
        const digits = contentLengthDigits(line.slice(colon + 1));
        if (digits === undefined || digits.length > MAX_LENGTH_DIGITS || (length !== undefined && length !== digits)) return protocolError('invalid content-length');
        length = digits;
      } else if (lower === 'transfer-encoding') {
        coded = true;
        chunked = CHUNKED_LAST.test(value);
        // `chunked` then a tab: chunked to RFC 9110 (OWS), another coding to llhttp (the body read to
        // the close). Two readings of one response's framing: refused, not guessed.
        if (chunked && !/chunked *$/i.test(line)) return protocolError('ambiguous transfer-encoding');
      } else if (lower === 'keep-alive') {
        const t = /(?:^|[,;\s])timeout=(\d+)/i.exec(value);
        if (t) keepAliveTimeoutS = Number(t[1]);
      } else if (lower === 'connection') {
        for (const t of line.slice(colon + 1).split(',')) {
          if (trimOws(t).toLowerCase() === 'close') closeToken = true;
          // An HTTP/1.0 connection is kept only on a plain `keep-alive` (llhttp reads a tab after
          // it as another token): reuse is never assumed where node's client would not reuse.
          else if (/^[ \t]*keep-alive *$/i.test(t)) keepAliveToken = true;
        }
      }
    }
    raw.push(name, value);
  }
  if (coded && length !== undefined) return protocolError('content-length with transfer-encoding');
  if (status < 200) return 'interim'; // its headers checked as a final head's are
  let body: ResponseHead['body'];
  if (requestMethod === 'HEAD' || status === 204 || status === 304) body = 'none';
  else if (chunked) body = 'chunked';
  else if (coded || length === undefined) body = 'close';
  else body = Number(length);
  const close = closeToken || (m[1] === '0' && !keepAliveToken) || body === 'close';
  return { status, reason: m[3] ?? '', rawHeaders: raw, body, close, keepAliveTimeoutS };
}

interface Job {
  readonly opts: Dispatcher.DispatchOptions;
  readonly handler: Dispatcher.DispatchHandler;
  readonly body: Buffer | undefined;
  done: boolean;
  /** Its bytes went to the upstream (an abort before that leaves the connection usable). */
  sent: boolean;
  /** The access-log record's claim on the socket (taken right after onConnect, filled in at send). */
  claim?: SocketClaim;
}

type BodyState = 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'close' | 'none';

/** One upstream connection: at most one request at a time. */
class Conn {
  readonly socket: net.Socket;
  connected = false;
  job: Job | undefined;
  served = 0;
  localAddress: string | undefined;
  private buf: Buffer | undefined;
  private inHead = true;
  private state: BodyState = 'none';
  private remaining = 0;
  private reusable = true;
  private trailers: string[] = [];
  private trailerBytes = 0;
  private idleTimer: IdleTimer | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private failure: Error | undefined;
  gone = false;

  constructor(private readonly pool: H1Pool, private readonly o: H1PoolOptions) {
    this.socket = plainUpstreamSocket(o, (chunk) => this.data(chunk));
    this.connectTimer = setTimeout(() => {
      this.failure = undiciShapedError('UND_ERR_CONNECT_TIMEOUT', `connect timeout after ${o.connectTimeoutMs} ms`);
      this.socket.destroy();
    }, o.connectTimeoutMs);
    this.socket.once('connect', () => {
      clearTimeout(this.connectTimer);
      this.connected = true;
      this.localAddress = localAddressOf(this.socket);
      this.idleTimer = new IdleTimer(o.idleTimeoutMs, () => this.job !== undefined, () => this.socket.destroy());
      pool.emit('connect');
      pool.spare.delete(this);
      const job = this.job;
      if (!job || !this.send(job)) pool.release(this); // its request went away while it connected
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => { this.failure ??= err; });
    // The upstream's FIN: whatever it still sends ends this connection's use.
    this.socket.on('end', () => { this.reusable = false; });
    this.socket.once('close', () => this.closed());
  }

  /**
   * Take a request: sent now if connected, else once the connection is made. False when the
   * request ended without using the connection (aborted from onConnect, or unwritable): the
   * caller gives it to the next request.
   */
  run(job: Job): boolean {
    this.job = job;
    this.inHead = true;
    this.buf = undefined;
    try {
      job.handler.onConnect?.((reason?: Error) => this.abort(job, reason));
    } catch (err) {
      this.fail(job, err as Error, false);
      return false;
    }
    const claim = takeUpstreamClaim();
    if (claim) job.claim = claim;
    if (job.done) {
      // Aborted from onConnect, before a byte went: the connection is as good as before.
      this.job = undefined;
      return false;
    }
    return this.connected ? this.send(job) : true;
  }

  /** Write the request; false when it cannot be written (the request has failed, nothing was sent). */
  private send(job: Job): boolean {
    if (job.claim) job.claim.upstreamLocalAddress = this.localAddress;
    const o = job.opts;
    const head = requestHead(o.method, o.path, (o.headers ?? {}) as Record<string, unknown>, job.body?.length, this.pool.authority);
    if (head instanceof Error) {
      this.fail(job, head, false);
      return false;
    }
    job.sent = true;
    this.served += 1;
    if (!job.body || job.body.length === 0) this.socket.write(head, 'latin1');
    else {
      this.socket.cork();
      this.socket.write(head, 'latin1');
      this.socket.write(job.body);
      this.socket.uncork();
    }
    return true;
  }

  /** Idle and healthy: may take the next request. */
  get usable(): boolean {
    return this.connected && !this.gone && this.job === undefined && this.reusable && this.socket.writable && !this.idleTimer?.expired();
  }

  private abort(job: Job, reason?: Error): void {
    if (job.done) return;
    // A request cut mid-way leaves the connection in an unknown state: it goes.
    if (this.job === job && job.sent) this.socket.destroy();
    this.fail(job, reason ?? undiciShapedError('UND_ERR_ABORTED', 'request aborted'), false);
  }

  /** End a request with an error (once); `destroy`: the connection goes too. */
  private fail(job: Job, err: Error, destroy: boolean): void {
    if (job.done) return;
    job.done = true;
    if (this.job === job) this.job = undefined;
    if (destroy) this.socket.destroy();
    try {
      job.handler.onError?.(err);
    } catch {
      // a handler's own failure must not escape into a socket event
    }
  }

  /** Run a handler callback; one that throws ends its request and the connection, never the process. */
  private call<T>(job: Job, fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      this.fail(job, asError(err), true);
      return undefined;
    }
  }

  private data(chunk: Buffer): void {
    const job = this.job;
    if (!job || job.done) {
      // Bytes nobody asked for (on an idle connection, or after a failed request): not reusable.
      this.reusable = false;
      this.socket.destroy();
      return;
    }
    let buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = undefined;
    while (buf.length > 0 && this.job === job && !job.done) {
      if (this.inHead) {
        const end = buf.indexOf(CRLFCRLF);
        if (end < 0 ? buf.length > MAX_HEAD : end > MAX_HEAD) return this.fail(job, protocolError('header block over 64 KiB'), true);
        if (end < 0) {
          this.buf = buf;
          return;
        }
        const rest = this.head(job, buf.toString('latin1', 0, end));
        if (rest === undefined) return; // failed
        buf = buf.subarray(end + 4);
        if (rest === 'interim') continue;
        if (this.state === 'none') return this.complete(job, buf.length > 0);
        continue;
      }
      const rest = this.body(job, buf);
      if (rest === undefined) return;
      buf = rest;
    }
  }

  /** Parse a response head; 'interim' for a 1xx to skip, undefined when the request failed. */
  private head(job: Job, text: string): 'final' | 'interim' | undefined {
    const h = parseResponseHead(text, job.opts.method);
    if (h instanceof Error) return void this.fail(job, h, true);
    if (h === 'interim') return 'interim';
    if (h.keepAliveTimeoutS !== undefined) {
      // The upstream's own idle limit (`timeout=5`: Node's default): stop reusing the connection
      // 2 s before it, as undici does, rather than race its close with the next request.
      const ms = h.keepAliveTimeoutS * 1000 - 2000;
      if (ms <= 0) this.reusable = false;
      else this.idleTimer?.limit(ms);
    }
    if (h.close) this.reusable = false;
    this.inHead = false;
    if (h.body === 'none') this.state = 'none';
    else if (h.body === 'chunked') this.state = 'chunk-size';
    else if (h.body === 'close') this.state = 'close'; // read until the upstream closes
    else {
      this.remaining = h.body;
      this.state = this.remaining === 0 ? 'none' : 'length';
    }
    this.trailers = [];
    this.trailerBytes = 0;
    const resume = () => {
      if (this.job === job && this.socket.isPaused()) this.socket.resume();
    };
    const go = this.call(job, () => job.handler.onHeaders?.(h.status, h.rawHeaders as unknown as Buffer[], resume, h.reason));
    if (job.done) return undefined;
    if (go === false) this.socket.pause();
    return 'final';
  }

  /** Consume body bytes; returns what is left over (the start of the next state), or undefined. */
  private body(job: Job, buf: Buffer): Buffer | undefined {
    switch (this.state) {
      case 'length': {
        const take = Math.min(buf.length, this.remaining);
        this.remaining -= take;
        this.deliver(job, take === buf.length ? buf : buf.subarray(0, take));
        if (this.remaining === 0 && !job.done) this.complete(job, take < buf.length);
        return undefined;
      }
      case 'close':
        this.deliver(job, buf);
        return undefined;
      case 'chunk-size': {
        const eol = buf.indexOf(CRLF);
        if (eol < 0 ? buf.length > MAX_CHUNK_LINE : eol > MAX_CHUNK_LINE) return void this.fail(job, protocolError('chunk-size line too long'), true);
        if (eol < 0) {
          this.buf = buf;
          return undefined;
        }
        const line = buf.toString('latin1', 0, eol);
        const size = chunkSizeOf(line);
        if (size === undefined) return void this.fail(job, protocolError('invalid chunk size'), true);
        this.remaining = size;
        this.state = this.remaining === 0 ? 'trailers' : 'chunk-data';
        return buf.subarray(eol + 2);
      }
      case 'chunk-data': {
        const take = Math.min(buf.length, this.remaining);
        this.remaining -= take;
        this.deliver(job, take === buf.length ? buf : buf.subarray(0, take));
        if (this.remaining === 0) this.state = 'chunk-end';
        return take < buf.length ? buf.subarray(take) : undefined;
      }
      case 'chunk-end': {
        if (buf.length < 2) {
          this.buf = buf;
          return undefined;
        }
        if (buf[0] !== 13 || buf[1] !== 10) return void this.fail(job, protocolError('chunk not ended by CRLF'), true);
        this.state = 'chunk-size';
        return buf.subarray(2);
      }
      case 'trailers': {
        const eol = buf.indexOf(CRLF);
        if (eol < 0) {
          if (this.trailerBytes + buf.length > MAX_TRAILERS) this.fail(job, protocolError('trailers over 64 KiB'), true);
          else this.buf = buf;
          return undefined;
        }
        this.trailerBytes += eol + 2;
        if (eol === 0) {
          this.complete(job, buf.length > 2);
          return undefined;
        }
        const line = buf.toString('latin1', 0, eol);
        const colon = line.indexOf(':');
        const name = colon > 0 ? line.slice(0, colon) : '';
        const value = trimOws(line.slice(colon + 1));
        if (!TOKEN.test(name) || HEADER_VALUE_BAD.test(value) || this.trailerBytes > MAX_TRAILERS) return void this.fail(job, protocolError('invalid trailer'), true);
        // Framing in trailers (RFC 9110 6.5.1 forbids it) would frame nothing: a response that sends
        // it is broken, as llhttp also says.
        if (/^(content-length|transfer-encoding)$/i.test(name)) return void this.fail(job, protocolError(`${name} in trailers`), true);
        this.trailers.push(name, value);
        return buf.subarray(eol + 2);
      }
      default:
        return undefined;
    }
  }

  private deliver(job: Job, chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.call(job, () => job.handler.onData?.(chunk)) === false && !job.done) this.socket.pause();
  }

  /** The response is whole. `extra`: bytes followed it that no request asked for. */
  private complete(job: Job, extra: boolean): void {
    job.done = true;
    this.job = undefined;
    this.state = 'none';
    this.idleTimer?.touch();
    if (extra) this.reusable = false;
    const max = this.o.maxRequestsPerConnection;
    if (max && this.served >= max) this.reusable = false;
    if (this.socket.isPaused()) this.socket.resume();
    try {
      job.handler.onComplete?.(this.trailers.length > 0 ? this.trailers : null);
    } catch {
      // as in fail()
    }
    if (this.reusable && !this.gone) this.pool.release(this);
    else this.socket.destroy();
  }

  private closed(): void {
    this.gone = true;
    clearTimeout(this.connectTimer);
    this.idleTimer?.stop();
    const job = this.job;
    this.job = undefined;
    this.pool.emit(this.connected ? 'disconnect' : 'connectionError', this.failure);
    if (job && !job.done) {
      if (!this.connected) this.fail(job, this.failure ?? undiciShapedError('ECONNREFUSED', 'upstream connection failed'), false);
      else if (this.state === 'close' && !this.inHead) this.complete(job, false); // the body ran to the end of the connection
      else {
        const err = this.failure as NodeJS.ErrnoException | undefined;
        this.fail(job, undiciShapedError('UND_ERR_SOCKET', err?.message ?? 'other side closed', err), false);
      }
    }
    this.pool.gone(this);
  }

  close(): void {
    if (this.job === undefined) this.socket.destroy();
    else this.reusable = false;
  }
}

export class H1Pool extends EventEmitter {
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private readonly waiting: Job[] = [];
  /** Connections still being made whose request went away: the next request takes one. */
  readonly spare = new Set<Conn>();
  private streaming: Pool | undefined;
  private closing = false;
  private onEmpty: (() => void)[] = [];
  /** `ip:port` (`[v6]:port`): the Host of a request that names none. */
  readonly authority: string;

  constructor(private readonly opts: H1PoolOptions) {
    super();
    this.authority = endpointKey(opts.host, opts.port);
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const body = opts.body;
    if (body !== null && body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
      this.streaming ??= this.opts.streamingPool();
      return this.streaming.dispatch(opts, handler);
    }
    const job: Job = { opts, handler, body: typeof body === 'string' ? Buffer.from(body) : body ?? undefined, done: false, sent: false };
    if (this.closing) {
      job.done = true;
      handler.onError?.(undiciShapedError('UND_ERR_CLOSED', 'the pool is closed'));
      return false;
    }
    let conn = this.idle.pop();
    while (conn && !conn.usable) conn = this.idle.pop();
    if (!conn && this.spare.size > 0) {
      conn = this.spare.values().next().value as Conn;
      this.spare.delete(conn);
    }
    if (!conn) {
      if (this.opts.maxConnections !== undefined && this.all.size >= this.opts.maxConnections) {
        this.waiting.push(job);
        return true;
      }
      conn = this.open();
    }
    if (!conn.run(job)) this.release(conn);
    return true;
  }

  private open(): Conn {
    const conn = new Conn(this, this.opts);
    this.all.add(conn);
    return conn;
  }

  /** A connection finished its request and may take another. */
  release(conn: Conn): void {
    // A loop, not recursion: each waiting request may end at once (aborted from onConnect).
    for (let next = this.waiting.shift(); next; next = this.waiting.shift()) if (conn.run(next)) return;
    if (!conn.connected) this.spare.add(conn); // still connecting: the next request may have it
    else if (this.closing) conn.close();
    else this.idle.push(conn);
  }

  /** A connection closed: a waiting request may take its place. */
  gone(conn: Conn): void {
    this.all.delete(conn);
    this.spare.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    if (this.waiting.length > 0) this.release(this.open());
    this.checkEmpty();
  }

  /** Requests running or waiting for a connection (the registry closes an idle pool, never a busy one). */
  get inFlight(): number {
    let n = this.waiting.length + (this.streaming?.stats.size ?? 0);
    for (const c of this.all) if (c.job !== undefined) n += 1;
    return n;
  }

  private checkEmpty(): void {
    if (!this.closing || this.all.size > 0) return;
    const waiting = this.onEmpty;
    this.onEmpty = [];
    for (const resolve of waiting) resolve();
  }

  /** Let requests in flight finish, then close every connection. */
  async close(): Promise<void> {
    this.closing = true;
    for (const c of [...this.all]) c.close();
    await this.streaming?.close();
    this.checkEmpty();
    if (this.all.size === 0) return;
    await new Promise<void>((resolve) => this.onEmpty.push(resolve));
  }

  /** Cut every connection now; waiting requests fail. */
  async destroy(): Promise<void> {
    this.closing = true;
    for (const job of this.waiting.splice(0)) {
      job.done = true;
      job.handler.onError?.(undiciShapedError('UND_ERR_DESTROYED', 'the pool was destroyed'));
    }
    for (const c of [...this.all]) c.socket.destroy();
    await this.streaming?.destroy();
    this.checkEmpty();
  }
}
