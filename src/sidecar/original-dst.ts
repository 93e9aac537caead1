// Where a captured connection was going: SO_ORIGINAL_DST on a socket that iptables REDIRECT sent to
// the capture listener. The one module that touches the native addon (native/origdst, built by
// `npm install`); without it, every call says what is missing instead of failing obscurely.

import path from 'node:path';
import type { Socket } from 'node:net';
import { asError } from '../errors';

export interface OriginalDestination {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

interface Addon {
  getOriginalDst(fd: number, ipv6: boolean): OriginalDestination;
}

let addon: Addon | Error | undefined;

function load(): Addon | Error {
  if (addon) return addon;
  const file = path.resolve(__dirname, '../../../native/origdst/build/Release/origdst.node');
  try {
    addon = require(file) as Addon;
  } catch (err) {
    addon = new Error(`the SO_ORIGINAL_DST addon is not built (${file}: ${asError(err).message.split('\n')[0]}); `
      + 'run `npm install` on Linux with python3, make and a C compiler, or use the per-port capture fallback');
  }
  return addon;
}

/** Is transparent capture possible in this build? */
export function captureAvailable(): boolean {
  return !(load() instanceof Error);
}

/** The connection's original destination, or an Error (no addon; not a redirected connection: ENOENT). */
export function originalDestination(socket: Socket): OriginalDestination | Error {
  const a = load();
  if (a instanceof Error) return a;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return new Error('the socket has no file descriptor');
  // The level follows the peer's family: IPv4 and v4-mapped peers are SOL_IP, IPv6 SOL_IPV6.
  const remote = socket.remoteAddress ?? '';
  const ipv6 = remote.includes(':') && !remote.startsWith('::ffff:');
  try {
    return a.getOriginalDst(fd, ipv6);
  } catch (err) {
    return err as Error;
  }
}

/**
 * The loop guard: a connection whose "original destination" is the capture listener itself was not
 * redirected (conntrack answers with the listener's own address). Proxying it would connect the
 * proxy to itself until it runs out of descriptors.
 */
export function isOwnListener(dst: OriginalDestination, socket: Socket, listenPorts: ReadonlySet<number>): boolean {
  if (!listenPorts.has(dst.port)) return false;
  const local = (socket.localAddress ?? '').replace(/^::ffff:/, '');
  return dst.address === local || dst.address === '127.0.0.1' || dst.address === '::1' || dst.address === '0.0.0.0' || dst.address === '::';
}
