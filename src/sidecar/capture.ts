// Per-connection state of the sidecar's capture listener: the original destination of each captured
// socket, for the HTTP and TCP paths that serve it (allow_any sends traffic there).

import type { Socket } from 'node:net';
import type { OriginalDestination } from './original-dst';

const destinations = new WeakMap<object, OriginalDestination>();

export function rememberOriginalDst(socket: Socket, dst: OriginalDestination): void {
  destinations.set(socket, dst);
}

export function originalDstOf(socket: object | undefined): OriginalDestination | undefined {
  return socket ? destinations.get(socket) : undefined;
}

/** Does this start like an HTTP/1.x request line (`GET /`, `POST /`...)? */
export function looksLikeHttp(first: Buffer): boolean {
  return /^[A-Z]{3,10} \S/.test(first.subarray(0, 16).toString('latin1'));
}
