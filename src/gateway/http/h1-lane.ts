// The fast lane for plain HTTP/1.1. Node's HTTP server costs about a third of the CPU of a proxied
// request (an IncomingMessage and a ServerResponse stream each, header validation twice, a parser
// callback per header), most of it for cases a keep-alive GET never meets. This lane serves the
// common request itself: an HTTP/1.1 request that arrived whole (its head, and a Content-Length body
// up to 64 KiB if it has one), with a method it knows, no upgrade, no duplicate header and nothing
// it is unsure of. Anything else, at a request boundary, hands the connection (with every unread
// byte) to node:http for the rest of its life, and node answers it as before: errors (400, 431),
// chunked or larger or late bodies, Expect, HTTP/1.0, upgrades, pipelined oddities.
// So this parser only has to recognise the simple case exactly; it never has to reject anything.
//
// One request is served at a time per connection, as Envoy does (node:http starts pipelined
// requests at once); pipelined requests wait in the buffer (bounded: reading pauses past it) and
// are taken when the response before them ends.

import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { laneReads, type LaneReads } from '../direct-reads';
import { BAD_HEAD_BYTES, CHUNKED_LAST, CRLFCRLF, HEADER_VALUE_BAD, IdleTimer, TOKEN, contentLengthDigits, trimOws } from './wire';
import { REPLAYABLE_BODY_BYTES } from './proxy';

export interface H1LaneLimits {
  /** A head larger than this goes to node:http, which answers 431. */
  readonly maxHeaderBytes: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** A connection that has not sent its first whole head by then gets a 408 (node:http's headersTimeout). */
  readonly headersTimeoutMs: number;
  /** Read connections (plain, and TLS once secure) through direct-reads.ts instead of 'data' events (where proven). */
  readonly directReads?: boolean;
}

/** Where a lane connection's requests, and the connections it gives up, go. */
export interface H1LaneHooks {
  readonly serve: (req: H1Request, res: H1Response) => void;
  /** Give the socket (its unread bytes unshifted) to node:http. */
  readonly handOff: (socket: Socket) => void;
  /** No first head within headersTimeoutMs: answer 408 and close (as node:http's clientError path). */
  readonly headTimeout: (socket: Socket) => void;
}

/** A request head this lane serves itself. */
export interface ParsedHead {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  /** No `close` among the Connection header's tokens. */
  readonly keepAlive: boolean;
  /** A Content-Length body, whole (it came with the head). */
  readonly body: Buffer | undefined;
  /** Bytes of the request: the head, its final blank line and the body. */
  readonly length: number;
}

/** Why a head is not served here: incomplete (more bytes may come), or for node:http. */
export type NotLane = 'partial' | 'node';

/** Methods the lane serves (others, CONNECT among them, go to node:http). */
const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'POST', 'PUT', 'PATCH']);
/**
 * Origin-form (`/path?query`) or `*` (asterisk-form, as llhttp takes it with any method). Other forms
 * (absolute, authority) go to node:http, which answers them (a target without its slash gets 400,
 * as from Envoy).
 */
const TARGET = /^(?:\/[\x21-\x7e]*|\*)$/;
/**
 * Requests whose framing or meaning node:http handles: bodies, upgrades, Expect, and the legacy
 * Proxy-Connection (llhttp reads it as Connection; node:http then closes after a `close`).
 */
const NODE_HEADERS: ReadonlySet<string> = new Set(['transfer-encoding', 'upgrade', 'expect', 'http2-settings', 'proxy-connection', '__proto__']);
const MAX_HEADERS = 100;
/** The Content-Length digits the lane takes (no leading zeros; bodies it reads whole are small). */
const CONTENT_LENGTH = /^(0|[1-9]\d{0,5})$/;

/** Does a Connection header value list `close` (tokens, any case)? Undefined when it lists `upgrade`. */
function connectionKeepsAlive(value: string): boolean | undefined {
  let keep = true;
  for (const t of value.split(',')) {
    const token = trimOws(t).toLowerCase();
    if (token === 'close') keep = false;
    else if (token === 'upgrade') return undefined;
  }
  return keep;
}

/**
 * The request head at the start of `buf`, when this lane serves it. Pure: reads `buf` only.
 * 'partial': no complete head yet (and not over the size limit); 'node': node:http serves it.
 */
export function parseRequestHead(buf: Buffer, maxHeaderBytes: number): ParsedHead | NotLane {
  const scan = buf.length > maxHeaderBytes ? buf.subarray(0, maxHeaderBytes) : buf;
  const end = scan.indexOf(CRLFCRLF);
  if (end < 0) return buf.length >= maxHeaderBytes ? 'node' : 'partial';
  const head = buf.toString('latin1', 0, end);
  if (BAD_HEAD_BYTES.test(head)) return 'node';
  const lines = head.split('\r\n');
  if (lines.length - 1 > MAX_HEADERS) return 'node';
  const first = lines[0]!;
  const sp1 = first.indexOf(' ');
  const sp2 = first.indexOf(' ', sp1 + 1);
  if (sp1 < 0 || sp2 < 0) return 'node';
  const method = first.slice(0, sp1);
  const url = first.slice(sp1 + 1, sp2);
  if (!METHODS.has(method) || first.slice(sp2 + 1) !== 'HTTP/1.1' || !TARGET.test(url)) return 'node';
  const headers: IncomingHttpHeaders = {};
  const rawHeaders: string[] = [];
  let keepAlive = true;
  let bodyLength = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return 'node';
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return 'node'; // obs-fold, whitespace before the colon, ...
    const lower = name.toLowerCase();
    const value = trimOws(line.slice(colon + 1));
    if (NODE_HEADERS.has(lower)) return 'node';
    if (lower === 'content-length') {
      // Bodies the proxy would read whole anyway (replayable), when they came with their head.
      const digits = contentLengthDigits(line.slice(colon + 1));
      if (digits === undefined || !CONTENT_LENGTH.test(digits) || Number(digits) > REPLAYABLE_BODY_BYTES) return 'node';
      bodyLength = Number(digits);
    } else if (lower === 'connection') {
      const keep = connectionKeepsAlive(value);
      if (keep === undefined) return 'node';
      keepAlive = keep;
    }
    // Node joins some repeated headers, keeps the first of others and makes arrays of a few: the
    // lane leaves every repeat to it rather than copy those rules (and any name Object.prototype has).
    if (headers[lower] !== undefined) return 'node';
    headers[lower] = value;
    rawHeaders.push(name, value);
  }
  if (headers.host === undefined) return 'node'; // HTTP/1.1 requires one: node:http answers 400
  const length = end + 4 + bodyLength;
  if (buf.length < length) return 'partial'; // the body is still coming: node:http reads it
  return { method, url, headers, rawHeaders, keepAlive, body: bodyLength > 0 ? buf.subarray(end + 4, length) : undefined, length };
}

/** What the proxy reads of a request the lane parsed (the subset of IncomingMessage it uses). */
export class H1Request {
  readonly httpVersion = '1.1';
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor = 1;
  /** The lane's requests are whole once parsed (a body came with its head). */
  readonly complete = true;
  readonly method: string;
  url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly body: Buffer | undefined;

  constructor(head: ParsedHead, readonly socket: Socket) {
    this.method = head.method;
    this.url = head.url;
    this.headers = head.headers;
    this.rawHeaders = head.rawHeaders;
    this.body = head.body;
  }
}

/** Above this, a body chunk is written after the head (writev), not copied next to it. */
const COPY_LIMIT = 16 * 1024;

function headerError(name: string): Error {
  return Object.assign(new TypeError(`invalid response header ${JSON.stringify(name)}`), { code: 'ERR_INVALID_CHAR' });
}

/**
 * The response to an H1Request: the part of ServerResponse the proxy uses. The head waits for the
 * first body bytes (or the end) and goes out with them in one write, as node:http sends it.
 * 'close' is emitted only when the connection goes before the response ended.
 */
export class H1Response {
  headersSent = false;
  destroyed = false;
  finished = false;
  private head: string | undefined;
  private chunked = false;
  private body = true;
  private closeFns: (() => void)[] | undefined;
  private drainFns: (() => void)[] | undefined;
  private trailers = '';

  constructor(private readonly conn: H1Connection, readonly shouldKeepAlive: boolean, private readonly isHead: boolean) {}

  /** The lane adds no headers of its own (no Connection: keep-alive): nothing to remove. */
  removeHeader(_name: string): void {}

  /** `list`: flat [name, value, ...]. Throws, as ServerResponse does, on a name or value that cannot be sent. */
  writeHead(status: number, list: readonly string[]): this {
    if (this.headersSent) throw new Error('headers already sent');
    let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`;
    let length = false;
    for (let i = 0; i + 1 < list.length; i += 2) {
      const name = list[i]!;
      const value = list[i + 1]!;
      if (!TOKEN.test(name)) throw headerError(name);
      if (HEADER_VALUE_BAD.test(value)) throw headerError(name);
      const n = name.length;
      if (n === 14 || n === 17 || n === 10) {
        const lower = name.toLowerCase();
        if (lower === 'content-length') length = true;
        else if (lower === 'transfer-encoding') this.chunked = CHUNKED_LAST.test(value);
        else if (lower === 'connection' && connectionKeepsAlive(value) === false) this.conn.closeAfterResponse();
      }
      text += `${name}: ${value}\r\n`;
    }
    this.head = `${text}\r\n`;
    this.headersSent = true;
    // Node's rules: no body on HEAD, 1xx, 204, 304.
    this.body = !this.isHead && status >= 200 && status !== 204 && status !== 304;
    // A body framed by neither length nor chunks ends with the connection.
    if (this.body && !length && !this.chunked) this.conn.closeAfterResponse();
    return this;
  }

  write(chunk: Buffer | string): boolean {
    if (this.destroyed || this.finished) return false;
    if (!this.headersSent) this.writeHead(200, []);
    if (!this.body) return true;
    const data = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    if (data.length === 0) return true;
    return this.send(data, false);
  }

  end(chunk?: Buffer | string): void {
    if (this.destroyed || this.finished) return;
    if (!this.headersSent) this.writeHead(200, []);
    const data = chunk === undefined || !this.body ? undefined : typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    this.finished = true;
    this.send(data !== undefined && data.length > 0 ? data : undefined, true);
    this.conn.responseEnded(this);
  }

  /** Trailers for a chunked body (ignored otherwise, as node:http does). */
  addTrailers(trailers: Readonly<Record<string, string | readonly string[]>>): void {
    for (const [name, v] of Object.entries(trailers)) {
      for (const value of typeof v === 'string' ? [v] : v) {
        if (!TOKEN.test(name) || HEADER_VALUE_BAD.test(value)) throw headerError(name);
        this.trailers += `${name}: ${value}\r\n`;
      }
    }
  }

  destroy(_err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.conn.destroy();
  }

  /** 'close' comes at most once: on() and once() are the same for it. */
  on(event: 'close', fn: () => void): this {
    (this.closeFns ??= []).push(fn);
    return this;
  }

  once(event: 'close' | 'drain', fn: () => void): this {
    if (event === 'close') return this.on(event, fn);
    (this.drainFns ??= []).push(fn);
    return this;
  }

  /** The connection closed before this response ended. */
  closed(): void {
    this.destroyed = true;
    if (this.finished) return;
    const fns = this.closeFns;
    this.closeFns = undefined;
    if (fns) for (const fn of fns) fn();
  }

  drained(): void {
    const fns = this.drainFns;
    this.drainFns = undefined;
    if (fns) for (const fn of fns) fn();
  }

  /** One write: the head if it is still waiting, the body bytes (chunk-framed), and the end. */
  private send(data: Buffer | undefined, last: boolean): boolean {
    const head = this.head ?? '';
    this.head = undefined;
    let before = head;
    let after = '';
    if (this.chunked && this.body) {
      if (data) {
        before += `${data.length.toString(16)}\r\n`;
        after = '\r\n';
      }
      if (last) after += `0\r\n${this.trailers}\r\n`;
    }
    const socket = this.conn.socket;
    if (!data) return before.length + after.length === 0 ? true : socket.write(before + after, 'latin1');
    if (before.length + after.length === 0) return socket.write(data);
    if (data.length <= COPY_LIMIT) {
      const out = Buffer.allocUnsafe(before.length + data.length + after.length);
      out.write(before, 0, 'latin1');
      data.copy(out, before.length);
      if (after.length > 0) out.write(after, before.length + data.length, 'latin1');
      return socket.write(out);
    }
    socket.cork();
    if (before.length > 0) socket.write(before, 'latin1');
    socket.write(data);
    const ok = after.length > 0 ? socket.write(after, 'latin1') : socket.writableLength < socket.writableHighWaterMark;
    socket.uncork();
    return ok;
  }
}

/** Bytes a connection may hold unread while a response is in flight before reading pauses. */
const PIPELINE_BUFFER = 64 * 1024;

/**
 * One client connection on the lane: reads heads, serves one request at a time, hands the
 * connection to node:http at the first request it does not serve itself.
 */
export class H1Connection {
  private buffered: Buffer | undefined;
  private current: H1Response | undefined;
  private keepAlive = true;
  private gone = false;
  private readonly idleTimer: IdleTimer;
  /** Until the first head is read (a slowloris holds a connection without one). */
  private headTimer: NodeJS.Timeout | undefined;
  /** Reads that skip the socket's stream (until the connection leaves the lane); else 'data' events. */
  private readonly reads: LaneReads | false;
  private readonly onData = (chunk: Buffer) => this.data(chunk);
  private readonly onEnd = () => this.clientEnded();
  private readonly onClose = () => this.socketClosed();
  private readonly onDrain = () => this.current?.drained();

  constructor(
    readonly socket: Socket,
    private readonly limits: H1LaneLimits,
    private readonly hooks: H1LaneHooks,
    private readonly live: Set<H1Connection>,
  ) {
    live.add(this);
    this.reads = limits.directReads === true && laneReads(socket, (chunk) => {
      this.data(chunk);
      return true; // the lane pauses the socket itself
    });
    if (!this.reads) socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    this.idleTimer = new IdleTimer(limits.keepAliveTimeoutMs, () => this.current !== undefined, () => socket.destroy());
    this.headTimer = setTimeout(() => {
      this.detach();
      hooks.headTimeout(socket);
    }, limits.headersTimeoutMs);
    this.headTimer.unref();
    if (this.reads && this.reads.waiting) this.data(this.reads.waiting);
  }

  /** Idle: no response in flight and nothing waiting to be read (drain closes these). */
  get idle(): boolean {
    return this.current === undefined && this.buffered === undefined;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The response in flight says the connection ends with it (Connection: close, or no framing). */
  closeAfterResponse(): void {
    this.keepAlive = false;
  }

  /** From the response in flight: it has been written whole. */
  responseEnded(res: H1Response): void {
    if (res !== this.current) return;
    this.current = undefined;
    this.idleTimer.touch();
    if (!this.keepAlive) {
      this.detach();
      this.socket.destroySoon(); // FIN after the answer, then closed (no half-open socket left)
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    // A pipelined request waiting: served after the caller of end() has finished with the one before
    // (its access-log line first), not inside that call.
    if (this.buffered !== undefined) process.nextTick(this.pumpLater);
  }

  private readonly pumpLater = () => this.pump();

  private data(chunk: Buffer): void {
    this.buffered = this.buffered === undefined ? chunk : Buffer.concat([this.buffered, chunk]);
    if (this.current) {
      if (this.buffered.length > PIPELINE_BUFFER) this.socket.pause();
      return;
    }
    this.pump();
  }

  /**
   * Serve what is buffered, one request at a time: a request answered within serve() (a local
   * reply) lets the loop take the next; one answered later schedules pumpLater.
   */
  private pump(): void {
    while (this.current === undefined && this.buffered !== undefined && !this.gone) {
      const head = parseRequestHead(this.buffered, this.limits.maxHeaderBytes);
      if (head === 'partial' || head === 'node') return this.toNode();
      this.buffered = head.length === this.buffered.length ? undefined : this.buffered.subarray(head.length);
      this.keepAlive = head.keepAlive;
      if (this.headTimer) clearTimeout(this.headTimer);
      this.headTimer = undefined;
      const res = new H1Response(this, head.keepAlive, head.method === 'HEAD');
      this.current = res;
      this.hooks.serve(new H1Request(head, this.socket), res);
    }
  }

  /** node:http takes the connection from here on, unread bytes first. */
  private toNode(): void {
    const rest = this.buffered;
    this.buffered = undefined;
    this.detach();
    this.socket.pause();
    if (rest) this.socket.unshift(rest);
    this.hooks.handOff(this.socket);
    this.socket.resume();
  }

  private detach(): void {
    if (this.gone) return;
    this.gone = true;
    this.live.delete(this);
    this.idleTimer.stop();
    if (this.headTimer) clearTimeout(this.headTimer);
    if (this.reads) this.reads.toStream();
    else this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onClose);
    this.socket.off('drain', this.onDrain);
  }

  /**
   * The client's FIN. A request in flight is abandoned, as node:http does it (and Envoy, which logs
   * it DC): the answer is not sent, and the connection ends.
   */
  private clientEnded(): void {
    const res = this.current;
    this.current = undefined;
    this.detach();
    this.socket.destroySoon();
    res?.closed();
  }

  private socketClosed(): void {
    const res = this.current;
    this.current = undefined;
    this.detach();
    res?.closed();
  }
}
