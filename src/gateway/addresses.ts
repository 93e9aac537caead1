// A connection's two ends, asked of the kernel when the connection is accepted and kept for its life.
// Asked later they can be gone: once a client has reset its connection getpeername fails (and node
// answers nothing for our own end once the socket is closed), so the access-log line of exactly that
// connection (a client that sent garbage, or half a ClientHello, and reset) showed `-`, and a request
// read before the reset went upstream without the client in X-Forwarded-For. Envoy has both from
// accept() itself.

import type { Socket } from 'node:net';
import { joinHostPort, plainAddress } from './http/headers';

/** A connection's ends as the access log and the request headers use them. */
export interface Ends {
  /** Our end, `host:port` (IPv6 in brackets): %DOWNSTREAM_LOCAL_ADDRESS%. */
  readonly local: string | undefined;
  /** The client's end, `host:port`: %DOWNSTREAM_REMOTE_ADDRESS%. */
  readonly remote: string | undefined;
  /** The client's address alone (X-Forwarded-For, source-IP hashing); '' when unknown. */
  readonly remoteIp: string;
}

const kept = new WeakMap<object, Ends>();

function ask(socket: Socket): Ends {
  return {
    local: joinHostPort(socket.localAddress, socket.localPort),
    remote: joinHostPort(socket.remoteAddress, socket.remotePort),
    remoteIp: plainAddress(socket.remoteAddress),
  };
}

/** Ask for a just-accepted connection's ends now, and keep them. */
export function keepEnds(socket: Socket): void {
  kept.set(socket, ask(socket));
}

/** A TLS socket made on top of `raw` has `raw`'s ends (asked again, they may be gone). */
export function inheritEnds(secure: Socket, raw: Socket): void {
  const ends = kept.get(raw);
  if (ends) kept.set(secure, ends);
}

/** A connection's ends: those kept when it was accepted, else asked now. */
export function endsOf(socket: Socket): Ends {
  return kept.get(socket) ?? ask(socket);
}
