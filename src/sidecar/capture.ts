// Per-connection state of the sidecar's capture listener: the original destination of each captured
// socket, for the HTTP and TCP paths that serve it (allow_any sends traffic there).

import net, { type Socket } from 'node:net';
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

/** Clusters whose endpoint is each connection's original destination (a sidecar's passthrough clusters). */
export function isOriginalDstCluster(name: string): boolean {
  return name === 'PassthroughCluster' || name === 'InboundPassthroughCluster' || name.startsWith('inbound|');
}

/** Inbound clusters reach the application from 127.0.0.6 (::6 over IPv6), as Istio's inbound sidecar does. */
export function inboundSourceAddress(cluster: string, destination: string): string | undefined {
  if (cluster !== 'InboundPassthroughCluster' && !cluster.startsWith('inbound|')) return undefined;
  return net.isIPv6(destination) ? '::6' : '127.0.0.6';
}
