// Connection options for TLS origination to an upstream (DestinationRule tls SIMPLE/MUTUAL), shared
// by the HTTP connection pools and the TCP proxy. Built once per compiled setting (files are read
// then), so a connection costs no file I/O.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import type { buildConnector } from 'undici';
import { isIP } from '../config/names';
import type { UpstreamTls } from './secrets';
import { setTlsIdentities, tlsIdentitiesOf, type TlsIdentities } from './identities';
import { asError } from '../errors';

export interface UpstreamTlsOptions {
  /** Distinguishes pools that differ only in TLS settings. */
  readonly key: string;
  readonly connect: tls.ConnectionOptions;
  /** ISTIO_MUTUAL: offer Istio's ALPN too (meshAlpn), as Istio's own clients do. */
  readonly mesh?: boolean;
}

/**
 * What a client offers by ALPN on ISTIO_MUTUAL: HTTP/2 (when the cluster speaks it) and HTTP/1.1,
 * and Istio's own protocols, which an Istio sidecar's inbound listener (PERMISSIVE) uses to tell
 * mesh mTLS from the application's own TLS: `istio-h2`/`istio-http/1.1` for HTTP, `istio` for TCP.
 * The server still chooses h2 or http/1.1 from its list (Envoy's, and meshgate's inbound).
 */
export function meshAlpn(protocol: 'h2' | 'http1' | 'tcp'): string[] {
  if (protocol === 'tcp') return ['istio'];
  return protocol === 'h2' ? ['h2', 'http/1.1', 'istio-h2', 'istio-http/1.1'] : ['http/1.1', 'istio-http/1.1'];
}

/** TLS sessions kept per connector (one per pool): the peers it has recently connected to. */
const MAX_SESSIONS = 100;

/** A session to resume, and the identities its full handshake saw (a resumed one shows no peer certificate). */
export interface MeshSession {
  session?: Buffer | undefined;
  identities?: TlsIdentities | undefined;
  /** The peer refused to resume one: it gets full handshakes from now on. */
  noResume?: boolean;
}

/** Where a mesh TLS connection goes, and what it offers by ALPN. */
export interface MeshTarget {
  readonly host: string;
  readonly port: number;
  /** SNI asked for by the pool (undici's); the DestinationRule's `sni` wins. */
  readonly servername?: string | undefined;
  readonly localAddress?: string | undefined;
  readonly alpn: readonly string[];
  readonly keepaliveMs?: number | undefined;
}

/**
 * A TLS connection on ISTIO_MUTUAL, made at once (writes before the handshake wait in node): Istio's
 * ALPN list, no delay, TCP keep-alive (undici's default of 60 s unless the DestinationRule sets
 * one), and a resumed session when `sessions` holds one for the peer (one round trip and no
 * certificate checks). Used by undici's pools (meshConnector) and our HTTP/2 client.
 */
export function meshTlsSocket(connect: tls.ConnectionOptions, sessions: Map<string, MeshSession>, to: MeshTarget): tls.TLSSocket {
  const servername = connect.servername ?? (to.servername || (isIP(to.host) ? undefined : to.host));
  const key = `${servername ?? ''}|${to.host}|${to.port}`;
  const kept = sessions.get(key);
  const session = kept?.session;
  const socket = tls.connect({
    ...connect,
    host: to.host,
    port: to.port,
    ...(servername ? { servername } : {}),
    ...(to.localAddress ? { localAddress: to.localAddress } : {}),
    ...(session ? { session } : {}),
    ALPNProtocols: [...to.alpn],
  });
  let identities: TlsIdentities | undefined;
  let secured = false;
  socket.once('secureConnect', () => {
    secured = true;
    if (socket.isSessionReused()) {
      identities = kept?.identities;
      setTlsIdentities(socket, identities);
    } else identities = tlsIdentitiesOf(socket);
  });
  socket.on('session', (s: Buffer) => {
    if (sessions.get(key)?.noResume) return;
    if (sessions.size >= MAX_SESSIONS && !sessions.has(key)) sessions.delete(sessions.keys().next().value as string);
    sessions.set(key, { session: s, identities: identities ?? tlsIdentitiesOf(socket) });
  });
  // A handshake that offered a session and failed: the peer may refuse resumption altogether (OpenSSL
  // does, asking for client certificates without a session id context); offering it again would fail
  // every new connection. Full handshakes with this peer from now on.
  socket.once('error', () => {
    if (!secured && session) sessions.set(key, { noResume: true });
  });
  socket.setNoDelay(true);
  socket.setKeepAlive(true, to.keepaliveMs ?? 60_000);
  return socket;
}

/**
 * An undici connector for ISTIO_MUTUAL pools: undici's own sets the ALPN list itself (h2 and
 * http/1.1 only), so this one connects with Istio's list (meshAlpn) and otherwise as undici would:
 * the connect timeout as undici's error (UND_ERR_CONNECT_TIMEOUT), no delay, TCP keep-alive, resumed sessions.
 */
export function meshConnector(connect: tls.ConnectionOptions, o: { readonly timeoutMs: number; readonly h2: boolean; readonly keepaliveMs?: number | undefined }): buildConnector.connector {
  const sessions = new Map<string, MeshSession>();
  return (opts, callback) => {
    const socket = meshTlsSocket(connect, sessions, {
      host: opts.hostname, port: Number(opts.port) || 443, servername: opts.servername, localAddress: opts.localAddress ?? undefined,
      alpn: meshAlpn(o.h2 ? 'h2' : 'http1'), keepaliveMs: o.keepaliveMs,
    });
    let settled = false;
    const settle = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('secureConnect', onSecure);
      socket.off('error', onError);
      if (err) {
        socket.destroy();
        callback(err, null);
      } else callback(null, socket);
    };
    const onSecure = () => settle(null);
    const onError = (err: Error) => settle(err);
    const timer = setTimeout(() => settle(Object.assign(new Error('Connect Timeout Error'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), o.timeoutMs);
    socket.once('secureConnect', onSecure);
    socket.once('error', onError);
  };
}

const built = new WeakMap<UpstreamTls, UpstreamTlsOptions | Error>();

function pem(kind: 'secret' | 'files', value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return kind === 'secret' ? value : fs.readFileSync(value, 'utf8');
}

export interface San {
  readonly type: string;
  readonly value: string;
}

/** The SANs a certificate carries, with their types (`DNS`, `URI`, `IP Address`, `email`). */
function sansOf(cert: tls.PeerCertificate): San[] {
  const sans: San[] = [];
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const entry = part.trim();
    if (!entry) continue;
    const m = /^(DNS|URI|IP Address|email|othername):(.*)$/.exec(entry);
    sans.push(m ? { type: m[1]!, value: m[2]! } : { type: '', value: entry });
  }
  return sans;
}

/**
 * Whether DNS SAN `san` names host `name`, as Envoy's SAN matcher checks DNS SANs (RFC 6125): case
 * aside, equal, or `san` is `*.REST` (the wildcard the whole left-most label) and `name` is one
 * non-empty label followed by `.REST`. A partial-label wildcard (`a*.example.com`) only matches itself.
 */
export function dnsSanMatches(san: string, name: string): boolean {
  const s = san.toLowerCase();
  const n = name.toLowerCase();
  if (s === n) return true;
  if (!s.startsWith('*.')) return false;
  const rest = s.slice(1); // ".example.com"
  if (rest.length < 2 || rest.includes('*')) return false;
  if (!n.endsWith(rest)) return false;
  const label = n.slice(0, n.length - rest.length);
  return label.length > 0 && !label.includes('.') && !label.includes('*');
}

/** Whether one of the certificate's SANs satisfies `wanted`: DNS SANs by the wildcard rule, others exactly. */
export function sanMatches(sans: readonly San[], wanted: string): boolean {
  return sans.some((s) => (s.type === 'DNS' ? dnsSanMatches(s.value, wanted) : s.value === wanted));
}

/** tls.connect options for an upstream of `host`; an Error when the material cannot be read. */
export function upstreamTlsOptions(t: UpstreamTls, host: string): UpstreamTlsOptions | Error {
  const cached = built.get(t);
  if (cached) return cached;
  let result: UpstreamTlsOptions | Error;
  try {
    const m = t.material;
    const servername = t.sni ?? (isIP(host) ? undefined : host);
    const ca = pem(m.kind, m.ca);
    const cert = pem(m.kind, m.cert);
    const key = pem(m.kind, m.key);
    const connect: tls.ConnectionOptions = {
      ...(servername ? { servername } : {}),
      ...(ca ? { ca } : {}),
      ...(t.mode !== 'SIMPLE' && cert && key ? { cert, key } : {}),
      rejectUnauthorized: !t.insecureSkipVerify,
      checkServerIdentity: (name, peer) => {
        if (t.insecureSkipVerify) return undefined;
        if (t.subjectAltNames.length > 0) {
          const sans = sansOf(peer);
          return t.subjectAltNames.some((w) => sanMatches(sans, w)) ? undefined
            : new Error(`upstream certificate SANs ${sans.map((s) => s.value).join(', ')} match none of ${t.subjectAltNames.join(', ')}`);
        }
        if (t.mode === 'ISTIO_MUTUAL') {
          // A mesh peer is named by its SPIFFE identity, not by the host it serves.
          return sansOf(peer).some((s) => s.value.startsWith('spiffe://')) ? undefined
            : new Error('the mesh peer presented no spiffe:// identity');
        }
        return tls.checkServerIdentity(servername ?? name, peer);
      },
    };
    const poolKey = createHash('sha256').update(JSON.stringify([t, ca, cert])).digest('hex').slice(0, 16);
    result = { key: poolKey, connect, ...(t.mode === 'ISTIO_MUTUAL' ? { mesh: true } : {}) };
  } catch (err) {
    result = new Error(`cannot read upstream TLS material: ${asError(err).message}`);
  }
  built.set(t, result);
  return result;
}
