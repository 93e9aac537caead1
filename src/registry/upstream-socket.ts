// Which upstream connection a request went out on, for %UPSTREAM_LOCAL_ADDRESS% and, over TLS, the
// certificates' identities (%UPSTREAM_LOCAL_URI_SAN%, %UPSTREAM_PEER_URI_SAN%; Istio's principals).
//
// undici pools its connections and does not tell a dispatch handler which socket serves its
// request. It does, in one synchronous step for each request (its HTTP/1.1 client, and its HTTP/2
// client over TLS), call the handler's onConnect and then publish 'undici:client:sendHeaders' with
// the socket. So a handler claims in onConnect ("the next socket announced is mine") and the
// channel's subscriber hands the claim its address. Our own h2c pool takes the claim right after
// onConnect and fills it in when the response comes. A claim nobody announces to is overwritten by
// the next one.
import diagnosticsChannel from 'node:diagnostics_channel';
import type net from 'node:net';
import tls from 'node:tls';
import { joinHostPort } from '../gateway/http/headers';

/** The URI SANs of a TLS connection's two certificates (with mesh mTLS, the SPIFFE identities). */
export interface UpstreamTls {
  readonly localUriSans: readonly string[];
  readonly peerUriSans: readonly string[];
}

/** What a claim fills in: the access-log record's fields. */
export interface SocketClaim {
  upstreamLocalAddress?: string;
  upstreamTls?: UpstreamTls;
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

const tlsOfSocket = new WeakMap<net.Socket, UpstreamTls | null>();

/** A TLS socket's certificate identities, read once per connection; undefined for plaintext. */
export function upstreamTlsOf(socket: net.Socket): UpstreamTls | undefined {
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

let pending: SocketClaim | undefined;

/** From a dispatch handler's onConnect: the socket announced next carries this request. */
export function claimUpstreamSocket(claim: SocketClaim): void {
  pending = claim;
}

/** The claim made by the onConnect that has just run, if any; it is taken, not shared. */
export function takeUpstreamClaim(): SocketClaim | undefined {
  const claim = pending;
  pending = undefined;
  return claim;
}

/** `address:port` of a socket's own end (Node caches the getsockname answer on the socket). */
export function localAddressOf(socket: net.Socket): string | undefined {
  return joinHostPort(socket.localAddress, socket.localPort);
}

// Kept in a module variable: the channel lives as long as this module does.
const sendHeaders = diagnosticsChannel.channel('undici:client:sendHeaders');
sendHeaders.subscribe((message) => {
  const claim = takeUpstreamClaim();
  if (!claim) return;
  const socket = (message as { socket: net.Socket }).socket;
  claim.upstreamLocalAddress = localAddressOf(socket);
  const info = upstreamTlsOf(socket);
  if (info) claim.upstreamTls = info;
});
