// The identities a TLS connection's certificates carry: their URI SANs (with mesh mTLS, the SPIFFE
// identities Istio's metrics call principals, and %UPSTREAM_*_URI_SAN% / %DOWNSTREAM_*_URI_SAN%).

import type net from 'node:net';
import tls from 'node:tls';

/** The URI SANs of a TLS connection's two certificates (with mesh mTLS, the SPIFFE identities). */
export interface TlsIdentities {
  readonly localUriSans: readonly string[];
  readonly peerUriSans: readonly string[];
}

/** The URI entries of a certificate's subjectaltname as Node gives it (`DNS:a, URI:spiffe://..., URI:"quoted, if needed"`). */
export function uriSans(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  const out: string[] = [];
  // Entries are `, `-separated; Node quotes (JSON) a value that holds a comma or a quote.
  const re = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (let m = re.exec(subjectaltname); m; m = re.exec(subjectaltname)) {
    if (m[1] !== 'URI') continue;
    const raw = m[2]!;
    if (!raw.startsWith('"')) out.push(raw);
    else {
      try {
        out.push(JSON.parse(raw) as string);
      } catch {
        // not a value Node would write: left out
      }
    }
  }
  return out;
}

const tlsOfSocket = new WeakMap<net.Socket, TlsIdentities | null>();

/**
 * The identities of a resumed connection, known from the full handshake that made its session: node
 * gives no peer certificate on a resumed client connection (tls/upstream.ts keeps them per session).
 */
export function setTlsIdentities(socket: net.Socket, info: TlsIdentities | undefined): void {
  tlsOfSocket.set(socket, info ?? null);
}

/** A TLS socket's certificate identities (either end of a connection), read once per connection; undefined for plaintext. */
export function tlsIdentitiesOf(socket: net.Socket): TlsIdentities | undefined {
  if (!(socket instanceof tls.TLSSocket)) return undefined;
  let info = tlsOfSocket.get(socket);
  if (info === undefined) {
    const local = socket.getCertificate();
    const peer = socket.getPeerCertificate();
    const localSans = local && 'subjectaltname' in local ? uriSans(local.subjectaltname) : [];
    const peerSans = peer && 'subjectaltname' in peer ? uriSans(peer.subjectaltname) : [];
    info = localSans.length + peerSans.length > 0 ? { localUriSans: localSans, peerUriSans: peerSans } : null;
    tlsOfSocket.set(socket, info);
  }
  return info ?? undefined;
}
