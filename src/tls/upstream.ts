// Connection options for TLS origination to an upstream (DestinationRule tls SIMPLE/MUTUAL), shared
// by the HTTP connection pools and the TCP proxy. Built once per compiled setting (files are read
// then), so a connection costs no file I/O.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import type { buildConnector } from 'undici';
import { isIP } from '../config/names';
import type { UpstreamTls } from './secrets';

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

/**
 * An undici connector for ISTIO_MUTUAL pools: undici's own sets the ALPN list itself (h2 and
 * http/1.1 only), so this one connects with Istio's list (meshAlpn) and otherwise as undici would:
 * the connect timeout as undici's error (UND_ERR_CONNECT_TIMEOUT), no delay, TCP keep-alive, resumed sessions.
 */
export function meshConnector(connect: tls.ConnectionOptions, o: { readonly timeoutMs: number; readonly h2: boolean; readonly keepaliveMs?: number | undefined }): buildConnector.connector {
  // TLS sessions to resume, per peer (as undici's connector keeps them): a resumed handshake is
  // one round trip and no certificate checks.
  const sessions = new Map<string, Buffer>();
  return (opts, callback) => {
    const servername = connect.servername ?? (opts.servername || (isIP(opts.hostname) ? undefined : opts.hostname));
    const key = `${servername ?? ''}|${opts.hostname}|${opts.port}`;
    const session = sessions.get(key);
    const socket = tls.connect({
      ...connect,
      host: opts.hostname,
      port: Number(opts.port) || 443,
      ...(servername ? { servername } : {}),
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      ...(session ? { session } : {}),
      ALPNProtocols: meshAlpn(o.h2 ? 'h2' : 'http1'),
    });
    socket.on('session', (s: Buffer) => {
      if (sessions.size >= MAX_SESSIONS && !sessions.has(key)) sessions.delete(sessions.keys().next().value as string);
      sessions.set(key, s);
    });
    socket.setNoDelay(true);
    // TCP keep-alive as undici's default (60 s) unless the DestinationRule sets it.
    socket.setKeepAlive(true, o.keepaliveMs ?? 60_000);
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
    result = new Error(`cannot read upstream TLS material: ${(err as Error).message}`);
  }
  built.set(t, result);
  return result;
}
