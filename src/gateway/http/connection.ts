// The connection under a request. node:http2 hands out proxies for a session's socket
// (`req.socket`, `session.socket`), never the socket itself, while what we remember about a
// connection (its original destination, its TLS identities) is keyed by the socket the listener
// accepted. The HTTP/2 server creates a session synchronously while its 'connection' event runs, so
// serving a socket through serveH2Socket ties the session to it.

import type http2 from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { originalDstOf } from '../../sidecar/capture';
import type { OriginalDestination } from '../../sidecar/original-dst';
import { clientCertDetails } from '../../tls/client-cert';
import { tlsIdentitiesOf, type TlsIdentities } from '../../tls/identities';
import { endsOf } from '../addresses';
import { joinHostPort } from './headers';

const socketOfSession = new WeakMap<object, Socket>();
let arriving: Socket | undefined;

/** Hand a socket to an HTTP/2 server, remembering which session it becomes. */
export function serveH2Socket(server: http2.Http2Server, socket: Socket): void {
  arriving = socket;
  try {
    server.emit('connection', socket);
  } finally {
    arriving = undefined;
  }
}

/** From the HTTP/2 server's 'session' event: the session of the socket being served. */
export function bindSession(session: http2.Http2Session): void {
  if (arriving) socketOfSession.set(session, arriving);
}

/** The socket a request came on: its own (HTTP/1), or its HTTP/2 session's. */
export function connectionOf(req: Pick<IncomingMessage, 'socket'>): Socket {
  const session = (req as { stream?: { session?: object } }).stream?.session;
  return (session && socketOfSession.get(session)) ?? req.socket;
}

/** What a request's connection says about the request (the proxy's and the upgrade path's alike). */
export interface Downstream {
  /** Where a sidecar's captured connection was going. */
  readonly dst: OriginalDestination | undefined;
  /** x-forwarded-client-cert, when this proxy terminated TLS and the client's certificate verified. */
  readonly clientCert: string | undefined;
  /** The certificates' identities, when this proxy terminated TLS (access log, metrics principals). */
  readonly identities: TlsIdentities | undefined;
  /** %DOWNSTREAM_LOCAL_ADDRESS%: where a captured connection was going (Envoy's original dst), else the socket's own end. */
  readonly localAddress: string | undefined;
  /** %DOWNSTREAM_REMOTE_ADDRESS%: the client's end, `host:port`. */
  readonly remoteAddress: string | undefined;
  /** The client's address alone (X-Forwarded-For, source-IP hashing); '' when unknown. */
  readonly remoteIp: string;
}

export function downstreamOf(req: Pick<IncomingMessage, 'socket'>): Downstream {
  const conn = connectionOf(req);
  const dst = originalDstOf(conn);
  const secure = conn instanceof tls.TLSSocket;
  const ends = endsOf(conn); // kept since the connection was accepted (addresses.ts)
  return {
    dst,
    clientCert: secure ? clientCertDetails(conn) : undefined,
    identities: secure ? tlsIdentitiesOf(conn) : undefined,
    localAddress: dst?.address ? joinHostPort(dst.address, dst.port) : ends.local,
    remoteAddress: ends.remote,
    remoteIp: ends.remoteIp,
  };
}
