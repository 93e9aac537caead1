// Header handling at the gateway edge, as Istio's gateway Envoy does it: hop-by-hop headers dropped,
// x-forwarded-for appended, x-forwarded-proto set, x-request-id kept or generated, x-envoy-* from
// external clients stripped, Host preserved; responses get `server` overwritten.

import { randomFillSync } from 'node:crypto';
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';

/** RFC 9110 7.6.1 connection-specific headers, never forwarded. */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings',
  // The gateway answers `Expect: 100-continue` itself (as Envoy does) and streams the body on.
  'expect',
]);

/**
 * Response headers never passed on: hop-by-hop, those the gateway sets itself, and Istio's peer
 * metadata exchange (`x-envoy-peer-metadata`, `-id`: an Istio sidecar's workload identity, labels and
 * IPs, which Envoy's metadata-exchange filter consumes; passed on, they would reach internet clients).
 */
const NOT_PASSED_ON = new Set([...HOP_BY_HOP, 'server', 'x-envoy-upstream-service-time', 'x-envoy-peer-metadata', 'x-envoy-peer-metadata-id']);

/** A Host / :authority value a request may carry (RFC 3986 reg-name or IP literal, optional port). */
const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:\d{1,5})?$/;

export function validAuthority(host: string | undefined): boolean {
  return host === undefined || AUTHORITY.test(host);
}

export interface ForwardInfo {
  readonly remoteAddress: string;
  readonly scheme: 'http' | 'https';
  readonly requestId: string;
  /**
   * A sidecar's outbound side is not the edge (Istio: use_remote_address false): it keeps x-envoy-*
   * headers and x-forwarded-for as the application sent them and adds no x-envoy-external-address.
   */
  readonly outbound?: boolean;
  /** The edge's x-forwarded-client-cert for a verified client certificate (src/tls/client-cert.ts). */
  readonly clientCert?: string | undefined;
}

/** Never dropped because a Connection header names them: the request would change meaning or target. */
const NOT_NOMINABLE = new Set(['close', 'keep-alive', 'host', 'content-length', 'content-type']);

/** Names listed in the Connection header are hop-by-hop too (RFC 9110 7.6.1), but not Host and framing. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (!value) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  let out: Set<string> | undefined;
  for (const t of text.split(',')) {
    const n = t.trim().toLowerCase();
    if (n && !NOT_NOMINABLE.has(n)) (out ??= new Set()).add(n);
  }
  return out;
}

/** Host for routing: `:authority` on HTTP/2, `Host` on HTTP/1.x. */
export function authorityOf(headers: IncomingHttpHeaders): string | undefined {
  const a = headers[':authority'];
  return typeof a === 'string' ? a : headers.host;
}

/** `HTTP/1.1`, or `HTTP/2` as Envoy logs it. */
export function protocolOf(httpVersion: string): string {
  return httpVersion === '2.0' ? 'HTTP/2' : `HTTP/${httpVersion}`;
}

export function requestIdOf(headers: IncomingHttpHeaders): string {
  const id = headers['x-request-id'];
  return typeof id === 'string' && id.length > 0 && id.length <= 256 ? id : newRequestId();
}

// A new x-request-id is a random (version 4) UUID, as Envoy's. Built from a pool of random bytes
// into one buffer and read out as one string: crypto.randomUUID() builds it from 20 concatenations,
// ~0.5 KB of garbage on every request without an id.
const ID_POOL = Buffer.allocUnsafe(16 * 256);
let idPoolOffset = ID_POOL.length;
const ID_TEXT = Buffer.from('00000000-0000-4000-8000-000000000000', 'latin1');
/** Where each of the 16 bytes' two hex digits go in the text. */
const ID_DIGITS = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

export function newRequestId(): string {
  if (idPoolOffset === ID_POOL.length) {
    randomFillSync(ID_POOL);
    idPoolOffset = 0;
  }
  const at = idPoolOffset;
  idPoolOffset += 16;
  for (let i = 0; i < 16; i++) {
    let b = ID_POOL[at + i]!;
    if (i === 6) b = (b & 0x0f) | 0x40; // version 4
    else if (i === 8) b = (b & 0x3f) | 0x80; // RFC 4122 variant
    const p = ID_DIGITS[i]!;
    ID_TEXT[p] = HEX_DIGITS[b >> 4]!;
    ID_TEXT[p + 1] = HEX_DIGITS[b & 15]!;
  }
  return ID_TEXT.toString('latin1');
}

/**
 * The headers sent upstream. `attempt` goes into x-envoy-attempt-count (Istio sets
 * include_request_attempt_count on every virtual host).
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, info: ForwardInfo): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const extra = connectionTokens(headers.connection);
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || HOP_BY_HOP.has(name) || extra?.has(name) || name.charCodeAt(0) === 58 /* : */) continue;
    // External requests may not set Envoy's internal headers (Envoy strips them at the edge), nor
    // claim a client certificate (x-forwarded-client-cert: Istio's gateway default SANITIZE_SET, set
    // below from a verified client certificate).
    if (!info.outbound && name.charCodeAt(0) === 120 /* x */ && (name.startsWith('x-envoy-') || name === 'x-forwarded-client-cert')) continue;
    out[name] = v;
  }
  // HTTP/2 clients send :authority, what the request was routed by; HTTP/1.1 upstreams need it as
  // Host, whatever `host` header the client added too (RFC 9113 8.3.1: :authority wins).
  const authority = headers[':authority'];
  if (typeof authority === 'string') out['host'] = authority;
  out['x-request-id'] = info.requestId;
  if (info.outbound) {
    out['x-forwarded-proto'] ??= info.scheme;
    // A sidecar's inbound mesh mTLS: the caller's certificate appended to what came (Istio's
    // inbound APPEND_FORWARD). Without a verified client certificate (plaintext, the outbound side)
    // the header is dropped, as Envoy does: else any plaintext caller could claim any identity.
    const had = out['x-forwarded-client-cert'];
    if (!info.clientCert) delete out['x-forwarded-client-cert'];
    else out['x-forwarded-client-cert'] = had ? `${Array.isArray(had) ? had.join(',') : had},${info.clientCert}` : info.clientCert;
  } else {
    const xff = headers['x-forwarded-for'];
    out['x-forwarded-for'] = xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${info.remoteAddress}` : info.remoteAddress;
    out['x-forwarded-proto'] = info.scheme;
    out['x-envoy-external-address'] = info.remoteAddress;
    if (info.clientCert) out['x-forwarded-client-cert'] = info.clientCert;
  }
  if (headers.te !== undefined && /(^|,)\s*trailers\s*(,|$)/i.test(String(headers.te))) out['te'] = 'trailers';
  return out;
}

/**
 * Response headers for the client from undici's raw list (name, value, name, value as Buffers):
 * names in lower case, hop-by-hop and peer metadata dropped, `server` overwritten,
 * x-envoy-upstream-service-time added. Returns Node's flat
 * array form for writeHead.
 */
export function downstreamResponseHeaders(raw: readonly Buffer[] | readonly string[], serverName: string, serviceTimeMs: number): string[] {
  const out: string[] = [];
  let extra: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (lower === 'connection') {
      extra = connectionTokens(raw[i + 1]!.toString('latin1'));
      continue;
    }
    if (NOT_PASSED_ON.has(lower)) continue;
    const v = raw[i + 1]!;
    out.push(lower, typeof v === 'string' ? v : v.toString('latin1')); // Envoy writes every name lower-case
  }
  // Headers the Connection header names are hop-by-hop too (rare: filtered after the one pass).
  const kept = extra ? dropNamed(out, extra) : out;
  kept.push('server', serverName, 'x-envoy-upstream-service-time', String(serviceTimeMs));
  return kept;
}

/** A flat [name, value, ...] list without the (lower-case) `names`. */
export function dropNamed(flat: string[], names: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) if (!names.has(flat[i]!.toLowerCase())) out.push(flat[i]!, flat[i + 1]!);
  return out;
}

/**
 * A whole HTTP/1.1 local reply written straight to a socket that has left the HTTP server (a client
 * error, an upgrade refused): Node's reason phrase, the gateway's `server`, and the connection closed.
 */
export function rawLocalReply(status: number, body: string, serverName: string): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nserver: ${serverName}\r\ndate: ${httpDate()}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${body ? 'content-type: text/plain\r\n' : ''}connection: close\r\n\r\n${body}`;
}

let dateSecond = -1;
let dateValue = '';

/** The `date` header's value (RFC 9110 5.6.7, IMF-fixdate), built at most once a second. */
export function httpDate(nowMs: number = Date.now()): string {
  const second = Math.floor(nowMs / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateValue = new Date(second * 1000).toUTCString();
  }
  return dateValue;
}

/** Wire size of a header block as written (`Name: value\r\n` each). */
export function rawHeaderBytes(raw: readonly (string | Buffer)[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i++) n += raw[i]!.length;
  return n + (raw.length / 2) * 4 + 2;
}

export function headerValue(list: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < list.length; i += 2) if (list[i]!.toLowerCase() === name) return list[i + 1];
  return undefined;
}

/** Strip the IPv4-mapped prefix Node gives on dual-stack sockets. */
export function plainAddress(addr: string | undefined): string {
  if (!addr) return '';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

export function joinHostPort(addr: string | undefined, port: number | undefined): string | undefined {
  if (!addr) return undefined;
  const a = plainAddress(addr);
  return a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}
