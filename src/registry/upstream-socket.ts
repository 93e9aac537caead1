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
import net from 'node:net';
import { joinHostPort } from '../gateway/http/headers';
import { COPIED_READS, ownedReads } from '../gateway/tcp/read-buffers';
import { asError } from '../errors';
import { tlsIdentitiesOf, type TlsIdentities } from '../tls/identities';

/** What a claim fills in: the access-log record's fields. */
export interface SocketClaim {
  upstreamLocalAddress?: string;
  upstreamIdentities?: TlsIdentities;
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

/**
 * A plain TCP connection to an upstream, as our HTTP/1.1 and h2c pools open them: no delay, TCP
 * keep-alive when asked, and reads through `onread` (ownedReads: every chunk is the receiver's own,
 * no Readable stream in between). A throw from `onChunk` destroys the socket with it.
 */
export function plainUpstreamSocket(to: { readonly host: string; readonly port: number; readonly localAddress?: string | undefined; readonly keepaliveMs?: number | undefined }, onChunk: (chunk: Buffer) => void): net.Socket {
  const socket: net.Socket = net.connect({
    host: to.host, port: to.port, noDelay: true,
    onread: ownedReads(COPIED_READS, (chunk) => {
      onChunk(chunk);
      return true;
    }, (err) => socket.destroy(asError(err))),
    ...(to.localAddress ? { localAddress: to.localAddress } : {}),
    ...(to.keepaliveMs !== undefined ? { keepAlive: true, keepAliveInitialDelay: to.keepaliveMs } : {}),
  });
  return socket;
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
  const info = tlsIdentitiesOf(socket);
  if (info) claim.upstreamIdentities = info;
});
