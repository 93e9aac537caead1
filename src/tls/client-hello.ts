// The one module that parses a TLS ClientHello (Envoy's tls_inspector): the SNI and ALPN a client
// asks for, read without terminating TLS so the bytes can be replayed to an upstream or handed to
// our own TLS layer.
//
// Why not `sni-reader` (named in the design card): its only interface is a stream reader that
// parses inside a 'readable' handler, so a truncated or malformed hello throws a RangeError from an
// event handler, which no caller can catch: one bad client would take the process down. It also
// reads a single record (a hello split across records fails), with no size or time bound. So the
// parser here is our own: a pure function over the bytes received so far, bounds-checked on every
// read, that reassembles the handshake across records and never throws. `sni-reader` remains in
// the test suite as an independent oracle for well-formed hellos (and to show the crash).

import type { Socket } from 'node:net';
import { asError } from '../errors';

const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const NAME_TYPE_HOST = 0;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
/** TLSPlaintext.length may not exceed 2^14 (RFC 8446 5.1). */
const MAX_RECORD = 16_384;

export const DEFAULT_MAX_HELLO_BYTES = 16_384;
/** Envoy's default listener_filters_timeout. */
export const DEFAULT_HELLO_TIMEOUT_MS = 15_000;

export type ParseResult =
  | { readonly status: 'incomplete' }
  | { readonly status: 'hello'; readonly sni?: string; readonly alpn: readonly string[]; readonly legacyVersion: number }
  | { readonly status: 'not-tls' }
  | { readonly status: 'invalid'; readonly reason: string };

const INCOMPLETE: ParseResult = { status: 'incomplete' };
const invalid = (reason: string): ParseResult => ({ status: 'invalid', reason });

/** A DNS host name as SNI may carry it: letters, digits, '-', '_' and dots, no empty labels. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$/;

/**
 * Parse the bytes received so far. `incomplete` means "read more"; every other result is final.
 * Total input beyond `maxBytes` without a complete hello is `invalid`.
 */
export function parseClientHello(buf: Buffer, maxBytes = DEFAULT_MAX_HELLO_BYTES): ParseResult {
  if (buf.length === 0) return INCOMPLETE;
  if (buf[0] !== CONTENT_HANDSHAKE) return { status: 'not-tls' };
  if (buf.length >= 2 && buf[1] !== 3) return { status: 'not-tls' }; // record version 3.x
  // Reassemble the handshake message from consecutive handshake records.
  const fragments: Buffer[] = [];
  let handshakeBytes = 0;
  let needed = -1; // handshake message length once its header is known
  let pos = 0;
  while (pos + RECORD_HEADER <= buf.length) {
    if (buf[pos] !== CONTENT_HANDSHAKE) return invalid('record before the end of the ClientHello is not a handshake record');
    const length = buf.readUInt16BE(pos + 3);
    if (length === 0 || length > MAX_RECORD) return invalid(`record length ${length}`);
    const end = pos + RECORD_HEADER + length;
    const body = buf.subarray(pos + RECORD_HEADER, Math.min(end, buf.length));
    fragments.push(body);
    handshakeBytes += body.length;
    if (needed < 0 && handshakeBytes >= HANDSHAKE_HEADER) {
      const head = Buffer.concat(fragments);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return invalid(`handshake type ${head[0]} is not ClientHello`);
      needed = head.readUIntBE(1, 3);
      if (needed + HANDSHAKE_HEADER > maxBytes) return invalid(`ClientHello of ${needed} bytes exceeds ${maxBytes}`);
    }
    if (needed >= 0 && handshakeBytes >= needed + HANDSHAKE_HEADER) {
      const message = Buffer.concat(fragments).subarray(HANDSHAKE_HEADER, HANDSHAKE_HEADER + needed);
      return parseHelloBody(message);
    }
    if (end > buf.length) break; // the rest of this record has not arrived
    pos = end;
  }
  if (buf.length > maxBytes + RECORD_HEADER * 8) return invalid(`no complete ClientHello within ${maxBytes} bytes`);
  return INCOMPLETE;
}

/** A bounds-checked reader over one buffer: every read returns undefined past the end. */
class Reader {
  constructor(private readonly b: Buffer, public pos = 0) {}
  get left(): number {
    return this.b.length - this.pos;
  }
  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.b[this.pos++];
  }
  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const v = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  bytes(n: number | undefined): Buffer | undefined {
    if (n === undefined || this.left < n) return undefined;
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

function parseHelloBody(body: Buffer): ParseResult {
  const r = new Reader(body);
  const legacyVersion = r.u16();
  if (legacyVersion === undefined || r.bytes(32) === undefined) return invalid('ClientHello too short');
  const sessionId = r.bytes(r.u8());
  if (sessionId === undefined || sessionId.length > 32) return invalid('bad session id');
  const suites = r.bytes(r.u16());
  if (suites === undefined || suites.length < 2 || suites.length % 2 !== 0) return invalid('bad cipher suites');
  const compression = r.bytes(r.u8());
  if (compression === undefined || compression.length < 1) return invalid('bad compression methods');
  if (r.left === 0) return { status: 'hello', alpn: [], legacyVersion }; // no extensions at all
  const extensions = r.bytes(r.u16());
  if (extensions === undefined || r.left !== 0) return invalid('extensions length does not match the ClientHello');
  let sni: string | undefined;
  let alpn: string[] = [];
  const seen = new Set<number>();
  const e = new Reader(extensions);
  while (e.left > 0) {
    const type = e.u16();
    const data = e.bytes(e.u16());
    if (type === undefined || data === undefined) return invalid('truncated extension');
    if (seen.has(type)) return invalid(`duplicate extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const parsed = parseServerName(data);
      if (parsed instanceof Error) return invalid(parsed.message);
      sni = parsed;
    } else if (type === EXT_ALPN) {
      const parsed = parseAlpn(data);
      if (parsed instanceof Error) return invalid(parsed.message);
      alpn = parsed;
    }
  }
  return sni === undefined ? { status: 'hello', alpn, legacyVersion } : { status: 'hello', sni, alpn, legacyVersion };
}

/**
 * The server_name extension of a ClientHello: exactly one entry, a host name. RFC 6066 leaves room
 * for other name types and more entries, but BoringSSL (Envoy's TLS inspector) and OpenSSL refuse
 * both, and an empty extension: a hello they would refuse is not routed here on a name they never see.
 */
function parseServerName(data: Buffer): string | Error {
  const r = new Reader(data);
  const list = r.bytes(r.u16());
  if (list === undefined || r.left !== 0) return new Error('bad server_name list');
  const l = new Reader(list);
  const type = l.u8();
  const name = l.bytes(l.u16());
  if (type === undefined || name === undefined) return new Error('truncated server_name');
  if (type !== NAME_TYPE_HOST) return new Error(`server_name of type ${type}, not a host name`);
  if (l.left !== 0) return new Error('more than one entry in server_name');
  const text = name.toString('latin1').toLowerCase();
  if (!HOST_NAME.test(text)) return new Error('server_name is not a valid host name');
  return text.endsWith('.') ? text.slice(0, -1) : text;
}

function parseAlpn(data: Buffer): string[] | Error {
  const r = new Reader(data);
  const list = r.bytes(r.u16());
  if (list === undefined || r.left !== 0 || list.length === 0) return new Error('bad ALPN list');
  const out: string[] = [];
  const l = new Reader(list);
  while (l.left > 0) {
    const p = l.bytes(l.u8());
    if (p === undefined || p.length === 0) return new Error('bad ALPN protocol');
    out.push(p.toString('latin1'));
  }
  return out;
}

export type HelloRead =
  | (Exclude<ParseResult, { status: 'incomplete' }> & { readonly bytes: Buffer })
  | { readonly status: 'timeout' | 'closed'; readonly bytes: Buffer };

/**
 * Read from a socket until the ClientHello is parsed (or is not one), bounded in size and time.
 * Never rejects and never throws from a socket handler. On return the socket is paused, none of its
 * listeners remain, and `bytes` holds everything read: replay it upstream or `socket.unshift` it.
 */
export function readClientHello(socket: Socket, opts: { maxBytes?: number; timeoutMs?: number } = {}): Promise<HelloRead> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_HELLO_BYTES;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (result: HelloRead): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onClosed);
      socket.off('close', onClosed);
      socket.off('error', onClosed);
      socket.pause();
      resolve(result);
    };
    const all = (): Buffer => (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      let result: ParseResult;
      try {
        result = parseClientHello(all(), maxBytes);
      } catch (err) {
        result = invalid(`parser error: ${asError(err).message}`); // cannot happen; never let it escape
      }
      if (result.status !== 'incomplete') finish({ ...result, bytes: all() });
    };
    const onClosed = (): void => finish({ status: 'closed', bytes: all() });
    const timer = setTimeout(() => finish({ status: 'timeout', bytes: all() }), opts.timeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS);
    socket.on('error', onClosed);
    socket.on('end', onClosed);
    socket.on('close', onClosed);
    socket.on('data', onData);
  });
}
