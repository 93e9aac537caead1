// HTTP/2 with prior knowledge (h2c) toward one upstream endpoint, on node:http2.
//
// Why not undici's HTTP/2 client: on the sidecar -> egress gateway hop (a Service port named http2,
// as Istio's) it cost 86-118 µs of CPU per request against 66-84 for this pool in a client
// microbenchmark (docs/benchmarks.md), and it reports a stream reset like a lost connection, where
// Envoy tells REFUSED_STREAM (retried) and RST_STREAM (503 UR) apart.
//
// It speaks the part of undici's Dispatcher interface the proxy uses (dispatch with a handler of
// onConnect / onHeaders / onData / onComplete / onError, close, destroy, and the pool events
// 'connect', 'disconnect', 'connectionError'), so the proxy's attempts, retries, timeouts and
// accounting stay the same for HTTP/1.1 and HTTP/2. TLS upstreams stay on undici (ALPN can fall
// back to HTTP/1.1 there; prior knowledge has nothing to negotiate).
//
// One session at a time carries every request (HTTP/2 multiplexes); `maxRequestsPerConnection`
// retires a session after that many streams (it finishes what it carries, new streams go to a new
// one); an idle session closes after `idleTimeoutMs`.

import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { HOP_BY_HOP } from '../gateway/http/headers';
import { localAddressOf, takeUpstreamClaim } from './upstream-socket';
import { undiciShapedError } from '../errors';

export interface H2cPoolOptions {
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxRequestsPerConnection?: number;
  readonly localAddress?: string;
  readonly keepaliveMs?: number;
}


interface Live {
  readonly session: http2.ClientHttp2Session;
  streams: number;
  active: number;
  connected: boolean;
  retired: boolean;
  /** Why the connection could not be made (set before streams hear of it). */
  failure?: Error;
  /** This end of the connection, once connected (%UPSTREAM_LOCAL_ADDRESS%). */
  localAddress?: string;
}

export class H2cPool extends EventEmitter {
  private live: Live | undefined;
  private readonly all = new Set<Live>();
  private closing = false;
  private onEmpty: (() => void)[] = [];

  constructor(private readonly opts: H2cPoolOptions) {
    super();
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler, retried = false): boolean {
    let done = false;
    let stream: http2.ClientHttp2Stream | undefined;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      try {
        handler.onError?.(err);
      } catch {
        // the handler's own failure must not escape into a stream event (it would end the process)
      }
    };
    /** Run a handler callback; one that throws ends this request, never the process (as in undici). */
    const guard = <T>(call: () => T): T | undefined => {
      try {
        return call();
      } catch (err) {
        if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        fail(err instanceof Error ? err : new Error(String(err)));
        return undefined;
      }
    };
    if (this.closing) {
      fail(undiciShapedError('UND_ERR_CLOSED', 'the pool is closed'));
      return false;
    }
    const live = this.session();
    const headers: http2.OutgoingHttpHeaders = {
      ':method': opts.method,
      ':path': opts.path,
      ':scheme': 'http',
    };
    const given = (opts.headers ?? {}) as Record<string, string | string[] | undefined>;
    for (const name in given) {
      const v = given[name];
      if (v === undefined) continue;
      const lower = name.toLowerCase();
      // Connection-specific headers have no place in HTTP/2 (RFC 9113 8.2.2); `te` may only say trailers.
      if (lower === 'host') headers[':authority'] = Array.isArray(v) ? v[0] : v;
      else if (lower === 'te') { if (String(v).toLowerCase() === 'trailers') headers['te'] = 'trailers'; }
      else if (!HOP_BY_HOP.has(lower) && lower !== 'http2-settings') headers[lower] = v;
    }
    headers[':authority'] ??= `${this.opts.host}:${this.opts.port}`;
    const body = opts.body as Buffer | Readable | string | null | undefined;
    try {
      stream = live.session.request(headers, { endStream: body === null || body === undefined });
    } catch (err) {
      // A session that has just been told GOAWAY (or closed) takes no new streams: this request
      // goes on a new connection, once; the old one finishes what it carries.
      if (!retried && (live.retired || live.session.closed || live.session.destroyed)) {
        this.retire(live);
        return this.dispatch(opts, handler, true);
      }
      fail(undiciShapedError('UND_ERR_SOCKET', (err as Error).message, err));
      return false;
    }
    live.streams += 1;
    live.active += 1;
    if (this.opts.maxRequestsPerConnection && live.streams >= this.opts.maxRequestsPerConnection) this.retire(live);
    let ended = false;
    const s = stream;
    /** Body bytes the response announced (content-length) and those that came. */
    let expected: number | undefined;
    let received = 0;
    // Why a stream ended before its response did: the connection failed, the upstream refused or
    // reset the stream, or the connection went away under it.
    const earlyEnd = (err?: Error & { cause?: NodeJS.ErrnoException }): Error => {
      if (!live.connected) return live.failure ?? (err?.cause?.code ? err.cause : undiciShapedError('ECONNREFUSED', err?.message ?? 'upstream connection failed', err));
      const rst = s.rstCode ?? 0;
      // REFUSED_STREAM (7): the server did not process it; safe to retry (Envoy's refused-stream).
      if (rst === http2.constants.NGHTTP2_REFUSED_STREAM) return undiciShapedError('UND_ERR_REFUSED_STREAM', 'upstream refused the stream', err);
      // A RST_STREAM of the upstream's (Envoy: remote reset); a lost connection is a termination.
      if (rst !== 0 && !live.session.destroyed) return undiciShapedError('UND_ERR_H2_RESET', `upstream reset the stream (code ${rst})`, err);
      return undiciShapedError('UND_ERR_SOCKET', err?.message ?? 'upstream connection closed before the response ended', err);
    };
    stream.once('close', () => {
      live.active -= 1;
      if (!ended) fail(earlyEnd());
      if (live.retired && live.active === 0) live.session.close();
      this.checkEmpty();
    });
    stream.on('error', (err: Error & { cause?: NodeJS.ErrnoException }) => fail(earlyEnd(err)));
    guard(() => handler.onConnect?.((reason?: Error) => {
      if (done) return;
      s.close(http2.constants.NGHTTP2_CANCEL);
      fail(reason ?? undiciShapedError('UND_ERR_ABORTED', 'request aborted'));
    }));
    const claim = takeUpstreamClaim();
    stream.on('response', (h) => {
      if (done) return;
      if (claim) claim.upstreamLocalAddress = live.localAddress;
      const status = Number(h[':status']);
      // Name, value, ... as undici's raw headers, but strings: the proxy reads both forms, and
      // encoding each header to a Buffer only for it to decode them again costs per request.
      const raw: string[] = [];
      for (const name in h) {
        if (name.charCodeAt(0) === 58 /* : */) continue;
        const v = h[name];
        if (v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) raw.push(name, String(one));
      }
      const cl = h['content-length'];
      // A HEAD answer, 204 and 304 carry no body whatever their content-length says.
      const bodyless = opts.method === 'HEAD' || status === 204 || status === 304;
      if (!bodyless && cl !== undefined && /^\d+$/.test(String(cl))) expected = Number(cl);
      if (guard(() => handler.onHeaders?.(status, raw as unknown as Buffer[], () => s.resume(), '')) === false) s.pause();
    });
    // Response trailers (gRPC's grpc-status, grpc-message): name, value, ... as the headers.
    let trailers: string[] = [];
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
      trailers = [];
      for (const name in t) {
        const v = t[name];
        if (v === undefined || name.charCodeAt(0) === 58 /* : */) continue;
        for (const one of Array.isArray(v) ? v : [v]) trailers.push(name, String(one));
      }
    });
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      received += chunk.length;
      if (guard(() => handler.onData?.(chunk)) === false) s.pause();
    });
    stream.once('end', () => {
      ended = true;
      if (done) return;
      // node:http2 also ends a stream's readable side when its session is destroyed mid-response
      // (the upstream went away): then the response is whole only if its content-length says so.
      // (A session cut right after a clean END_STREAM of a response without content-length reads as
      // truncated: the client is reset rather than handed a body that may be short.)
      const short = expected !== undefined ? received !== expected : s.destroyed;
      if (short) {
        const got = expected !== undefined ? ` (${received} of ${expected} body bytes)` : '';
        return fail(s.destroyed
          ? undiciShapedError('UND_ERR_SOCKET', `upstream connection closed before the response ended${got}`)
          : undiciShapedError('UND_ERR_RES_CONTENT_LENGTH_MISMATCH', `response body of ${received} bytes, content-length ${expected}`));
      }
      done = true;
      guard(() => handler.onComplete?.(trailers));
    });
    if (body !== null && body !== undefined) {
      if (typeof body === 'string' || Buffer.isBuffer(body)) s.end(body);
      else {
        body.once('error', (err) => {
          s.close(http2.constants.NGHTTP2_CANCEL);
          fail(err);
        });
        body.pipe(s);
      }
    }
    return true;
  }

  /** The session new streams go on: the live one, or a new connection. */
  private session(): Live {
    if (this.live && !this.live.retired && !this.live.session.closed && !this.live.session.destroyed) return this.live;
    this.prune(); // a new connection is rare: the moment to forget dead ones
    const o = this.opts;
    const authority = o.host.includes(':') ? `http://[${o.host}]:${o.port}` : `http://${o.host}:${o.port}`;
    const session = http2.connect(authority, {
      createConnection: () => net.connect({
        host: o.host, port: o.port, noDelay: true,
        ...(o.localAddress ? { localAddress: o.localAddress } : {}),
        ...(o.keepaliveMs !== undefined ? { keepAlive: true, keepAliveInitialDelay: o.keepaliveMs } : {}),
      }),
    });
    const live: Live = { session, streams: 0, active: 0, connected: false, retired: false };
    this.live = live;
    this.all.add(live);
    const timer = setTimeout(() => {
      live.failure = undiciShapedError('UND_ERR_CONNECT_TIMEOUT', `connect timeout after ${o.connectTimeoutMs} ms`);
      session.destroy(live.failure);
    }, o.connectTimeoutMs);
    session.once('connect', () => {
      clearTimeout(timer);
      live.connected = true;
      live.localAddress = localAddressOf(session.socket);
      this.emit('connect');
    });
    // A graceful shutdown of the upstream (Envoy and node both send GOAWAY when draining): new streams
    // go to a new connection at once instead of failing on this one.
    // (Streams above the GOAWAY's last stream id are closed by node with REFUSED_STREAM: retried.)
    session.once('goaway', () => this.retire(live));
    // Streams open on a failing session are destroyed by node and report through their own listeners.
    session.on('error', (err: NodeJS.ErrnoException) => {
      if (!live.connected) this.emit('connectionError', err);
    });
    session.setTimeout(o.idleTimeoutMs, () => {
      if (live.active === 0) session.close();
    });
    session.once('close', () => {
      clearTimeout(timer);
      if (live.connected) this.emit('disconnect');
      this.all.delete(live);
      if (this.live === live) this.live = undefined;
      this.checkEmpty();
    });
    return live;
  }

  private retire(live: Live): void {
    live.retired = true;
    if (this.live === live) this.live = undefined;
    if (live.active === 0) live.session.close();
  }

  /** A session destroyed before it connected may never emit 'close': destroyed is gone enough. */
  private prune(): void {
    for (const live of this.all) if (live.session.destroyed) this.all.delete(live);
  }

  private checkEmpty(): void {
    if (!this.closing) return;
    this.prune();
    if (this.all.size > 0) return;
    const waiting = this.onEmpty;
    this.onEmpty = [];
    for (const resolve of waiting) resolve();
  }

  /** Streams open now, on every session (the registry closes an idle pool, never a busy one). */
  get inFlight(): number {
    let n = 0;
    for (const live of this.all) n += live.active;
    return n;
  }

  /** Let in-flight streams finish, then close every session. */
  close(): Promise<void> {
    this.closing = true;
    for (const live of [...this.all]) live.session.close();
    this.checkEmpty();
    if (this.all.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.onEmpty.push(resolve));
  }

  /** Cut every session now. */
  destroy(): Promise<void> {
    this.closing = true;
    for (const live of [...this.all]) live.session.destroy();
    this.checkEmpty();
    return Promise.resolve();
  }
}
